import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { bundle } from '../../packer/index.js';
import { parsePlatformList } from '../../arch/platform.js';
import { acinstallOn, killHost, labDown, labUp, reviveHost, ssh, type Lab } from '../hosts/lab.js';
import { kubeadmBinary } from '../hosts/standins/kubeadm-standin.js';
import { ROOT, silent, tempDir, withRegistry } from '../helpers/env.js';
import { writeManifest } from '../helpers/fixtures.js';
import { pushKubeadmImages } from '../helpers/kubeadm-images.js';
import { acinstallProcess, kubeadmCalls, kubeadmWaiting, slowKubeadm } from '../helpers/kubeadm-runs.js';

/**
 * A power cut on the first master during kubeadm init (issue 9, item 4): acinstall, the registry and
 * kubeadm die with it, leaving the node half done (static pods, certificates, etcd data, no success).
 * The re-run resets it and initializes again. (Cut connections and joins: kubeadm-resume.test.ts.)
 */
let lab: Lab;
let work: Awaited<ReturnType<typeof tempDir>>;
let bundlePath: string;

beforeAll(async () => {
  work = await tempDir();
  const source = await withRegistry();
  const images = await pushKubeadmImages(source.registry.host, { arches: ['amd64'] });
  const kubeadm = await kubeadmBinary(join(work.dir, 'bin'), 'v1.22.15');
  bundlePath = join(work.dir, 'b.tar.zst');
  await bundle({ manifestFile: await writeManifest(work.dir, { images, binaries: [kubeadm] }), platforms: parsePlatformList('amd64'), cacheDir: join(work.dir, 'cache'), reporter: silent, sourceDateEpoch: 0, out: bundlePath });
  await source.cleanup();
  lab = await labUp(1, { dir: join(work.dir, 'lab') });
}, 180_000);

afterAll(async () => {
  if (lab) await labDown(lab);
  await work?.cleanup();
});

describe('a power cut during kubeadm init', () => {
  it('init: a power cut mid-init leaves a half-done master, which the re-run resets and initializes again', async () => {
    const [node] = lab.hosts;
    const args = ['from', bundlePath, '-m', node.ip, '-i', lab.key, '--store', join(work.dir, 'site'), '--ignore-preflight', 'disk,ip_forward,br_netfilter'];
    await slowKubeadm(lab, node, 60);
    // acinstall runs on the first master: the power cut takes it (and the registry) down too.
    const first = acinstallProcess(node, args);
    await kubeadmWaiting(lab, node, 'init', first);
    await killHost(node);
    expect((await first.done).signal).toBe('SIGKILL');
    await reviveHost(node);
    await slowKubeadm(lab, node, 0);
    expect((await ssh(lab, node, node, 'ls /etc/kubernetes/manifests; test -e /etc/kubernetes/admin.conf && echo admin.conf || true')).stdout).toContain('kube-apiserver.yaml');
    const r = await acinstallOn(node, args, ROOT);
    expect(r.code, r.stderr).toBe(0);
    expect(await kubeadmCalls(lab, node)).toEqual(['init --config /etc/kubernetes/acpack-kubeadm.yaml', 'reset -f --cri-socket unix:///run/containerd/containerd.sock', 'init --config /etc/kubernetes/acpack-kubeadm.yaml']);
  }, 240_000);
});
