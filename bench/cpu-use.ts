/**
 * Where the machine's CPU went during a timed part of a bench: the machine's busy and idle seconds
 * (/proc/stat) and, by kind of process, the CPU seconds each used (/proc/<pid>/stat, sampled every
 * 500 ms; a process that ends between two samples loses at most its last 500 ms). On 2 cores a lab
 * of 9 hosts is bound by CPU long before its shaped links: this says by whose.
 */
import { readdir, readFile } from 'node:fs/promises';

/** Kinds of process, by their command line: the first pattern that matches names it. */
const KINDS: [string, RegExp][] = [
  ['agent', /acinstall\S* agent /],
  ['registry', /acinstall/],
  ['containerd', /(^|\/)containerd( |$)/],
  ['ctr', /(^|\/)ctr /],
  ['ssh/sftp', /(^|\/)(sshd|ssh|sftp-server)( |:|$)|sftp-copy/],
];

export interface CpuUse {
  /** Seconds the machine's cores were busy (user, system, interrupts), summed over cores. */
  busySeconds: number;
  idleSeconds: number;
  /** CPU seconds (user + system) by kind of process; `other` is the rest. */
  byKind: Record<string, number>;
}

const TICK = 100; // USER_HZ, the unit of /proc's times on Linux

async function machineTimes(): Promise<{ busy: number; idle: number }> {
  const [, ...f] = (await readFile('/proc/stat', 'utf8')).split('\n')[0].trim().split(/\s+/);
  const [user, nice, system, idle, iowait, irq, softirq, steal] = f.map(Number);
  return { busy: user + nice + system + irq + softirq + (steal ?? 0), idle: idle + iowait };
}

async function processTimes(): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const pid of await readdir('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      // The start time (field 22) keeps a reused PID apart from the process it was before.
      out.set(`${pid}@${f[19]}`, Number(f[11]) + Number(f[12]));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

async function kindOf(key: string): Promise<string> {
  const cmd = await readFile(`/proc/${key.split('@')[0]}/cmdline`, 'utf8').catch(() => '');
  const line = cmd.replace(/\0/g, ' ');
  return KINDS.find(([, re]) => re.test(line))?.[0] ?? 'other';
}

/** Starts sampling; the returned function stops it and tells what was used since. */
export function sampleCpu(): () => Promise<CpuUse> {
  const seen = new Map<string, { kind: Promise<string>; first: number; last: number }>();
  const startMachine = machineTimes();
  let stopped = false;
  const sample = async () => {
    for (const [key, ticks] of await processTimes()) {
      const s = seen.get(key);
      // A process seen for the first time after the start counts from zero: it began meanwhile.
      if (s) s.last = ticks;
      else seen.set(key, { kind: kindOf(key), first: sampling ? 0 : ticks, last: ticks });
    }
  };
  let sampling = false;
  const first = sample().then(() => (sampling = true));
  const loop = (async () => {
    await first;
    while (!stopped) {
      await new Promise((r) => setTimeout(r, 500));
      await sample();
    }
  })();
  return async () => {
    stopped = true;
    await loop;
    await sample();
    const [m0, m1] = [await startMachine, await machineTimes()];
    const byKind: Record<string, number> = {};
    for (const s of seen.values()) {
      const kind = await s.kind;
      byKind[kind] = (byKind[kind] ?? 0) + (s.last - s.first) / TICK;
    }
    for (const k of Object.keys(byKind)) byKind[k] = Math.round(byKind[k] * 10) / 10;
    return { busySeconds: Math.round((m1.busy - m0.busy) / TICK), idleSeconds: Math.round((m1.idle - m0.idle) / TICK), byKind };
  };
}
