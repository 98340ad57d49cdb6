import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createServer } from 'node:net';
import { stringify } from 'yaml';
import { KUBEADM_STANDIN, kubeadmStandin, writeKubeadmStandin } from '../hosts/standins/kubeadm-standin.js';
import { kubeadmImages, kubeadmRules, type ImageConfig } from '../../kube/index.js';
import { AcpackError } from '../../oci/errors.js';

const run = promisify(execFile);

/**
 * The kubeadm stand-in run here, outside any test host: ACPACK_STANDIN_ROOT puts every file it reads
 * or writes under a temp dir. Its image rules are kubeadm's (images.go over constants.go of the
 * release, see kubeadm-standin.ts), so these cases are what `kubeadm config images list` prints.
 */
let dir: string;
const standins: Record<string, string> = {};

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'acpack-kubeadm-'));
  for (const v of ['v1.22.15', 'v1.22.16', 'v1.22.17']) standins[v] = (await writeKubeadmStandin(join(dir, 'bin'), v)).file;
});
afterAll(() => rm(dir, { recursive: true, force: true }));

async function kubeadm(args: string[], o: { version?: string; root?: string } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const p = run(standins[o.version ?? 'v1.22.15'], args, { env: { ...process.env, ACPACK_STANDIN_ROOT: o.root ?? join(dir, 'root') } });
    p.child.stdin?.end(); // nothing typed: a question on it is answered by its end
    const r = await p;
    return { code: 0, ...r };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

let n = 0;
async function configFile(cluster: Record<string, unknown>, init: Record<string, unknown> = {}): Promise<string> {
  const file = join(dir, `c${n++}.yaml`);
  const docs = [
    { apiVersion: 'kubeadm.k8s.io/v1beta3', kind: 'InitConfiguration', ...init },
    { apiVersion: 'kubeadm.k8s.io/v1beta3', kind: 'ClusterConfiguration', ...cluster },
  ];
  await writeFile(file, docs.map((d) => stringify(d)).join('---\n'));
  return file;
}

async function imagesList(cluster: Record<string, unknown>, version?: string): Promise<string[]> {
  const r = await kubeadm(['config', 'images', 'list', '--config', await configFile(cluster)], { version });
  expect(r.code, r.stderr).toBe(0);
  return r.stdout.trim().split('\n');
}

describe("the kubeadm stand-in's image rules (kubeadm config images list)", () => {
  it('names the control plane, kube-proxy, pause, etcd and CoreDNS as kubeadm v1.22.15 does by default', async () => {
    expect(await imagesList({ kubernetesVersion: 'v1.22.15' })).toEqual([
      'k8s.gcr.io/kube-apiserver:v1.22.15',
      'k8s.gcr.io/kube-controller-manager:v1.22.15',
      'k8s.gcr.io/kube-scheduler:v1.22.15',
      'k8s.gcr.io/kube-proxy:v1.22.15',
      'k8s.gcr.io/pause:3.5',
      'k8s.gcr.io/etcd:3.5.0-0',
      'k8s.gcr.io/coredns/coredns:v1.8.4',
    ]);
  });

  it('puts every image under imageRepository, CoreDNS without the coredns/ of the default registry', async () => {
    expect(await imagesList({ kubernetesVersion: 'v1.22.15', imageRepository: 'sea.hub:5000/ecp_builder' })).toEqual([
      'sea.hub:5000/ecp_builder/kube-apiserver:v1.22.15',
      'sea.hub:5000/ecp_builder/kube-controller-manager:v1.22.15',
      'sea.hub:5000/ecp_builder/kube-scheduler:v1.22.15',
      'sea.hub:5000/ecp_builder/kube-proxy:v1.22.15',
      'sea.hub:5000/ecp_builder/pause:3.5',
      'sea.hub:5000/ecp_builder/etcd:3.5.0-0',
      'sea.hub:5000/ecp_builder/coredns:v1.8.4',
    ]);
    // The default repository written out is still the default: CoreDNS gets its coredns/ path.
    expect((await imagesList({ kubernetesVersion: 'v1.22.15', imageRepository: 'k8s.gcr.io' })).pop()).toBe('k8s.gcr.io/coredns/coredns:v1.8.4');
  });

  it('tags the control plane with kubernetesVersion (+ as _) and picks etcd by its minor, the nearest one outside the table', async () => {
    const list = await imagesList({ kubernetesVersion: 'v1.22.15-aliyun.1', imageRepository: 'r.example/k' });
    expect(list[0]).toBe('r.example/k/kube-apiserver:v1.22.15-aliyun.1');
    expect(list).toContain('r.example/k/etcd:3.5.0-0');
    expect((await imagesList({ kubernetesVersion: 'v1.22.3+k3s1' }))[0]).toBe('k8s.gcr.io/kube-apiserver:v1.22.3_k3s1');
    expect(await imagesList({ kubernetesVersion: 'v1.21.14' })).toContain('k8s.gcr.io/etcd:3.4.13-0');
    expect(await imagesList({ kubernetesVersion: 'v1.23.0' })).toContain('k8s.gcr.io/etcd:3.5.0-0');
    expect(await imagesList({ kubernetesVersion: 'v1.24.0' })).toContain('k8s.gcr.io/etcd:3.5.0-0'); // past the table: its last
    expect(await imagesList({ kubernetesVersion: '1.22.15' })).toContain('k8s.gcr.io/kube-proxy:v1.22.15');
  });

  it('refuses a Kubernetes version kubeadm v1.22 cannot deploy, and falls back to its own for a label it cannot resolve offline', async () => {
    const old = await kubeadm(['config', 'images', 'list', '--config', await configFile({ kubernetesVersion: 'v1.20.15' })]);
    expect(old.code).toBe(1);
    expect(old.stderr).toContain('this version of kubeadm only supports deploying clusters with the control plane version >= 1.21.0. Current version: v1.20.15');
    const label = await kubeadm(['config', 'images', 'list', '--config', await configFile({})]);
    expect(label.stderr).toContain('falling back to the local client version: v1.22.15');
    expect(label.stdout.split('\n')[0]).toBe('k8s.gcr.io/kube-apiserver:v1.22.15');
  });

  it('uses etcd.local.imageTag and imageRepository when given', async () => {
    expect(await imagesList({ kubernetesVersion: 'v1.22.15', imageRepository: 'a.example/k', etcd: { local: { imageTag: '3.5.4' } } })).toContain('a.example/k/etcd:3.5.4');
    expect(await imagesList({ kubernetesVersion: 'v1.22.15', imageRepository: 'a.example/k', etcd: { local: { imageRepository: 'b.example/etcd-io', imageTag: '3.5.4' } } })).toContain('b.example/etcd-io/etcd:3.5.4');
  });

  it('uses dns.imageTag and imageRepository when given', async () => {
    expect((await imagesList({ kubernetesVersion: 'v1.22.15', imageRepository: 'a.example/k', dns: { imageTag: 'v1.8.4.5-2ce07fd2-aliyun' } })).pop()).toBe('a.example/k/coredns:v1.8.4.5-2ce07fd2-aliyun');
    expect((await imagesList({ kubernetesVersion: 'v1.22.15', dns: { imageRepository: 'registry.cn-zhangjiakou.aliyuncs.com/acs', imageTag: 'v1.8.4.5-2ce07fd2-aliyun' } })).pop()).toBe(
      'registry.cn-zhangjiakou.aliyuncs.com/acs/coredns:v1.8.4.5-2ce07fd2-aliyun',
    );
  });

  it('leaves etcd out with an external etcd', async () => {
    const list = await imagesList({ kubernetesVersion: 'v1.22.15', etcd: { external: { endpoints: ['https://10.0.0.9:2379'] } } });
    expect(list).toHaveLength(6);
    expect(list.some((i) => i.includes('/etcd:'))).toBe(false);
    const both = await kubeadm(['config', 'images', 'list', '--config', await configFile({ etcd: { local: {}, external: { endpoints: ['https://10.0.0.9:2379'] } } })]);
    expect(both.code).toBe(1);
  });

  it('follows the release: v1.22.16 defaults to registry.k8s.io, v1.22.17 runs etcd 3.5.6-0', async () => {
    expect(await imagesList({ kubernetesVersion: 'v1.22.16' }, 'v1.22.16')).toEqual(expect.arrayContaining(['registry.k8s.io/kube-apiserver:v1.22.16', 'registry.k8s.io/coredns/coredns:v1.8.4', 'registry.k8s.io/etcd:3.5.0-0']));
    expect(await imagesList({ kubernetesVersion: 'v1.22.17' }, 'v1.22.17')).toContain('registry.k8s.io/etcd:3.5.6-0');
    expect(() => kubeadmStandin('v1.25.0')).toThrow(/no kubeadm image rules for v1\.25\.0/);
  });

  it('the committed stand-in is the generator\'s v1.22.15', () => {
    expect(readFileSync(KUBEADM_STANDIN, 'utf8')).toBe(kubeadmStandin('v1.22.15'));
  });
});

describe('the kubeadm stand-in is strict', () => {
  it("refuses --config beside other flags, as kubeadm's ValidateMixedArguments does", async () => {
    const cfg = await configFile({ kubernetesVersion: 'v1.22.15' });
    const init = await kubeadm(['init', '--config', cfg, '--upload-certs', '--skip-phases=addon/coredns', '--kubernetes-version', 'v1.22.15', '--pod-network-cidr=10.0.0.0/16'], { root: join(dir, 'mixed') });
    expect(init.code).toBe(1);
    expect(init.stderr).toContain("can not mix '--config' with arguments [kubernetes-version pod-network-cidr]");
    const join_ = await kubeadm(['join', 'apiserver.cluster.local:6443', '--config', cfg, '--token', 'abcdef.0123456789abcdef', '--control-plane'], { root: join(dir, 'mixed') });
    expect(join_.stderr).toContain("can not mix '--config' with arguments [token control-plane]");
    expect((await kubeadm(['init', '--bogus'])).stderr).toContain('unknown flag: --bogus');
  });

  it('fails init preflight on what an earlier run left, until kubeadm reset', async () => {
    const root = join(dir, 'leftovers');
    const cfg = await configFile({ kubernetesVersion: 'v1.22.15', controlPlaneEndpoint: 'apiserver.cluster.local:6443' }, { localAPIEndpoint: { advertiseAddress: '10.0.0.1' } });
    expect((await kubeadm(['init', '--config', cfg], { root })).code).toBe(0);
    const again = await kubeadm(['init', '--config', cfg], { root });
    expect(again.code).toBe(1);
    expect(again.stderr).toContain('[ERROR FileAvailable--etc-kubernetes-manifests-kube-apiserver.yaml]: /etc/kubernetes/manifests/kube-apiserver.yaml already exists');
    expect(again.stderr).toContain('[ERROR DirAvailable--var-lib-etcd]: /var/lib/etcd is not empty');
    expect((await kubeadm(['reset'], { root })).stderr).toContain('aborted reset operation'); // it asks first
    expect((await kubeadm(['reset', '-f'], { root })).code).toBe(0);
    expect((await kubeadm(['init', '--config', cfg], { root })).code).toBe(0);
  });

  it('refuses a JoinConfiguration without CA pinning, with a CA hash that is not the cluster\'s, or a bad certificate key', async () => {
    const root = join(dir, 'join');
    await mkdir(root, { recursive: true });
    const file = join(dir, 'join.yaml');
    const tryJoin = async (bt: Record<string, unknown>, extra: Record<string, unknown> = {}) => {
      await writeFile(file, stringify({ apiVersion: 'kubeadm.k8s.io/v1beta3', kind: 'JoinConfiguration', discovery: { bootstrapToken: { apiServerEndpoint: 'localhost:6443', token: 'abcdef.0123456789abcdef', ...bt } }, ...extra }));
      return kubeadm(['join', '--config', file], { root });
    };
    expect((await tryJoin({})).stderr).toContain('using token-based discovery without caCertHashes can be unsafe');
    expect((await tryJoin({ caCertHashes: [`sha256:${'0'.repeat(64)}`] })).stderr).toContain('none of the public keys');
    expect((await tryJoin({ unsafeSkipCAVerification: true }, { controlPlane: { certificateKey: 'nothex' } })).stderr).toContain('error decoding certificate key');
    expect((await tryJoin({ unsafeSkipCAVerification: true }, { nodeRegistration: { kubeletExtraArgs: [{ name: 'node-ip', value: '10.0.0.2' }] } })).stderr).toContain('cannot unmarshal array');
  });
});

describe("acpack's own copy of kubeadm's image rules (kube/kubeadm-images.ts) answers as the stand-in does", () => {
  // acpack checks a bundle with these where it cannot run the bundled kubeadm; the stand-in is
  // generated from the same table but applies it in its own code, as kubeadm does.
  const cases: [string, ImageConfig][] = [
    ['v1.22.15', { kubernetesVersion: 'v1.22.15' }],
    ['v1.22.15', { kubernetesVersion: 'v1.22.15', imageRepository: 'sea.hub:5000/ecp_builder' }],
    ['v1.22.15', { kubernetesVersion: 'v1.22.15', imageRepository: 'k8s.gcr.io' }],
    ['v1.22.15-aliyun.1', { kubernetesVersion: 'v1.22.15-aliyun.1', imageRepository: 'r.example/k', etcd: { local: { imageTag: '3.5.4' } }, dns: { imageTag: 'v1.8.4.5-2ce07fd2-aliyun' } }],
    ['v1.22.15', { kubernetesVersion: 'v1.22.3+k3s1', etcd: { local: { imageRepository: 'b.example/etcd-io', imageTag: '3.5.4' } } }],
    ['v1.22.15', { kubernetesVersion: 'v1.21.14', dns: { imageRepository: 'registry.cn-zhangjiakou.aliyuncs.com/acs', imageTag: 'v1' } }],
    ['v1.22.15', { kubernetesVersion: 'v1.24.0' }],
    ['v1.22.15', { kubernetesVersion: '1.22.15' }],
    ['v1.22.15', {}],
    ['v1.22.15', { kubernetesVersion: 'v1.22.15', etcd: { external: { endpoints: ['https://10.0.0.9:2379'] } } }],
    ['v1.22.16', { kubernetesVersion: 'v1.22.16' }],
    ['v1.22.17', { kubernetesVersion: 'v1.22.17' }],
  ];

  it.each(cases)('kubeadm %s with %j', async (version, cluster) => {
    const rules = kubeadmRules(version)!;
    const standin = version.startsWith('v1.22.15') ? 'v1.22.15' : version;
    expect(kubeadmImages(rules, cluster)).toEqual(await imagesList(cluster as Record<string, unknown>, standin));
  });

  it('refuses what kubeadm refuses, and knows no release it was not given', async () => {
    const rules = kubeadmRules('v1.22.15')!;
    expect(() => kubeadmImages(rules, { kubernetesVersion: 'v1.20.15' })).toThrow(/only deploys a control plane >= 1\.21\.0/);
    expect((await kubeadm(['config', 'images', 'list', '--config', await configFile({ kubernetesVersion: 'v1.20.15' })])).code).toBe(1);
    expect(() => kubeadmImages(rules, { kubernetesVersion: 'one' })).toThrow(AcpackError);
    expect((await kubeadm(['config', 'images', 'list', '--config', await configFile({ kubernetesVersion: 'one' })])).code).toBe(1);
    expect(kubeadmRules('v1.25.0')).toBeUndefined();
    expect(kubeadmRules('v1.22.15-aliyun.1')?.version).toBe('v1.22.15-aliyun.1');
  });
});

describe('the kubeadm stand-in outside a test host', () => {
  // acpack bundle runs the bundled kubeadm on the build machine: the stand-in must not leave its call
  // log there (test hosts see this machine's files through their overlay) nor write anything else.
  const bare = (args: string[]) =>
    run(standins['v1.22.15'], args, { env: { ...process.env, ACPACK_STANDIN_ROOT: '' } }).then(
      (r) => ({ code: 0, ...r }),
      (e: { code: number; stdout: string; stderr: string }) => e,
    );

  it.skipIf(existsSync('/usr/local/lib/acpack-standins'))('lists images and says its version, records nothing, and refuses the rest', async () => {
    const before = existsSync('/var/log/acpack-standins');
    const listed = await bare(['config', 'images', 'list', '--config', await configFile({ kubernetesVersion: 'v1.22.15' })]);
    expect(listed.code).toBe(0);
    expect(listed.stdout).toContain('k8s.gcr.io/kube-apiserver:v1.22.15');
    expect((await bare(['version', '-o', 'short'])).stdout.trim()).toBe('v1.22.15');
    const init = await bare(['init', '--config', await configFile({ kubernetesVersion: 'v1.22.15' })]);
    expect(init.code).toBe(1);
    expect(init.stderr).toContain('only on a test host');
    expect(existsSync('/var/log/acpack-standins')).toBe(before);
  });
});

describe('the kubeadm stand-in resets as kubeadm 1.22 does', () => {
  /** A node root holding listening unix sockets at `paths`, for the length of `body`. */
  async function withSockets(paths: string[], body: (root: string) => Promise<void>): Promise<void> {
    const root = await mkdtemp(join(dir, 'root-'));
    const servers = await Promise.all(
      paths.map(async (p) => {
        await mkdir(join(root, p, '..'), { recursive: true });
        const server = createServer();
        await new Promise<void>((listening) => server.listen(join(root, p), listening));
        return server;
      }),
    );
    try {
      await body(root);
    } finally {
      for (const s of servers) s.close();
    }
  }

  it('refuses to guess between two runtimes without --cri-socket, and takes the one named', async () => {
    await withSockets(['run/containerd/containerd.sock', 'var/run/crio/crio.sock'], async (root) => {
      const guessed = await kubeadm(['reset', '-f'], { root });
      expect(guessed.code).toBe(1);
      expect(guessed.stderr).toContain('Found multiple CRI sockets, please use --cri-socket to select one: /run/containerd/containerd.sock, /var/run/crio/crio.sock');
      expect((await kubeadm(['reset', '-f', '--cri-socket', 'unix:///run/containerd/containerd.sock'], { root })).code).toBe(0);
    });
  });

  it('takes docker over the containerd it ships with, and a lone containerd as it is', async () => {
    await withSockets(['var/run/docker.sock', 'run/containerd/containerd.sock'], async (root) => expect((await kubeadm(['reset', '-f'], { root })).code).toBe(0));
    await withSockets(['run/containerd/containerd.sock'], async (root) => expect((await kubeadm(['reset', '-f'], { root })).code).toBe(0));
  });
});
