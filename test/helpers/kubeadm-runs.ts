import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ssh, type Lab, type LabHost } from '../hosts/lab.js';
import { ACINSTALL } from './env.js';

/**
 * Driving the kubeadm stand-in on test hosts for the interruption tests: making it slow where the
 * real kubeadm waits, seeing when it does, and running acinstall as a process of its own that a
 * test can kill.
 */

/** The kubeadm calls on `h` that change it (init, join, reset), in order. */
export async function kubeadmCalls(lab: Lab, h: LabHost): Promise<string[]> {
  const all = (await ssh(lab, h, h, 'cat /var/log/acpack-standins/kubeadm.calls 2>/dev/null || true')).stdout.trim().split('\n');
  return all.filter((c) => /^(init|join|reset)\b/.test(c) && !c.startsWith('init phase'));
}

/** init, join and upgrade on `h` spend `seconds` where the real ones wait for the control plane or the kubelet (0: not slow). */
export async function slowKubeadm(lab: Lab, h: LabHost, seconds: number): Promise<void> {
  await ssh(lab, h, h, seconds ? `mkdir -p /etc/acpack-standins && echo ${seconds} > /etc/acpack-standins/kubeadm-slow` : 'rm -f /etc/acpack-standins/kubeadm-slow');
}

export interface AcinstallProcess {
  child: ReturnType<typeof spawn>;
  done: Promise<{ code: number | null; signal: NodeJS.Signals | null; out: string }>;
  /** Its output once it has ended; undefined while it runs. */
  exited(): string | undefined;
}

/** acinstall on `h` as its own process, to be killed by PID (nsenter execs it: the PID is node's). */
export function acinstallProcess(h: LabHost, args: string[]): AcinstallProcess {
  const child = spawn('nsenter', [`--net=/run/netns/${h.netns}`, '--', ACINSTALL, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
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

/** Until the stand-in on `h` waits in `what` (the moment to cut); fails at once if `acinstall` ends first. */
export async function kubeadmWaiting(lab: Lab, h: LabHost, what: 'init' | 'join' | 'upgrade apply' | 'upgrade node', acinstall: AcinstallProcess): Promise<void> {
  for (let i = 0; i < 600; i++) {
    const r = await ssh(lab, h, h, 'cat /var/lib/acpack-standins/kubeadm.waiting 2>/dev/null || true');
    if (r.stdout.startsWith(what)) return;
    const out = acinstall.exited();
    if (out !== undefined) throw new Error(`acinstall ended before kubeadm ${what} waited on ${h.ip}:\n${out}`);
    await sleep(200);
  }
  throw new Error(`kubeadm ${what} never started waiting on ${h.ip}`);
}
