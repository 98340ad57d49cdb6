import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { bundle } from '../../packer/index.js';
import { parsePlatformList } from '../../arch/platform.js';
import { acinstallOn, killHost, labDown, labUp, reviveHost, ssh, type Lab, type LabHost } from '../hosts/lab.js';
import { kubeadmBinary } from '../hosts/standins/kubeadm-standin.js';
import { ROOT, silent, tempDir, withRegistry } from '../helpers/env.js';
import { writeManifest } from '../helpers/fixtures.js';
import { pushKubeadmImages } from '../helpers/kubeadm-images.js';

const run = promisify(execFile);

/**
 * An interrupted kubeadm init or join is resumed (issue 9, item 4). The kubeadm stand-in is slow
 * where the real one waits (for the control plane, for the kubelet's TLS bootstrap) when a test
 * asks, so a connection can be cut and a node powered off while it runs: a cut leaves kubeadm to
 * finish unobserved, and the re-run must see that instead of running it again; a power cut leaves a
 * half-done node, which the re-run resets and installs again.
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
  lab = await labUp(4, { dir: join(work.dir, 'lab') });
}, 180_000);

afterAll(async () => {
  if (lab) await labDown(lab);
  await work?.cleanup();
});

const IGNORE = ['--ignore-preflight', 'disk,ip_forward,br_netfilter'];
const sh = (to: LabHost, command: string) => ssh(lab, lab.hosts[3] === to ? to : lab.hosts[0], to, command);
const calls = async (h: LabHost) => (await sh(h, 'cat /var/log/acpack-standins/kubeadm.calls')).stdout.trim().split('\n').filter((c) => /^(init|join|reset)\b/.test(c) && !c.startsWith('init phase'));
const slow = (h: LabHost, seconds: number) => sh(h, seconds ? `mkdir -p /etc/acpack-standins && echo ${seconds} > /etc/acpack-standins/kubeadm-slow` : 'rm -f /etc/acpack-standins/kubeadm-slow');

/** Until kubeadm (the stand-in) on `h` is waiting where the real one would: the moment to cut. */
async function waiting(h: LabHost, what: 'init' | 'join', acinstall: { exited: () => string | undefined }): Promise<void> {
  for (let i = 0; i < 600; i++) {
    const r = await ssh(lab, h, h, 'cat /var/lib/acpack-standins/kubeadm.waiting 2>/dev/null || true');
    if (r.stdout.startsWith(what)) return;
    const out = acinstall.exited();
    if (out !== undefined) throw new Error(`acinstall ended before kubeadm ${what} waited on ${h.ip}:\n${out}`);
    await sleep(200);
  }
  throw new Error(`kubeadm ${what} never started waiting on ${h.ip}`);
}

/** acinstall on `h` as its own process, to be killed by PID (nsenter execs it: the PID is node's). */
function acinstallProcess(h: LabHost, args: string[]) {
  const child = spawn('nsenter', [`--net=/run/netns/${h.netns}`, '--', process.execPath, '--import', 'tsx', join(ROOT, 'installer/main.ts'), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (out += c.toString()));
  let ended = false;
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null; out: string }>((resolve) =>
    child.once('exit', (code, signal) => {
      ended = true;
      resolve({ code, signal, out });
    }),
  );
  return { child, done, exited: () => (ended ? out : undefined) };
}

describe('an interrupted kubeadm init or join is resumed', () => {
  const store = () => join(work.dir, 'site');
  const fromArgs = () => ['from', bundlePath, '-m', lab.hosts[0].ip, '-n', `${lab.hosts[1].ip},${lab.hosts[2].ip}`, '-i', lab.key, '--store', store(), ...IGNORE];

  let resumed: ReturnType<typeof acinstallProcess>;

  it('init: acinstall cut off mid-init (its connection gone with it), kubeadm finishes unobserved and the re-run waits for it rather than running init again', async () => {
    const [master, w1, w2] = lab.hosts;
    await slow(master, 12);
    const first = acinstallProcess(master, fromArgs());
    await waiting(master, 'init', first);
    first.child.kill('SIGKILL');
    expect((await first.done).signal).toBe('SIGKILL');
    // kubeadm init runs on, detached from the session that started it…
    expect((await ssh(lab, master, master, 'cat /var/lib/acpack-standins/kubeadm.waiting')).stdout).toMatch(/^init /);
    await slow(master, 0);
    // …and the re-run, started while it still runs, waits for it, then joins the workers (slowly,
    // for the next test: each waits where the kubelet's TLS bootstrap would).
    await slow(w1, 20);
    await slow(w2, 20);
    resumed = acinstallProcess(master, fromArgs());
    await Promise.all([waiting(w1, 'join', resumed), waiting(w2, 'join', resumed)]);
    expect(await calls(master)).toEqual(['init --config /etc/kubernetes/acpack-kubeadm.yaml']);
  }, 240_000);

  it('join: a worker whose link is cut finishes its join unobserved and is not joined again; a worker whose power is cut is reset and joined again', async () => {
    const [master, w1, w2] = lab.hosts;
    // Both workers are in kubeadm join, waiting: w1's link goes down, w2 loses power.
    await run('ip', ['-n', w1.netns, 'link', 'set', 'eth0', 'down']);
    await killHost(w2);
    const cut = await resumed.done;
    expect(cut.code).toBe(1);
    expect(cut.out).toMatch(new RegExp(`2 of 3 nodes failed:\\n  ${w1.ip.replace(/\./g, '\\.')}: .*connection was lost[^\\n]*\\n  ${w2.ip.replace(/\./g, '\\.')}: .*connection was lost`));
    await run('ip', ['-n', w1.netns, 'link', 'set', 'eth0', 'up']);
    await reviveHost(w2);
    await slow(w1, 0);
    await slow(w2, 0);
    // w1's join ends while nobody watches; w2's died with its node, half done.
    expect((await sh(w1, 'for i in $(seq 150); do [ -f /var/lib/acpack/runs/kubeadm-join/status ] && break; sleep 0.2; done; cat /var/lib/acpack/runs/kubeadm-join/status')).stdout.trim()).toBe('0');
    expect((await sh(w2, 'test -e /var/lib/acpack/runs/kubeadm-join/status || echo none; ls /etc/kubernetes/pki/ca.crt /etc/kubernetes/bootstrap-kubelet.conf')).stdout).toMatch(/^none\n/);

    const r = await acinstallOn(master, fromArgs(), ROOT);
    expect(r.code, r.stderr).toBe(0);
    expect(await calls(w1)).toEqual(['join --config /etc/kubernetes/acpack-join.yaml']);
    expect(await calls(w2)).toEqual(['join --config /etc/kubernetes/acpack-join.yaml', 'reset -f --cri-socket unix:///run/containerd/containerd.sock', 'join --config /etc/kubernetes/acpack-join.yaml']);
    for (const w of [w1, w2]) expect((await sh(w, 'cat /etc/kubernetes/kubelet.conf')).stdout).toContain('apiserver.cluster.local:6443');
    expect(await calls(master)).toEqual(['init --config /etc/kubernetes/acpack-kubeadm.yaml']);
    const status = (await acinstallOn(master, ['status', '--store', store()], ROOT)).stdout;
    expect(status).toMatch(/kubeadm-init\s+done\s+.*\(init had finished unobserved in an earlier run\)/);
    expect(status).toMatch(new RegExp(`${w1.ip.replace(/\./g, '\\.')}\\s+kubeadm-join\\s+done\\s+.*worker \\(the join had finished unobserved`));
  }, 240_000);

  it('init: a power cut mid-init leaves a half-done master, which the re-run resets and initializes again', async () => {
    const node = lab.hosts[3];
    const args = ['from', bundlePath, '-m', node.ip, '-i', lab.key, '--store', join(work.dir, 'site-alone'), ...IGNORE];
    await slow(node, 60);
    // acinstall runs on the first master: the power cut takes it (and the registry) down too.
    const first = acinstallProcess(node, args);
    await waiting(node, 'init', first);
    await killHost(node);
    expect((await first.done).signal).toBe('SIGKILL');
    await reviveHost(node);
    await slow(node, 0);
    expect((await ssh(lab, node, node, 'ls /etc/kubernetes/manifests')).stdout).toContain('kube-apiserver.yaml');
    const r = await acinstallOn(node, args, ROOT);
    expect(r.code, r.stderr).toBe(0);
    expect(await calls(node)).toEqual(['init --config /etc/kubernetes/acpack-kubeadm.yaml', 'reset -f --cri-socket unix:///run/containerd/containerd.sock', 'init --config /etc/kubernetes/acpack-kubeadm.yaml']);
  }, 240_000);
});
