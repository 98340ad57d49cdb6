import { archFromUname, parsePlatform } from '../arch/platform.js';
import { AcpackError, plural } from '../oci/errors.js';
import { textTable } from '../oci/text-table.js';
import { laysClusterDown, type BundleDescriptor } from '../oci/bundle-format.js';
import { ownVersion } from '../ui/program.js';
import { isMaster, type ClusterSpec, type HostSpec } from './cluster-spec.js';
import type { SshHost } from './ssh.js';
import { KUBEADM_STARTED_HERE } from './kubeadm.js';
import { AGENT_PORT } from './node-setup.js';

/** The socket kubelet and crictl talk to: acinstall's containerd (containerd.service) must own it. */
export const CONTAINERD_SOCKET = '/run/containerd/containerd.sock';

/** One shell round trip gathers everything the checks need. */
const FACTS = [
  'echo "arch=$(uname -m)"',
  'echo "kernel=$(uname -r)"',
  'echo "os=$( . /etc/os-release 2>/dev/null; echo "$ID $VERSION_ID")"',
  'echo "systemd=$(command -v systemctl >/dev/null && echo 1 || echo 0)"',
  'echo "tools=$(for t in curl sha256sum tar base64 mktemp gzip; do command -v $t >/dev/null || printf "%s " $t; done)"',
  'echo "cpus=$(nproc)"',
  `echo "memkb=$(awk '/MemTotal/{print $2}' /proc/meminfo)"`,
  `echo "diskkb=$(df -Pk / | awk 'NR==2{print $4}')"`,
  `echo "swaps=$(awk 'NR>1' /proc/swaps | wc -l)"`,
  'echo "time=$(date +%s)"',
  'echo "hostname=$(hostname)"',
  `echo "ports=$( (ss -ltnH 2>/dev/null || netstat -ltn 2>/dev/null | tail -n +3) | awk '{print $4}' | sed 's/.*://' | sort -un | tr '\\n' ,)"`,
  'echo "br_netfilter=$([ -d /sys/module/br_netfilter ] && echo 1 || echo 0)"',
  'echo "ip_forward=$(cat /proc/sys/net/ipv4/ip_forward 2>/dev/null)"',
  // Who listens on containerd's socket (ss -p names the process), and containerd.service's main PID.
  `s=$(ss -xlpn 2>/dev/null | awk '{for (i = 1; i <= NF; i++) if ($i == "${CONTAINERD_SOCKET}") {print; exit}}' | sed -n 's/.*pid=\\([0-9]*\\).*/\\1/p')`,
  'echo "containerd_sock=$s"',
  'echo "containerd_unit=$(systemctl show -p MainPID containerd 2>/dev/null | cut -d= -f2)"',
  `echo "containerd_cmd=$( [ -n "$s" ] && tr '\\0' ' ' < /proc/$s/cmdline 2>/dev/null | cut -c1-160)"`,
  `echo "kubeadm_started=$(if ${KUBEADM_STARTED_HERE}; then echo 1; else echo 0; fi)"`,
  'echo "agent=$(systemctl is-active -q acpack-agent 2>/dev/null && echo 1 || echo 0)"',
].join('; ');

export interface Facts {
  arch: string;
  kernel: string;
  os: string;
  systemd: boolean;
  /** Tools the installer runs on the node that it does not have. */
  missingTools: string[];
  cpus: number;
  memKb: number;
  diskKb: number;
  swaps: number;
  time: number;
  hostname: string;
  ports: number[];
  brNetfilter: boolean;
  ipForward: boolean;
  /** The process listening on CONTAINERD_SOCKET (its PID and command line), and containerd.service's main PID (0: not running). */
  containerdSocket?: { pid: number; cmd: string; unitPid: number };
  /** A kubeadm init or join of acinstall's left its work here (see KUBEADM_STARTED_HERE). */
  kubeadmStarted: boolean;
  /** acinstall's peer cache agent runs here (from an earlier run): the agent's port is its own. */
  agentRunning: boolean;
}

export async function gatherFacts(host: SshHost): Promise<Facts> {
  const r = await host.exec(FACTS, 30_000);
  const kv = Object.fromEntries(r.stdout.split('\n').filter((l) => l.includes('=')).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1).trim()]));
  return {
    arch: kv.arch ?? '',
    kernel: kv.kernel ?? '',
    os: kv.os ?? '',
    systemd: kv.systemd === '1',
    missingTools: (kv.tools ?? '').split(' ').filter(Boolean),
    cpus: Number(kv.cpus),
    memKb: Number(kv.memkb),
    diskKb: Number(kv.diskkb),
    swaps: Number(kv.swaps),
    time: Number(kv.time),
    hostname: kv.hostname ?? '',
    ports: (kv.ports ?? '').split(',').filter(Boolean).map(Number),
    brNetfilter: kv.br_netfilter === '1',
    ipForward: kv.ip_forward === '1',
    kubeadmStarted: kv.kubeadm_started === '1',
    agentRunning: kv.agent === '1',
    containerdSocket: kv.containerd_sock ? { pid: Number(kv.containerd_sock), cmd: (kv.containerd_cmd ?? '').trim(), unitPid: Number(kv.containerd_unit) || 0 } : undefined,
  };
}

export interface Failure {
  node: string;
  check: string;
  found: string;
  need: string;
}

export const CHECKS = ['arch', 'os', 'kernel', 'cpu', 'memory', 'disk', 'swap', 'ports', 'clock', 'hostname', 'br_netfilter', 'ip_forward', 'containerd'] as const;

/** Failures no --ignore-preflight can skip: the install itself could not go on past them. */
const UNSKIPPABLE = new Map([
  ['arch', 'a node gets binaries only for an arch the bundle carries'],
  ['os', 'acinstall runs systemd units and curl, sha256sum, tar, base64, mktemp and gzip on every node'],
  ['ssh', 'nothing can be installed on a node acinstall cannot log in to'],
]);

/** The checks --ignore-preflight can skip. */
export const SKIPPABLE: readonly string[] = CHECKS.filter((c) => !UNSKIPPABLE.has(c));

/**
 * The value of --ignore-preflight, checked before any node is reached: a misspelt name would
 * otherwise skip nothing, and the run would fail on the very check the user meant to skip.
 */
export function parseIgnoreList(value: string): string[] {
  const names = value.split(',').map((s) => s.trim()).filter(Boolean);
  for (const name of names) {
    if (SKIPPABLE.includes(name)) continue;
    const why = UNSKIPPABLE.has(name) ? `"${name}" cannot be skipped: ${UNSKIPPABLE.get(name)}` : `there is no check "${name}"`;
    throw new AcpackError('BAD_ARGUMENT', `--ignore-preflight: ${why}; the checks it can skip are ${SKIPPABLE.join(', ')}`);
  }
  return names;
}

/** What a bundle holds nodes to: its arches, and for one that lays a cluster down, those it carries acinstall's runtime for. */
export interface BundleArches {
  arches: string[];
  runtime?: string[];
}

export function bundleArches(d: BundleDescriptor): BundleArches {
  const arches = d.platforms.map((p) => parsePlatform(p).architecture);
  return laysClusterDown(d) ? { arches, runtime: (d.runtime ?? []).map((r) => r.arch) } : { arches };
}

/**
 * Why a bundle cannot lay a cluster down on a node of `arch`, or undefined: every node is handed
 * acinstall's runtime of its arch from the bundle, and bundles of an acpack before it have none.
 */
export function runtimeLacking(b: BundleArches, arch: string): string | undefined {
  if (!b.runtime || b.runtime.includes(arch)) return undefined;
  return `the bundle carries no acinstall runtime for ${arch}: rebuild it with acpack ${ownVersion()}, which puts one in for each arch it bundles`;
}

/**
 * Every check on every node, all failures at once (fixing one node at a time is slow on a real site).
 * `arches`: what the bundle carries (amd64/arm64), `runtime`: the arches it carries acinstall's
 * runtime for, when it lays a cluster down; `now`: this machine's clock, in seconds;
 * `registryPort`: checked free on the first master (not given once our own registry holds it).
 */
export function evaluate(spec: ClusterSpec, facts: Map<HostSpec, Facts>, opts: BundleArches & { now: number; registryPort?: number; ignore: string[] }): Failure[] {
  const out: Failure[] = [];
  const fail = (h: HostSpec, check: (typeof CHECKS)[number], found: string, need: string) => {
    if (!opts.ignore.includes(check)) out.push({ node: h.ip, check, found, need });
  };
  const names = new Map<string, string[]>();
  const firstMaster = spec.hosts.find(isMaster);
  for (const [h, f] of facts) {
    let arch = '';
    try {
      arch = archFromUname(f.arch);
    } catch {
      // reported below
    }
    const found = `${f.arch}${arch ? ` (${arch})` : ''}`;
    const lacking = runtimeLacking(opts, arch);
    if (!opts.arches.includes(arch)) fail(h, 'arch', found, `an arch in the bundle: ${opts.arches.join(', ')}`);
    else if (lacking) fail(h, 'arch', found, lacking);
    // The installer writes systemd units and runs a few standard tools on every node.
    if (!f.systemd || f.missingTools.length) {
      fail(h, 'os', `${f.os || 'unknown'}${f.systemd ? '' : ', no systemctl'}${f.missingTools.length ? `, no ${f.missingTools.join(', ')}` : ''}`, 'Linux with systemd, curl, sha256sum, tar, base64, mktemp, gzip');
    }
    const [major, minor] = f.kernel.split('.').map(Number);
    if (!(major > 4 || (major === 4 && minor >= 19))) fail(h, 'kernel', f.kernel, '4.19 or newer');
    const master = isMaster(h);
    if (f.cpus < (master ? 2 : 1)) fail(h, 'cpu', `${f.cpus}`, master ? '2 for a master' : '1');
    if (f.memKb < (master ? 1.7 : 1) * 1024 * 1024) fail(h, 'memory', `${(f.memKb / 1048576).toFixed(1)} GiB`, master ? '1.7 GiB for a master' : '1 GiB');
    if (f.diskKb < 20 * 1024 * 1024) fail(h, 'disk', `${(f.diskKb / 1048576).toFixed(1)} GiB free on /`, '20 GiB free');
    if (f.swaps > 0) fail(h, 'swap', 'on', 'off (swapoff -a, and remove it from /etc/fstab)');
    // Where acinstall's kubeadm init or join ran (installed, or cut off halfway), its own kubelet, API
    // server and etcd hold these: the kubeadm step resumes or resets that run, never on top of it.
    const wanted = f.kubeadmStarted ? [] : master ? [6443, 10250, 2379, 2380] : [10250];
    if (h === firstMaster && opts.registryPort) wanted.push(opts.registryPort);
    // The peer cache's port, unless it is an earlier run's agent that holds it.
    if (!f.agentRunning) wanted.push(AGENT_PORT);
    const busy = wanted.filter((p) => f.ports.includes(p));
    if (busy.length) fail(h, 'ports', `in use: ${busy.join(', ')}`, `free: ${wanted.join(', ')}`);
    const skew = Math.abs(f.time - opts.now);
    if (skew > 30) fail(h, 'clock', `${skew} s off`, 'within 30 s of the first master (run NTP or chrony)');
    names.set(f.hostname, [...(names.get(f.hostname) ?? []), h.ip]);
    if (!f.brNetfilter) fail(h, 'br_netfilter', 'not loaded', 'loaded (modprobe br_netfilter)');
    if (!f.ipForward) fail(h, 'ip_forward', '0', '1 (sysctl -w net.ipv4.ip_forward=1)');
    // Another runtime's containerd (docker's, a hand-started one) on the socket: ours could not take it,
    // and kubelet would talk to one that never read our configuration.
    const sock = f.containerdSocket;
    if (sock && sock.pid !== sock.unitPid) {
      fail(h, 'containerd', `${CONTAINERD_SOCKET} held by pid ${sock.pid}${sock.cmd ? ` (${sock.cmd})` : ''}, not by containerd.service`, "no other containerd on that socket: stop docker's or the other runtime's, acinstall runs its own");
    }
  }
  for (const [name, ips] of names) {
    if (ips.length > 1) for (const ip of ips) fail(spec.hosts.find((h) => h.ip === ip)!, 'hostname', name, `unique (also on ${ips.filter((x) => x !== ip).join(', ')})`);
  }
  return out;
}

export function formatFailures(failures: Failure[]): string {
  return textTable([['NODE', 'CHECK', 'FOUND', 'NEED'], ...failures.map((f) => [f.node, f.check, f.found, f.need])]);
}

export function preflightError(failures: Failure[]): AcpackError {
  const nodes = new Set(failures.map((f) => f.node)).size;
  // Offer to skip only what --ignore-preflight accepts (not arch, os, or a node out of reach).
  const skippable = [...new Set(failures.map((f) => f.check))].filter((c) => SKIPPABLE.includes(c));
  return new AcpackError(
    'PREFLIGHT',
    `preflight failed on ${plural(nodes, 'node')}:\n${formatFailures(failures)}\nfix these${skippable.length ? `, or skip checks with --ignore-preflight ${skippable.join(',')}` : ''}`,
  );
}
