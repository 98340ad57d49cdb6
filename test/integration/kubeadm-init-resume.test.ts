import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { acinstallOn, killHost, reviveHost, ssh, type LabHost } from '../hosts/lab.js';
import { ROOT } from '../helpers/env.js';
import { kubeadmBundle } from '../helpers/fixtures.js';
import { useLab } from '../helpers/lab.js';
import { acinstallProcess, kubeadmCalls, kubeadmWaiting, slowKubeadm } from '../helpers/kubeadm-runs.js';

/**
 * An interrupted kubeadm init is resumed (issue 9, item 4), on two one-host clusters. acinstall cut
 * off mid-init (the operator's session gone, its SSH connection with it): kubeadm init runs on and
 * finishes unobserved, and the re-run takes it as done rather than running init again. A power cut on
 * the first master mid-init: acinstall, the registry and kubeadm die with it, leaving the node half
 * done (static pods, certificates, etcd data, no success), which the re-run resets and initializes
 * again. (Interrupted joins: kubeadm-join-resume.test.ts.)
 */
const t = useLab(2, kubeadmBundle);

const fromArgs = (node: LabHost) => ['from', t.built.path, '-m', node.ip, '-i', t.lab.key, '--store', join(t.work.dir, `site-${node.name}`), '--ignore-preflight', 'disk,ip_forward,br_netfilter'];
const INIT = 'init --config /etc/kubernetes/acpack-kubeadm.yaml';

describe('an interrupted kubeadm init is resumed', () => {
  it('init: acinstall cut off mid-init (its connection gone with it), kubeadm finishes unobserved and the re-run waits for it rather than running init again', async () => {
    const node = t.lab.hosts[0];
    await slowKubeadm(t.lab, node, 10);
    const first = acinstallProcess(node, fromArgs(node));
    await kubeadmWaiting(t.lab, node, 'init', first);
    first.child.kill('SIGKILL');
    expect((await first.done).signal).toBe('SIGKILL');
    // kubeadm init runs on, detached from the session that started it, and the re-run (started
    // while it still runs) waits for it.
    expect((await ssh(t.lab, node, node, 'cat /var/lib/acpack-standins/kubeadm.waiting')).stdout).toMatch(/^init /);
    // As on a real node, its kubelet and control plane hold their ports by now: not held against the re-run.
    expect((await ssh(t.lab, node, node, 'ss -ltnH')).stdout).toMatch(/:6443\s/);
    await slowKubeadm(t.lab, node, 0);
    const r = await acinstallOn(node, fromArgs(node), ROOT);
    expect(r.code, r.stderr).toBe(0);
    expect(await kubeadmCalls(t.lab, node)).toEqual([INIT]);
    expect((await ssh(t.lab, node, node, 'test -e /var/lib/acpack-standins/kubeadm.waiting || cat /etc/kubernetes/admin.conf')).stdout).toContain('apiserver.cluster.local:6443');
    const status = (await acinstallOn(node, ['status', '--store', join(t.work.dir, `site-${node.name}`)], ROOT)).stdout;
    expect(status).toMatch(/kubeadm-init\s+done\s+.*\(init had finished unobserved in an earlier run\)/);
  }, 240_000);

  it('init: a power cut mid-init leaves a half-done master, which the re-run resets and initializes again', async () => {
    const node = t.lab.hosts[1];
    await slowKubeadm(t.lab, node, 60);
    // acinstall runs on the first master: the power cut takes it (and the registry) down too.
    const first = acinstallProcess(node, fromArgs(node));
    await kubeadmWaiting(t.lab, node, 'init', first);
    await killHost(node);
    expect((await first.done).signal).toBe('SIGKILL');
    await reviveHost(t.lab, node);
    await slowKubeadm(t.lab, node, 0);
    expect((await ssh(t.lab, node, node, 'ls /etc/kubernetes/manifests')).stdout).toContain('kube-apiserver.yaml');
    const r = await acinstallOn(node, fromArgs(node), ROOT);
    expect(r.code, r.stderr).toBe(0);
    expect(await kubeadmCalls(t.lab, node)).toEqual([INIT, 'reset -f --cri-socket unix:///run/containerd/containerd.sock', INIT]);
  }, 240_000);
});
