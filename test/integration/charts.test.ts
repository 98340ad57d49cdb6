import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cp, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { bundle } from '../../packer/index.js';
import { parsePlatformList } from '../../arch/platform.js';
import { readDescriptor } from '../../oci/bundle-reader.js';
import { buildIndexImage, buildLayer, pushImage } from '../../demo/samples.js';
import { acinstallOn, labDown, labUp, ssh, type Lab } from '../hosts/lab.js';
import { ROOT, silent, tempDir, withRegistry } from '../helpers/env.js';
import { writeManifest } from '../helpers/fixtures.js';
import { helmBinary, kubectlBinary } from '../helpers/helm.js';
import { pushKubeadmImages } from '../helpers/kubeadm-images.js';

/**
 * The charts step with the real helm on a one-node cluster. The kubeadm stand-in starts no API
 * server (nothing here can), so installing stops at the API: what is checked is everything up to it.
 */
let lab: Lab;
let work: Awaited<ReturnType<typeof tempDir>>;
let bundlePath: string;
let checkedPath: string;

beforeAll(async () => {
  work = await tempDir();
  const source = await withRegistry();
  const pause = buildIndexImage('ecp_builder/pause', '3.5', { amd64: [await buildLayer([{ path: 'pause', content: 'pause' }])] });
  await pushImage(source.registry.host, pause);
  // The rest of what kubeadm v1.22.15 asks for (acinstall checks with `kubeadm config images list`).
  const kubeadmImages = await pushKubeadmImages(source.registry.host, { arches: ['amd64'], leaveOut: ['pause'] });
  await cp(join(ROOT, 'manifests/demo/charts/hello'), join(work.dir, 'charts/hello'), { recursive: true });
  await mkdir(join(work.dir, 'charts/hybridnet/templates'), { recursive: true });
  await writeFile(join(work.dir, 'charts/hybridnet/Chart.yaml'), 'apiVersion: v2\nname: hybridnet\nversion: 0.6.8\nappVersion: 0.8.8\n');
  await writeFile(join(work.dir, 'charts/hybridnet/templates/cm.yaml'), 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: hybridnet\ndata: {}\n');
  const sha = (f: string) => execFileSync('sha256sum', [f]).toString().split(' ')[0];
  const kubeadm = join(ROOT, 'test/hosts/standins/kubeadm');
  const m = await writeManifest(work.dir, {
    images: [`${source.registry.host}/ecp_builder/pause:3.5`, ...kubeadmImages],
    binaries: [
      { name: 'kubeadm', version: 'v1.22.15', url: kubeadm, sha256: sha(kubeadm), install: '/usr/bin/kubeadm' },
      { name: 'helm', version: 'v4', url: helmBinary(), sha256: sha(helmBinary()), install: '/usr/bin/helm' },
    ],
    // The manifest's order puts the CNI last: it is installed first all the same.
    charts: [{ path: 'charts/hello' }, { path: 'charts/hybridnet' }],
  });
  bundlePath = join(work.dir, 'b.tar.zst');
  await bundle({ manifestFile: m, platforms: parsePlatformList('amd64'), cacheDir: join(work.dir, 'cache'), reporter: silent, sourceDateEpoch: 0, out: bundlePath });
  // The same cluster with no charts but kubectl: only the post-check talks to the API server.
  const m2 = await writeManifest(join(work.dir, 'checked'), {
    images: [`${source.registry.host}/ecp_builder/pause:3.5`, ...kubeadmImages],
    binaries: [
      { name: 'kubeadm', version: 'v1.22.15', url: kubeadm, sha256: sha(kubeadm), install: '/usr/bin/kubeadm' },
      { name: 'kubectl', version: 'v1.33', url: kubectlBinary(), sha256: sha(kubectlBinary()), install: '/usr/bin/kubectl' },
    ],
  });
  checkedPath = join(work.dir, 'checked.tar.zst');
  await bundle({ manifestFile: m2, platforms: parsePlatformList('amd64'), cacheDir: join(work.dir, 'cache'), reporter: silent, sourceDateEpoch: 0, out: checkedPath });
  await source.cleanup();
  lab = await labUp(1, { dir: join(work.dir, 'lab') });
}, 180_000);

afterAll(async () => {
  if (lab) await labDown(lab);
  await work?.cleanup();
});

describe('acinstall from with charts', () => {
  it('pulls the CNI chart first with helm over oci:// (site CA, bundled digest) and stops at the API server', async () => {
    const [master] = lab.hosts;
    const r = await acinstallOn(master, ['from', bundlePath, '-m', master.ip, '-i', lab.key, '--store', join(work.dir, 'site'), '--ignore-preflight', 'disk,ip_forward,br_netfilter'], ROOT);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`1 of 1 nodes failed:\\n  ${master.ip.replace(/\./g, '\\.')}: chart hybridnet: helm install failed \\(1\\): .*kubernetes cluster unreachable: .*https://apiserver\\.cluster\\.local:6443.*connection refused`, 'i'));
    // kubeadm init ran; the CNI chart came from the site registry, byte for byte; nothing after it was tried.
    expect((await ssh(lab, master, master, 'cat /var/log/acpack-standins/kubeadm.calls')).stdout).toMatch(/^init /m);
    const hybridnet = (await readDescriptor(bundlePath)).charts.find((c) => c.name === 'hybridnet')!;
    expect((await ssh(lab, master, master, 'sha256sum /var/lib/acpack/charts/hybridnet-0.6.8.tgz')).stdout.split(' ')[0]).toBe(hybridnet.chart.slice(7));
    await expect(ssh(lab, master, master, 'test -e /var/lib/acpack/charts/hello-0.1.0.tgz')).rejects.toThrow();
    const log = (await ssh(lab, master, master, 'true').then(() => acinstallOn(master, ['status', '--store', join(work.dir, 'site')], ROOT))).stdout;
    expect(log).toMatch(/charts\s+failed\s+.*chart hybridnet/);
  }, 180_000); // a whole install up to helm, on a machine that may be busy

  it('runs the post-check with the bundle\'s kubectl, which stops at the API server too', async () => {
    const [master] = lab.hosts;
    const r = await acinstallOn(master, ['from', checkedPath, '-m', master.ip, '-i', lab.key, '--store', join(work.dir, 'site'), '--ignore-preflight', 'disk,ip_forward,br_netfilter'], ROOT);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`1 of 1 nodes failed:\\n  ${master.ip.replace(/\./g, '\\.')}: post-check: kubectl cannot reach the API server: .*apiserver\\.cluster\\.local:6443.*connection refused`));
    expect((await ssh(lab, master, master, '/usr/bin/kubectl version --client -o json')).stdout).toContain('clientVersion');
  }, 180_000);
});
