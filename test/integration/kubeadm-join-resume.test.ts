import { describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { acinstallOn, killHost, linkUp, reviveHost, ssh, type LabHost } from '../hosts/lab.js';
import { ROOT } from '../helpers/env.js';
import { kubeadmBundle } from '../helpers/fixtures.js';
import { useLab } from '../helpers/lab.js';
import { acinstallProcess, kubeadmCalls, kubeadmWaiting, slowKubeadm, type AcinstallProcess } from '../helpers/kubeadm-runs.js';

const run = promisify(execFile);

/**
 * An interrupted kubeadm join is resumed (issue 9, item 4). The kubeadm stand-in is slow where the
 * real one waits for the kubelet's TLS bootstrap when a test asks, so a worker's link can be cut and
 * another worker powered off while they join: the cut leaves kubeadm to finish unobserved, and the
 * re-run must see that instead of joining again; the power cut leaves a half-done node, which the
 * re-run resets and joins again. (Interrupted inits: kubeadm-init-resume.test.ts.)
 */
const t = useLab(3, kubeadmBundle);

const IGNORE = ['--ignore-preflight', 'disk,ip_forward,br_netfilter'];
const sh = (to: LabHost, command: string) => ssh(t.lab, t.lab.hosts[0], to, command);
const calls = (h: LabHost) => kubeadmCalls(t.lab, h);
const slow = (h: LabHost, seconds: number) => slowKubeadm(t.lab, h, seconds);
const waiting = (h: LabHost, what: 'init' | 'join', acinstall: AcinstallProcess) => kubeadmWaiting(t.lab, h, what, acinstall);

describe('an interrupted kubeadm join is resumed', () => {
  const store = () => join(t.work.dir, 'site');
  const fromArgs = () => ['from', t.built.path, '-m', t.lab.hosts[0].ip, '-n', `${t.lab.hosts[1].ip},${t.lab.hosts[2].ip}`, '-i', t.lab.key, '--store', store(), ...IGNORE];

  it('join: a worker whose link is cut finishes its join unobserved and is not joined again; a worker whose power is cut is reset and joined again', async () => {
    const [master, w1, w2] = t.lab.hosts;
    // Each worker waits in kubeadm join where the kubelet's TLS bootstrap would…
    await slow(w1, 20);
    await slow(w2, 20);
    const first = acinstallProcess(master, fromArgs());
    await Promise.all([waiting(w1, 'join', first), waiting(w2, 'join', first)]);
    // …when w1's link goes down and w2 loses power.
    await run('ip', ['-n', w1.netns, 'link', 'set', 'eth0', 'down']);
    await killHost(w2);
    const cut = await first.done;
    expect(cut.code).toBe(1);
    expect(cut.out).toMatch(new RegExp(`2 of 3 nodes failed:\\n  ${w1.ip.replace(/\./g, '\\.')}: .*connection was lost[^\\n]*\\n  ${w2.ip.replace(/\./g, '\\.')}: .*connection was lost`));
    await linkUp(t.lab, w1);
    await reviveHost(t.lab, w2);
    await slow(w1, 0);
    await slow(w2, 0);
    // w1's join ends while nobody watches; w2's died with its node, half done.
    expect((await sh(w1, 'for i in $(seq 150); do [ -f /etc/kubernetes/kubelet.conf ] && break; sleep 0.2; done; cat /etc/kubernetes/kubelet.conf')).stdout).toContain('apiserver.cluster.local:6443');
    expect((await sh(w2, 'ls /etc/kubernetes/pki/ca.crt /etc/kubernetes/bootstrap-kubelet.conf; test -e /etc/kubernetes/kubelet.conf || echo no kubelet.conf')).stdout).toContain('no kubelet.conf');

    const r = await acinstallOn(master, fromArgs(), ROOT);
    expect(r.code, r.stderr).toBe(0);
    expect(await calls(w1)).toEqual(['join --config /etc/kubernetes/acpack-join.yaml']);
    expect(await calls(w2)).toEqual(['join --config /etc/kubernetes/acpack-join.yaml', 'reset -f --cri-socket unix:///run/containerd/containerd.sock', 'join --config /etc/kubernetes/acpack-join.yaml']);
    for (const w of [w1, w2]) expect((await sh(w, 'cat /etc/kubernetes/kubelet.conf')).stdout).toContain('apiserver.cluster.local:6443');
    const status = (await acinstallOn(master, ['status', '--store', store()], ROOT)).stdout;
    expect(status).toMatch(new RegExp(`${w1.ip.replace(/\./g, '\\.')}\\s+kubeadm-join\\s+done\\s+.*worker \\(the join had finished unobserved`));
  }, 300_000);
});
