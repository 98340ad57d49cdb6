import { describe, expect, it } from 'vitest';
import { cp, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { readDescriptor } from '../../oci/bundle-reader.js';
import { acinstallOn, ssh } from '../hosts/lab.js';
import { ROOT } from '../helpers/env.js';
import { bundleSpec, kubeadmContent, localBinary, pushSmallImage } from '../helpers/fixtures.js';
import { helmBinary, kubectlBinary } from '../helpers/helm.js';
import { useLab } from '../helpers/lab.js';

/**
 * The charts step with the real helm on a one-node cluster. The kubeadm stand-in starts no API
 * server (nothing here can), so installing stops at the API: what is checked is everything up to it.
 */
const t = useLab(1, async ({ host, dir }) => {
  // What kubeadm v1.22.15 asks for (acinstall checks with `kubeadm config images list`).
  const { images, kubeadm } = await kubeadmContent(host, dir);
  await cp(join(ROOT, 'manifests/demo/charts/hello'), join(dir, 'charts/hello'), { recursive: true });
  await mkdir(join(dir, 'charts/hybridnet/templates'), { recursive: true });
  await writeFile(join(dir, 'charts/hybridnet/Chart.yaml'), 'apiVersion: v2\nname: hybridnet\nversion: 0.6.8\nappVersion: 0.8.8\n');
  await writeFile(join(dir, 'charts/hybridnet/templates/cm.yaml'), 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: hybridnet\ndata: {}\n');
  // What hello's Deployment runs (named there under the demo's registry host).
  const helloImage = await pushSmallImage(host, 'ecp_builder/hybridnet', 'v0.8.8');
  const withCharts = {
    images: [...images, helloImage],
    binaries: [kubeadm, localBinary('helm', 'v4', helmBinary(), '/usr/bin/helm')],
    // The manifest's order puts the CNI last: it is installed first all the same.
    charts: [{ path: 'charts/hello' }, { path: 'charts/hybridnet' }],
  };
  // The same cluster with no charts but kubectl: only the post-check talks to the API server.
  const checked = { images, binaries: [kubeadm, localBinary('kubectl', 'v1.33', kubectlBinary(), '/usr/bin/kubectl')] };
  // Neither carries a kubelet (nor `checked` a CNI chart): acpack's lint would refuse them, and what
  // is tested here is the charts step and the post-check, so they are built with allowIncomplete.
  const o = { allowIncomplete: true };
  return { helloImage, bundle: await bundleSpec(dir, withCharts, join(dir, 'b.tar.zst'), 'amd64', o), checked: await bundleSpec(join(dir, 'checked'), checked, join(dir, 'checked.tar.zst'), 'amd64', o) };
});

describe('acinstall from with charts', () => {
  it('pulls the CNI chart first with helm over oci:// (site CA, bundled digest) and stops at the API server', async () => {
    const [master] = t.lab.hosts;
    const r = await acinstallOn(master, ['from', t.built.bundle, '-m', master.ip, '-i', t.lab.key, '--store', join(t.work.dir, 'site'), '--ignore-preflight', 'disk,ip_forward,br_netfilter'], ROOT);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`1 of 1 nodes failed:\\n  ${master.ip.replace(/\./g, '\\.')}: chart hybridnet: helm install failed \\(1\\): .*kubernetes cluster unreachable: .*https://apiserver\\.cluster\\.local:6443.*connection refused`, 'i'));
    // kubeadm init ran; the CNI chart came from the site registry, byte for byte; nothing after it was tried.
    expect((await ssh(t.lab, master, master, 'cat /var/log/acpack-standins/kubeadm.calls')).stdout).toMatch(/^init /m);
    const hybridnet = (await readDescriptor(t.built.bundle)).charts.find((c) => c.name === 'hybridnet')!;
    expect((await ssh(t.lab, master, master, 'sha256sum /var/lib/acpack/charts/hybridnet-0.6.8.tgz')).stdout.split(' ')[0]).toBe(hybridnet.chart.slice(7));
    await expect(ssh(t.lab, master, master, 'test -e /var/lib/acpack/charts/hello-0.1.0.tgz')).rejects.toThrow();
    const log = (await ssh(t.lab, master, master, 'true').then(() => acinstallOn(master, ['status', '--store', join(t.work.dir, 'site')], ROOT))).stdout;
    expect(log).toMatch(/charts\s+failed\s+.*chart hybridnet/);
    // The image hello runs was pulled ahead (its chart rendered by the bundle's helm), by the
    // bundle's name for it, into the kubelet's namespace, while the cluster was laid down.
    await ssh(t.lab, master, master, 'for i in $(seq 600); do [ -f /var/lib/acpack/runs/prepull/status ] && break; sleep 0.1; done; test "$(cat /var/lib/acpack/runs/prepull/status)" = 0', 90_000);
    expect((await ssh(t.lab, master, master, 'cat /var/lib/acpack/runs/prepull/images')).stdout.split('\n')).toContain(t.built.helloImage);
    expect((await ssh(t.lab, master, master, 'ctr -n k8s.io images ls -q')).stdout.split('\n')).toContain(t.built.helloImage);
    // Its agent preheated that same list: every image resolved by the name the bundle gives it.
    const images = (await ssh(t.lab, master, master, 'cat /var/lib/acpack/runs/prepull/images')).stdout.trim().split('\n');
    const preheat = await ssh(t.lab, master, master, 'for i in $(seq 300); do [ -s /var/lib/acpack/runs/prepull/preheat.out ] && break; sleep 0.1; done; cat /var/lib/acpack/runs/prepull/preheat.out', 60_000);
    expect(JSON.parse(preheat.stdout), preheat.stdout).toMatchObject({ images: images.length, failed: [] });
  }, 180_000); // a whole install up to helm, on a machine that may be busy

  it('runs the post-check with the bundle\'s kubectl, which stops at the API server too', async () => {
    const [master] = t.lab.hosts;
    const r = await acinstallOn(master, ['from', t.built.checked, '-m', master.ip, '-i', t.lab.key, '--store', join(t.work.dir, 'site'), '--ignore-preflight', 'disk,ip_forward,br_netfilter'], ROOT);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`1 of 1 nodes failed:\\n  ${master.ip.replace(/\./g, '\\.')}: post-check: kubectl cannot reach the API server: .*apiserver\\.cluster\\.local:6443.*connection refused`));
    expect((await ssh(t.lab, master, master, '/usr/bin/kubectl version --client -o json')).stdout).toContain('clientVersion');
  }, 180_000);
});
