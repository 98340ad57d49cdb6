import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { acinstallOn, ssh, type LabHost } from '../hosts/lab.js';
import { ROOT } from '../helpers/env.js';
import { bundleSpec, kubeadmContent } from '../helpers/fixtures.js';
import { pushKubeadmImages } from '../helpers/kubeadm-images.js';
import { kubeadmBinary } from '../hosts/standins/kubeadm-standin.js';
import { useLab } from '../helpers/lab.js';
import { acinstallProcess, kubeadmWaiting, slowKubeadm } from '../helpers/kubeadm-runs.js';

/**
 * An interrupted Kubernetes upgrade is neither cut off nor run twice: `kubeadm upgrade apply` runs
 * detached from acinstall's SSH session, so the operator's session dying mid-upgrade (acinstall
 * killed, its connection gone) leaves it to finish rather than to die at its next line of output
 * with the control plane half moved, and the re-run takes it as done. One master, installed from a v1.22.15 bundle, upgraded with a v1.22.16 one (each bundle's
 * kubeadm is the stand-in of its version).
 */
const t = useLab(1, async ({ host, dir }) => {
  const { images, kubeadm } = await kubeadmContent(host, dir);
  const v15 = await bundleSpec(dir, { images, binaries: [kubeadm] }, join(dir, 'b15.tar.zst'), 'amd64', { allowIncomplete: true });
  const images16 = await pushKubeadmImages(host, { arches: ['amd64'], version: 'v1.22.16' });
  const v16 = await bundleSpec(join(dir, 'v16'), { images: images16, binaries: [await kubeadmBinary(join(dir, 'bin'), 'v1.22.16')] }, join(dir, 'b16.tar.zst'), 'amd64', { allowIncomplete: true });
  return { v15, v16 };
});

const store = () => join(t.work.dir, 'site');
const fromArgs = (node: LabHost, bundle: string) => ['from', bundle, '-m', node.ip, '-i', t.lab.key, '--store', store(), '--ignore-preflight', 'disk,ip_forward,br_netfilter'];
const upgradeCalls = async (node: LabHost) => (await ssh(t.lab, node, node, 'cat /var/log/acpack-standins/kubeadm.calls')).stdout.split('\n').filter((c) => c.startsWith('upgrade'));
const apiServerImage = async (node: LabHost) => /image: (\S+)/.exec((await ssh(t.lab, node, node, 'cat /etc/kubernetes/manifests/kube-apiserver.yaml')).stdout)?.[1];

describe('an interrupted Kubernetes upgrade', () => {
  it('runs on when acinstall dies mid-upgrade, and the re-run waits for it rather than upgrading again', async () => {
    const node = t.lab.hosts[0];
    const installed = await acinstallOn(node, fromArgs(node, t.built.v15), ROOT);
    expect(installed.code, installed.stderr).toBe(0);
    expect(await apiServerImage(node)).toMatch(/\/kube-apiserver:v1\.22\.15$/);

    await slowKubeadm(t.lab, node, 10);
    const first = acinstallProcess(node, fromArgs(node, t.built.v16));
    await kubeadmWaiting(t.lab, node, 'upgrade apply', first);
    first.child.kill('SIGKILL');
    expect((await first.done).signal).toBe('SIGKILL');
    // The session that started it is gone; the upgrade finishes anyway, every static pod moved on.
    for (let i = 0; i < 150 && (await ssh(t.lab, node, node, 'test -e /var/lib/acpack-standins/kubeadm.waiting && echo waiting || true')).stdout.trim(); i++) await sleep(200);
    for (const pod of ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler']) {
      expect((await ssh(t.lab, node, node, `cat /etc/kubernetes/manifests/${pod}.yaml`)).stdout).toMatch(new RegExp(`image: \\S+/${pod}:v1\\.22\\.16\\n`));
    }

    await slowKubeadm(t.lab, node, 0);
    const again = await acinstallOn(node, fromArgs(node, t.built.v16), ROOT);
    expect(again.code, again.stderr).toBe(0);
    expect(await upgradeCalls(node)).toEqual(['upgrade apply v1.22.16 -y']);
    expect(await apiServerImage(node)).toMatch(/\/kube-apiserver:v1\.22\.16$/);
    const status = (await acinstallOn(node, ['status', '--store', store()], ROOT)).stdout;
    expect(status).toMatch(/kubeadm-upgrade\s+done\s+.*\(the upgrade had finished unobserved in an earlier run\)/);
  }, 300_000);
});
