import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdir, rm, writeFile, readFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { stopChild } from '../../demo/processes.js';
import { nodeArch } from '../../arch/platform.js';
import { siteExecutable, siteNode } from '../../runtime/site-runtime.js';
import { shq } from '../../installer/node-setup.js';

const run = promisify(execFile);

/**
 * Test hosts: each a network namespace on a private bridge, with its own hostname, a copy-on-write
 * overlay of `/` (tmpfs upper) under a chroot, and its own sshd. Network safety: the lab subnet is
 * `unreachable` in the root namespace before anything is created, the bridge lives in a namespace
 * of its own (the root namespace has no interface on the subnet), and clients run inside a host's
 * namespace. Teardown kills what it started by PID and deletes the namespaces and the route.
 */
export interface LabHost {
  name: string;
  ip: string;
  netns: string;
  /** The sshd of the host (its PID is in the host's mount namespace). */
  sshd: ChildProcess;
}

export interface Lab {
  id: string;
  subnet: string;
  /** The claim on the subnet, released at teardown. */
  lock?: string;
  dir: string;
  key: string;
  hosts: LabHost[];
}

const LOCKS = '/tmp/acpack-lab-locks';
const STANDINS = resolve(import.meta.dirname, 'standins');
const STANDIN_NODE = '/usr/local/lib/acpack-standins/node';

/**
 * Claims a free 10.213.<n>.0/24 for this lab with an atomic mkdir, so two labs running at once
 * (parallel test files) never share a subnet: one's teardown must never drop the other's
 * `unreachable` route. A claim whose owner process is gone is taken over.
 */
async function claimSubnet(start: number): Promise<{ subnet: string; prefix: string; lock: string }> {
  await mkdir(LOCKS, { recursive: true });
  for (let i = 0; i < 100; i++) {
    const third = 100 + ((start + i) % 100);
    const lock = join(LOCKS, String(third));
    try {
      await mkdir(lock);
    } catch {
      const owner = Number(await readFile(join(lock, 'pid'), 'utf8').catch(() => '0'));
      let alive = owner > 0;
      try {
        if (alive) process.kill(owner, 0);
      } catch {
        alive = false;
      }
      if (alive || owner === 0) continue;
    }
    await writeFile(join(lock, 'pid'), String(process.pid));
    return { subnet: `10.213.${third}.0/24`, prefix: `10.213.${third}`, lock };
  }
  throw new Error('no free lab subnet in 10.213.100-199.0/24');
}

async function sh(cmd: string, args: string[]): Promise<string> {
  const { stdout } = await run(cmd, args, { timeout: 30_000 });
  return stdout;
}

/** Runs a command inside a host's network namespace (the client side of every test). */
export function inHost(host: Pick<LabHost, 'netns'>, cmd: string, args: string[], timeoutMs = 30_000): Promise<{ stdout: string; stderr: string }> {
  return run('nsenter', [`--net=/run/netns/${host.netns}`, '--', cmd, ...args], { timeout: timeoutMs });
}

/**
 * Runs `acinstall` as it runs on site: the single executable of the checkout at `root` (its
 * dist/site), on a host (the first master), inside its namespace.
 */
export async function acinstallOn(host: Pick<LabHost, 'netns'>, args: string[], root: string, timeoutMs = 120_000): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    return { code: 0, ...(await inHost(host, siteExecutable(nodeArch(), join(root, 'dist', 'site')), args, timeoutMs)) };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

/** ssh from `from`'s namespace to `to`, as root with the lab key. */
export function ssh(lab: Lab, from: LabHost, to: LabHost, command: string, timeoutMs = 30_000): Promise<{ stdout: string; stderr: string }> {
  return inHost(from, 'ssh', [
    '-i', lab.key,
    '-o', 'StrictHostKeyChecking=no',
    '-o', `UserKnownHostsFile=${join(lab.dir, 'known_hosts')}`,
    '-o', 'BatchMode=yes',
    '-o', 'ConnectTimeout=5',
    `root@${to.ip}`,
    command,
  ], timeoutMs);
}

/**
 * `arm64`: names of hosts that play arm64 machines. binfmt_misc is not set up here, so a host cannot
 * run arm64 programs transparently: what it reports is real (its `uname -m` runs an arm64 program,
 * the arm64 Node, under qemu-user), the rest of its userland stays this machine's.
 */
export async function labUp(count: number, opts: { id?: number; dir: string; arm64?: string[] }): Promise<Lab> {
  const n = opts.id ?? process.pid;
  const { subnet, prefix, lock } = await claimSubnet(n);
  const id = `acp${n % 100000}`;
  const lab: Lab = { id, subnet, lock, dir: opts.dir, key: join(opts.dir, 'id_ed25519'), hosts: [] };
  await mkdir(opts.dir, { recursive: true });
  // Safety first: nothing for the lab subnet may leave the machine from the root namespace.
  await sh('ip', ['route', 'replace', 'unreachable', subnet]);
  try {
    await sh('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', lab.key]);
    const sw = `${id}-sw`;
    await sh('ip', ['netns', 'add', sw]);
    await sh('ip', ['-n', sw, 'link', 'add', 'br0', 'type', 'bridge']);
    await sh('ip', ['-n', sw, 'link', 'set', 'br0', 'up']);
    for (let i = 1; i <= count; i++) {
      const name = `node${i}`;
      const netns = `${id}-${name}`;
      const ip = `${prefix}.${10 + i}`;
      await sh('ip', ['netns', 'add', netns]);
      await sh('ip', ['-n', netns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', `p${i}`, 'netns', sw]);
      await sh('ip', ['-n', netns, 'addr', 'add', `${ip}/24`, 'dev', 'eth0']);
      await sh('ip', ['-n', netns, 'link', 'set', 'eth0', 'up']);
      await sh('ip', ['-n', netns, 'link', 'set', 'lo', 'up']);
      await sh('ip', ['-n', sw, 'link', 'set', `p${i}`, 'master', 'br0', 'up']);
      lab.hosts.push({ name, ip, netns, sshd: await startHostSshd(lab, name, netns, ip, opts.arm64?.includes(name)) });
    }
    return lab;
  } catch (err) {
    await labDown(lab);
    throw err;
  }
}

/** The per-host root: tmpfs upper over `/`, a few kernel filesystems, sshd in the foreground. */
async function startHostSshd(lab: Lab, name: string, netns: string, ip: string, arm64 = false): Promise<ChildProcess> {
  const dir = join(lab.dir, name);
  await mkdir(join(dir, 'merged'), { recursive: true });
  await mkdir(join(dir, 'rw'), { recursive: true });
  await sh('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'host_key')]);
  await writeFile(join(dir, 'authorized_keys'), await readFile(`${lab.key}.pub`));
  await writeFile(
    join(dir, 'sshd_config'),
    [
      'Port 22',
      `ListenAddress ${ip}`,
      `HostKey ${join(dir, 'host_key')}`,
      `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
      // Passwords work once a test sets one (chpasswd on the host): root has none to begin with.
      'PermitRootLogin yes',
      'PasswordAuthentication yes',
      'PermitEmptyPasswords no',
      'UsePAM no',
      'StrictModes no',
      'PidFile none',
      'Subsystem sftp internal-sftp',
      '',
    ].join('\n'),
  );
  const m = join(dir, 'merged');
  const script = [
    'set -e',
    `mount -t tmpfs -o size=2g tmpfs ${dir}/rw`,
    `mkdir -p ${dir}/rw/upper ${dir}/rw/work`,
    `mount -t overlay overlay -o lowerdir=/,upperdir=${dir}/rw/upper,workdir=${dir}/rw/work ${m}`,
    `mount -t proc proc ${m}/proc`,
    `mount -t sysfs sysfs ${m}/sys`,
    `mount --rbind /dev ${m}/dev`,
    `mount -t tmpfs tmpfs ${m}/run`,
    `mkdir -p ${m}/run/sshd`,
    // root's shell starts as on a fresh node: this machine's ~/.bashrc (pyenv, cargo) costs ~0.7 s,
    // and bash sources it for every command sshd runs.
    `cp /etc/skel/.bashrc /etc/skel/.profile ${m}/root/`,
    // systemd is not PID 1 here: a small supervisor takes its place on every host (systemctl and
    // journalctl stand-ins, see standins/systemd.mjs), run by this machine's node.
    ...['systemd.mjs', 'systemd-units.mjs'].map((f) => `install -D -m 644 ${STANDINS}/${f} ${m}/usr/local/lib/acpack-standins/${f}`),
    // Its node is a private one, off PATH: a host whose own node is taken away (a bare site's first
    // master) keeps its services.
    `touch ${m}${STANDIN_NODE} && mount --bind ${process.execPath} ${m}${STANDIN_NODE}`,
    ...['systemctl', 'journalctl'].map((t) => `sed 's|@NODE@|${STANDIN_NODE}|' ${STANDINS}/${t} > ${m}/usr/local/sbin/${t} && chmod 755 ${m}/usr/local/sbin/${t}`),
    ...(arm64 ? arm64Uname(m) : []),
    `hostname ${name}`,
    `exec chroot ${m} /usr/sbin/sshd -D -e -f ${dir}/sshd_config`,
  ].join('\n');
  const child = spawn('nsenter', [`--net=/run/netns/${netns}`, '--', 'unshare', '--mount', '--uts', '--propagation', 'private', 'sh', '-c', script], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  child.stderr!.on('data', (c: Buffer) => (log = (log + c.toString()).slice(-4000)));
  for (let i = 0; i < 100; i++) {
    if (child.exitCode !== null) throw new Error(`sshd on ${name} exited: ${log}`);
    const listening = await inHost({ netns }, 'sh', ['-c', `ss -ltn 2>/dev/null | grep -q '${ip}:22 '`]).then(
      () => true,
      () => false,
    );
    if (listening) return child;
    await sleep(100);
  }
  child.kill('SIGKILL');
  throw new Error(`sshd on ${name} did not listen on ${ip}:22: ${log}`);
}

const ARM64_NODE = '/usr/local/lib/acpack-standins/node-arm64';

/** Shell lines making the host's `uname -m` an arm64 program's answer (see labUp), other uname calls its own. */
function arm64Uname(m: string): string[] {
  const wrapper = [
    '#!/bin/sh',
    '# A test host playing arm64: the machine name comes from an arm64 program under qemu-user.',
    'if [ "$*" = -m ]; then',
    `  exec qemu-aarch64-static -L /usr/aarch64-linux-gnu ${ARM64_NODE} -e 'console.log(require("os").machine())'`,
    'fi',
    'exec /usr/local/lib/acpack-standins/uname "$@"',
  ].join('\n');
  return [
    `install -D -m 755 /usr/bin/uname ${m}/usr/local/lib/acpack-standins/uname`,
    `touch ${m}${ARM64_NODE} && mount --bind ${siteNode('arm64')} ${m}${ARM64_NODE}`,
    `printf '%s\\n' ${shq(wrapper)} > ${m}/usr/bin/uname`,
  ];
}

/**
 * Kills a host as a power cut would: its link goes down and every process on it but its sshd
 * listener dies. The listener stays as the host's disk (it holds the host's root overlay), so what
 * was written before the cut is still there when the host comes back with `reviveHost`.
 */
export async function killHost(host: LabHost): Promise<void> {
  await sh('ip', ['-n', host.netns, 'link', 'set', 'eth0', 'down']);
  const pids = (await sh('ip', ['netns', 'pids', host.netns])).split('\n').filter(Boolean).map(Number);
  for (const pid of pids) {
    if (pid === host.sshd.pid) continue;
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

/** Brings a killed host back: its link up, its sshd answering again. */
export async function reviveHost(lab: Lab, host: LabHost): Promise<void> {
  await linkUp(lab, host);
}

/**
 * Sets a host's link up and waits until every other host whose link is up reaches its sshd. The
 * link coming up is not the host being reachable: the carrier reaches the bridge port later (under
 * load, seconds later), and a peer that tried the host while it was down holds a failed ARP entry.
 */
export async function linkUp(lab: Lab, host: LabHost): Promise<void> {
  await sh('ip', ['-n', host.netns, 'link', 'set', 'eth0', 'up']);
  const probe = `exec 3<>/dev/tcp/${host.ip}/22`;
  for (const peer of lab.hosts.filter((h) => h !== host)) {
    // A peer that is cut off itself (its link down, as killHost leaves it) cannot tell.
    if (!/<[^>]*\bUP\b/.test(await sh('ip', ['-n', peer.netns, '-o', 'link', 'show', 'eth0']))) continue;
    const deadline = Date.now() + 30_000;
    let flushed = false;
    while (!(await inHost(peer, 'timeout', ['2', 'bash', '-c', probe]).then(() => true, () => false))) {
      if (Date.now() > deadline) throw new Error(`${host.name} (${host.ip}) is not reachable from ${peer.name} 30 s after its link came up`);
      // Still not after 10 s (seen once, in a run beside other tests): forget what the peer learnt of
      // the host's address while it was down, so that it asks again.
      if (!flushed && Date.now() > deadline - 20_000) {
        flushed = true;
        await sh('ip', ['-n', peer.netns, 'neigh', 'flush', 'to', host.ip]).catch(() => {});
      }
      await sleep(200);
    }
  }
}

/** Kills the hosts' processes by PID, deletes the namespaces and the route; safe to call twice. */
export async function labDown(lab: Lab): Promise<void> {
  for (const h of lab.hosts) await stopChild(h.sshd);
  const names = (await sh('ip', ['netns', 'list']).catch(() => ''))
    .split('\n')
    .map((l) => l.split(' ')[0])
    .filter((n) => n.startsWith(`${lab.id}-`));
  for (const ns of names) {
    // Anything still running in a host's namespace belongs to the lab: end it before the namespace.
    const pids = (await sh('ip', ['netns', 'pids', ns]).catch(() => '')).split('\n').filter(Boolean);
    for (const pid of pids) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        // already gone
      }
    }
    await sh('ip', ['netns', 'del', ns]).catch(() => {});
  }
  await sh('ip', ['route', 'del', 'unreachable', lab.subnet]).catch(() => {});
  if (lab.lock) await rm(lab.lock, { recursive: true, force: true });
  if (existsSync(lab.dir)) await rm(lab.dir, { recursive: true, force: true });
}

/**
 * tbf at `rate` on every host's eth0 (what it sends) and, `bothWays`, on its port of the lab's
 * bridge (what it receives): a site's links, where on bare veths hosts race for 2 CPU cores.
 */
export async function shapeLinks(lab: Lab, rate: string, bothWays = false): Promise<void> {
  const tbf = ['root', 'tbf', 'rate', rate, 'burst', '256kb', 'latency', '100ms'];
  for (const h of lab.hosts) {
    await inHost(h, 'tc', ['qdisc', 'replace', 'dev', 'eth0', ...tbf]);
    // labUp names host nodeI's bridge port pI, in the switch namespace `<lab id>-sw`.
    const port = `p${h.name.replace(/^node/, '')}`;
    if (bothWays) await inHost({ netns: `${lab.id}-sw` }, 'tc', ['qdisc', 'replace', 'dev', port, ...tbf]);
    else await inHost({ netns: `${lab.id}-sw` }, 'tc', ['qdisc', 'del', 'dev', port, 'root']).catch(() => {});
  }
}
