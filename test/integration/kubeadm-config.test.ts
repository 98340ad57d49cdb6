import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parse as parseYaml } from 'yaml';
import { acinstallOn, inHost, labDown, labUp, ssh, type Lab, type LabHost } from '../hosts/lab.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { kubeadmBinary } from '../hosts/standins/kubeadm-standin.js';
import { ROOT, tempDir, withRegistry } from '../helpers/env.js';
import { bundleSpec, localBinary } from '../helpers/fixtures.js';
import { helmBinary } from '../helpers/helm.js';
import { pushKubeadmImages } from '../helpers/kubeadm-images.js';
import { acinstallProcess } from '../helpers/kubeadm-runs.js';

const run = promisify(execFile);

/**
 * kubeadm's configuration tied to the bundle (issue 9, item 3), on test hosts with the kubeadm
 * stand-in of the bundled release (its image rules are kubeadm v1.22.15's). An ACK Distro-shaped
 * bundle (etcd 3.5.4 and coredns v1.8.4.5-… where kubeadm would pick 3.5.0-0 and v1.8.4, a kube-core
 * chart that installs CoreDNS and kube-proxy itself) on a master and a worker that each have a second
 * interface holding the default route; on a third host, meanwhile, a bundle kubeadm's image check refuses.
 */
let lab: Lab;
let work: Awaited<ReturnType<typeof tempDir>>;
let upstream: string;
let ackBundle: string;
let lackingBundle: string;
let ackRun: Promise<{ code: number | null; out: string }>;
const ETCD = '3.5.4';
const COREDNS = 'v1.8.4.5-2ce07fd2-aliyun';
const VERSION = 'v1.22.15-aliyun.1';
const IGNORE = ['--ignore-preflight', 'disk,ip_forward,br_netfilter'];

beforeAll(async () => {
  work = await tempDir();
  const source = await withRegistry();
  upstream = source.registry.host;
  const kubeadm = await kubeadmBinary(join(work.dir, 'bin'), 'v1.22.15');
  const helm = localBinary('helm', 'v4', helmBinary(), '/usr/bin/helm');
  // acpack's lint refuses both bundles (the lacking one for its images, as acinstall does; neither
  // carries a kubelet): what is tested is acinstall's side, so they are built with allowIncomplete.
  const build = (name: string, spec: Record<string, unknown>) => bundleSpec(join(work.dir, name), spec, join(work.dir, `${name}.tar.zst`), 'amd64', { allowIncomplete: true });

  // No kube-apiserver, etcd or CoreDNS (only pause): the check names each image kubeadm wants, at
  // the bundled kubeadm's own version (never a placeholder).
  const [pause] = await pushKubeadmImages(upstream, { arches: ['amd64'], leaveOut: ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kube-proxy', 'etcd', 'coredns'] });
  lackingBundle = await build('lacking', { images: [pause], binaries: [kubeadm] });
  // ACK Distro's shape: every image under ecp_builder, with its own etcd and CoreDNS tags, and a
  // kube-core chart rendering CoreDNS's Deployment and Service and kube-proxy's DaemonSet, as
  // ACK Distro's build/v1.22.15-aliyun.1/chart/kube-core does (hybridnet: the CNI the charts step wants).
  const ack = await pushKubeadmImages(upstream, { version: VERSION, etcd: ETCD, coredns: COREDNS, arches: ['amd64'] });
  const charts = join(work.dir, 'charts');
  await mkdir(join(charts, 'hybridnet/templates'), { recursive: true });
  await writeFile(join(charts, 'hybridnet/Chart.yaml'), 'apiVersion: v2\nname: hybridnet\nversion: 0.6.8\n');
  await writeFile(join(charts, 'hybridnet/templates/cm.yaml'), 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: hybridnet\ndata: {}\n');
  await mkdir(join(charts, 'kube-core/templates'), { recursive: true });
  await writeFile(join(charts, 'kube-core/Chart.yaml'), `apiVersion: v2\nname: kube-core\nversion: 0.1.0\nappVersion: ${VERSION}\n`);
  await writeFile(
    join(charts, 'kube-core/templates/coredns.yaml'),
    [
      'apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: coredns\n  namespace: kube-system\n',
      `apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  labels:\n    k8s-app: kube-dns\n  name: coredns\n  namespace: kube-system\nspec:\n  template:\n    spec:\n      containers:\n      - name: coredns\n        image: {{ .Values.global.RegistryURL }}/ecp_builder/coredns:${COREDNS}\n`,
      'apiVersion: v1\nkind: Service\nmetadata:\n  name: kube-dns\n  namespace: kube-system\n',
    ].join('---\n'),
  );
  await writeFile(join(charts, 'kube-core/templates/kube-proxy.yaml'), 'apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: kube-proxy\n  namespace: kube-system\n');
  await writeFile(join(charts, 'kube-core/values.yaml'), 'global:\n  RegistryURL: sea.hub:5000\n');
  ackBundle = await build('ack', { images: ack, binaries: [kubeadm, helm], charts: [{ path: join(charts, 'kube-core') }, { path: join(charts, 'hybridnet') }] });
  await source.cleanup();
  lab = await labUp(3, { dir: join(work.dir, 'lab') });
  const [master, worker] = lab.hosts;
  await secondInterface(master, master.ip.replace(/\.\d+$/, '.201'));
  await secondInterface(worker, worker.ip.replace(/\.\d+$/, '.202'));
  // Its own process (no time limit but the test's): two hosts' install on a machine that may be busy.
  ackRun = acinstallProcess(master, ['from', ackBundle, '-m', master.ip, '-n', worker.ip, '-i', lab.key, '--store', join(work.dir, 'site'), ...IGNORE]).done;
  // The third host's tests start once this install's registry answers: two registries starting at
  // once on two busy cores can outlast the time a registry is given to start.
  for (let i = 0; i < 600; i++) {
    if (await inHost(master, 'sh', ['-c', "ss -ltn | grep -q ':5000 '"]).then(() => true, () => false)) break;
    await sleep(100);
  }
}, 180_000);

afterAll(async () => {
  if (lab) await labDown(lab); // ends the two-host install too, should it still run
  await ackRun?.catch(() => undefined);
  await work?.cleanup();
});

const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const calls = async (h: LabHost) => (await ssh(lab, h, h, 'cat /var/log/acpack-standins/kubeadm.calls 2>/dev/null || true')).stdout.trim().split('\n').filter(Boolean);

/**
 * A second interface holding the default route, as on hosts with a management and a cluster
 * network: left to itself, kubeadm advertises the default route's address. Its peer stays down and
 * in the same namespace: nothing sent there goes anywhere.
 */
async function secondInterface(h: LabHost, address: string): Promise<void> {
  const ip = (...args: string[]) => run('ip', ['-n', h.netns, ...args]);
  await ip('link', 'add', 'acp-extra', 'type', 'veth', 'peer', 'name', 'acp-peer');
  await ip('addr', 'add', `${address}/32`, 'dev', 'acp-extra');
  await ip('link', 'set', 'acp-extra', 'up');
  await ip('route', 'add', 'default', 'dev', 'acp-extra');
}

describe('kubeadm configured from the bundle', () => {
  let refused: { code: number; stdout: string; stderr: string };

  it('refuses a bundle that lacks an image kubeadm needs, naming each, before any kubeadm step on any node', async () => {
    const node = lab.hosts[2];
    refused = await acinstallOn(node, ['from', lackingBundle, '-m', node.ip, '-i', lab.key, '--store', join(work.dir, 'site-alone'), ...IGNORE], ROOT);
    expect(refused.code).toBe(1);
    // No image repository in the configuration (no kube-apiserver in the bundle): kubeadm's own names.
    expect(refused.stderr).toContain(
      [
        'kubeadm needs 7 images to install Kubernetes v1.22.15 that test v1 does not carry:',
        ...['kube-apiserver:v1.22.15', 'kube-controller-manager:v1.22.15', 'kube-scheduler:v1.22.15', 'kube-proxy:v1.22.15', 'pause:3.5', 'etcd:3.5.0-0', 'coredns/coredns:v1.8.4'].map((i) => `  k8s.gcr.io/${i}`),
        '',
      ].join('\n'),
    );
    expect(refused.stderr).toContain('(no kubeadm step was started on any node)');
    // The bundle's own kubeadm was asked, and nothing else ran.
    expect(await calls(node)).toEqual(['config images list --config /etc/kubernetes/acpack-kubeadm.yaml']);
  }, 240_000);

  it('names the Kubernetes version of the bundled kubeadm when the bundle has no kube-apiserver, never "kubeadm default"', () => {
    expect(`${refused.stdout}${refused.stderr}`).not.toContain('kubeadm default');
    expect(refused.stderr).toContain('to install Kubernetes v1.22.15 that');
  });

  describe('an ACK Distro-shaped bundle on hosts with two interfaces', () => {
    let out: { code: number | null; out: string };
    beforeAll(async () => {
      out = await ackRun;
    }, 300_000);

    it('runs kubeadm with the bundle\'s etcd and CoreDNS tags, after asking it which images they make', async () => {
      const [master] = lab.hosts;
      // The install stops at the charts: no API server can run here (see charts.test.ts).
      expect(out.out).toMatch(new RegExp(`1 of 2 nodes failed:\\n  ${esc(master.ip)}: chart hybridnet: helm install failed`));
      const [cfgText, etcd, api] = (await ssh(lab, master, master, 'cat /etc/kubernetes/acpack-kubeadm.yaml; echo ===; cat /etc/kubernetes/manifests/etcd.yaml; echo ===; cat /etc/kubernetes/manifests/kube-apiserver.yaml')).stdout.split('===\n');
      const cluster = cfgText.split('---\n').map((d) => parseYaml(d)).find((d) => d.kind === 'ClusterConfiguration');
      expect(cluster).toMatchObject({ kubernetesVersion: VERSION, imageRepository: `${upstream}/ecp_builder`, etcd: { local: { imageTag: ETCD } }, dns: { imageTag: COREDNS } });
      expect(cluster.etcd.local.imageRepository).toBeUndefined(); // the same repository: not repeated
      expect(parseYaml(etcd).spec.containers[0].image).toBe(`${upstream}/ecp_builder/etcd:${ETCD}`);
      expect(parseYaml(api).spec.containers[0].image).toBe(`${upstream}/ecp_builder/kube-apiserver:${VERSION}`);
      expect((await calls(master))[0]).toBe('config images list --config /etc/kubernetes/acpack-kubeadm.yaml');
    }, 120_000);

    it('leaves the CoreDNS and kube-proxy addons to the bundle\'s charts (kubeadm init --skip-phases)', async () => {
      const [master] = lab.hosts;
      expect(await calls(master)).toEqual(['config images list --config /etc/kubernetes/acpack-kubeadm.yaml', 'init --config /etc/kubernetes/acpack-kubeadm.yaml --skip-phases=addon/coredns,addon/kube-proxy']);
      // kubeadm applied neither addon: helm will find no CoreDNS or kube-proxy object it did not make.
      expect((await ssh(lab, master, master, 'cat /var/lib/acpack-standins/addons')).stdout).toBe('');
    });

    it('advertises the API server and registers each kubelet on the address acinstall reached the node at, not the default route\'s', async () => {
      const [master, worker] = lab.hosts;
      const [api, flags] = (await ssh(lab, master, master, 'cat /etc/kubernetes/manifests/kube-apiserver.yaml; echo ===; cat /var/lib/kubelet/kubeadm-flags.env')).stdout.split('===\n');
      expect(parseYaml(api).spec.containers[0].command).toContain(`--advertise-address=${master.ip}`);
      expect(flags).toContain(`--node-ip=${master.ip}`);
      expect((await ssh(lab, master, worker, 'cat /var/lib/kubelet/kubeadm-flags.env')).stdout).toContain(`--node-ip=${worker.ip}`);
      // The worker joined with a JoinConfiguration (kubeadm refuses --config beside the join flags):
      // its token never sat in a command line or a log, and the file is gone once joined.
      expect(await calls(worker)).toEqual(['join --config /etc/kubernetes/acpack-join.yaml']);
      await expect(ssh(lab, master, worker, 'test -e /etc/kubernetes/acpack-join.yaml')).rejects.toThrow();
      const log = await readFile(join(work.dir, 'site', 'logs', `${worker.ip}.log`), 'utf8');
      expect(log).not.toContain('0123456789abcdef');
      expect(log).toContain('bytes on standard input, not logged');
    }, 120_000);

    it('uploads no control-plane certificates when the cluster has one master', async () => {
      // init ran without --upload-certs (the calls above), and nothing uploaded them after it.
      expect((await calls(lab.hosts[0])).filter((x) => x.includes('upload-certs'))).toEqual([]);
      await expect(ssh(lab, lab.hosts[0], lab.hosts[0], 'test -e /var/lib/acpack-standins/uploaded-certificate-keys')).rejects.toThrow();
    });
  });
});
