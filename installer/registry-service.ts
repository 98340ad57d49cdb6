import { execFile, spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readlinkSync } from 'node:fs';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { Agent, request } from 'undici';
import type { NodeView } from '../p2p/tracker.js';
import { AcpackError } from '../oci/errors.js';
import { ensureTls } from '../registry/index.js';
import { selfCommand } from '../ui/program.js';
import { firstMaster, type ClusterSpec } from './cluster-spec.js';

const run = promisify(execFile);
export const REGISTRY_UNIT = 'acpack-registry.service';

/** The `acinstall serve` command line that runs the site registry (as this very acinstall). */
export function serveCommand(store: string, listen: string, tlsArgs: string[]): string[] {
  return [...selfCommand(), 'serve', '--store', store, '--listen', listen, ...tlsArgs];
}

/**
 * A systemd unit owning the registry: up at boot, restarted when it dies, access log in the journal.
 * systemd reads ExecStart= its own way: words quoted as a shell would, but `%` starts a specifier
 * (`%h` is root's home) and `$` a variable, so both are doubled to stay themselves.
 */
export function registryUnit(command: string[]): string {
  const escaped = (a: string) => a.replace(/%/g, '%%').replace(/\$/g, '$$$$');
  const quote = (a: string) => (/^[\w@%+=:,./-]+$/.test(a) ? escaped(a) : `"${escaped(a).replace(/(["\\])/g, '\\$1')}"`);
  return `[Unit]
Description=acpack site registry (the cluster's images and binaries)
Wants=network-online.target
After=network-online.target

[Service]
ExecStart=${command.map(quote).join(' ')}
Restart=always
RestartSec=2
LimitNOFILE=1048576

[Install]
WantedBy=multi-user.target
`;
}

/**
 * True where systemd is the init system AND acinstall runs in its network namespace: a unit runs in
 * init's namespace, so from inside another one (a container, a test host) it would listen elsewhere.
 */
function systemdManagesThisNetwork(): boolean {
  if (!existsSync('/run/systemd/system')) return false;
  try {
    return readlinkSync('/proc/self/ns/net') === readlinkSync('/proc/1/ns/net');
  } catch {
    return false;
  }
}

/** Where and how the site registry of a cluster serves: on the first master, TLS with the store's site CA. */
export interface SiteRegistry {
  store: string;
  url: string;
  /** The site CA (PEM), which nodes and clients trust. */
  ca: string;
  listen: string;
  tlsArgs: string[];
}

/** The site registry of `spec`, its CA made once and kept in the store. */
export async function siteRegistry(store: string, spec: ClusterSpec): Promise<SiteRegistry> {
  const master = firstMaster(spec);
  const tls = await ensureTls(store, { hostnames: [spec.registry.domain], ips: [master.ip] });
  return {
    // Absolute: the registry's command line names it, and stop and status find the process by it.
    store: resolve(store),
    url: `https://${master.ip}:${spec.registry.port}`,
    ca: tls.ca,
    listen: `0.0.0.0:${spec.registry.port}`,
    tlsArgs: ['--tls', 'auto', '--ip', master.ip, '--hostname', spec.registry.domain],
  };
}

async function answers(r: SiteRegistry, agent: Agent): Promise<boolean> {
  return (await request(`${r.url}/v2/`, { dispatcher: agent }).then(async (res) => (await res.body.dump(), res.statusCode), () => 0)) === 200;
}

/**
 * The PID of the registry acinstall started in the background for this store, while that process
 * runs: checked by its command line, as a PID file outlives its process and PIDs are reused.
 */
async function backgroundPid(store: string): Promise<number | undefined> {
  store = resolve(store);
  const pid = Number((await readFile(join(store, 'registry.pid'), 'utf8').catch(() => '')).trim());
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  const cmd = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
  const args = cmd.split('\0');
  return args.includes('serve') && args.includes(store) ? pid : undefined;
}

const unitFile = join('/etc/systemd/system', REGISTRY_UNIT);

/** The peer cache's traffic summed over its nodes: what the registry sent, what they took from each other, and the most one node took. */
export function peerCacheTotals(nodes: NodeView[]): { fromSeed: number; fromPeers: number; busiest: number } {
  const bytes = nodes.map((n) => n.bytes ?? { fromSeed: 0, fromPeers: 0, served: 0 });
  return {
    fromSeed: bytes.reduce((sum, b) => sum + b.fromSeed, 0),
    fromPeers: bytes.reduce((sum, b) => sum + b.fromPeers, 0),
    busiest: Math.max(0, ...bytes.map((b) => b.fromSeed + b.fromPeers)),
  };
}

/** Each node's peer cache traffic as its agent last told the tracker; undefined when the registry does not answer. */
export async function peerCacheNodes(r: SiteRegistry): Promise<NodeView[] | undefined> {
  const agent = new Agent({ connect: { ca: r.ca, timeout: 3000 }, headersTimeout: 5000, bodyTimeout: 5000 });
  try {
    const res = await request(`${r.url}/p2p/v1/nodes`, { dispatcher: agent });
    const text = await res.body.text();
    return res.statusCode === 200 ? (JSON.parse(text) as NodeView[]) : undefined;
  } catch {
    return undefined;
  } finally {
    await agent.close();
  }
}

/** How the site registry runs now, for `acinstall registry status`: whether it answers, and what runs it. */
export async function registryStatus(r: SiteRegistry): Promise<{ running: boolean; how: string }> {
  const agent = new Agent({ connect: { ca: r.ca } });
  try {
    const up = await answers(r, agent);
    const pid = await backgroundPid(r.store);
    const how = systemdManagesThisNetwork() && existsSync(unitFile) ? `systemd unit ${REGISTRY_UNIT}` : pid ? `background process ${pid}` : 'no process of acinstall\'s';
    return { running: up, how };
  } finally {
    await agent.close();
  }
}

/**
 * Stops the site registry however acinstall started it: its unit is stopped and disabled (it would
 * come back at boot), or its background process is ended (SIGTERM, then SIGKILL after 10 s).
 * Returns what it did.
 */
export async function stopRegistry(store: string): Promise<string> {
  if (systemdManagesThisNetwork() && existsSync(unitFile)) {
    await run('systemctl', ['disable', '--now', REGISTRY_UNIT]);
    return `stopped and disabled ${REGISTRY_UNIT}`;
  }
  const pid = await backgroundPid(store);
  if (!pid) return 'not running';
  process.kill(pid, 'SIGTERM');
  for (let i = 0; i < 100 && (await backgroundPid(store)); i++) await sleep(100);
  if (await backgroundPid(store)) process.kill(pid, 'SIGKILL');
  await rm(join(store, 'registry.pid'), { force: true });
  return `stopped background process ${pid}`;
}

/**
 * Makes sure the site registry answers on `url`. A registry already answering is left alone (a
 * re-run). Where systemd is the init system (of this network), a unit owns it; elsewhere (containers,
 * test hosts) it is a background process whose PID is kept in the store, and it will not come back
 * after a reboot.
 * Returns how it runs, for the summary.
 */
export async function ensureRegistry(opts: SiteRegistry): Promise<string> {
  const agent = new Agent({ connect: { ca: opts.ca } });
  try {
    if (await answers(opts, agent)) return 'already running';
    const command = serveCommand(opts.store, opts.listen, opts.tlsArgs);
    const logFile = join(opts.store, 'registry.log');
    let exited: Promise<boolean> = new Promise(() => {});
    let how: string;
    if (systemdManagesThisNetwork()) {
      await writeFile(join('/etc/systemd/system', REGISTRY_UNIT), registryUnit(command));
      await run('systemctl', ['daemon-reload']);
      await run('systemctl', ['enable', '--now', REGISTRY_UNIT]);
      how = `systemd unit ${REGISTRY_UNIT}`;
    } else {
      // Its messages go to a log in the store, so a registry that cannot start can say why.
      const log = openSync(logFile, 'a');
      const child = spawn(command[0], [...command.slice(1), '--quiet'], { detached: true, stdio: ['ignore', 'ignore', log] });
      closeSync(log);
      child.unref();
      exited = new Promise((resolve) => child.once('exit', () => resolve(true)));
      await writeFile(join(opts.store, 'registry.pid'), `${child.pid}\n`);
      how = `background process ${child.pid} (no systemd here: it does not survive a reboot)`;
    }
    // Up to ~30 s: a busy or slow first master takes a while to start node and the workers.
    for (let i = 0; i < 300; i++) {
      if (await answers(opts, agent)) return how;
      if (await Promise.race([exited, sleep(100).then(() => false)])) break;
    }
    const said = how.startsWith('systemd')
      ? `see journalctl -u ${REGISTRY_UNIT}`
      : (await readFile(logFile, 'utf8').catch(() => '')).trim().split('\n').slice(-3).join('\n');
    throw new AcpackError('REGISTRY', `the site registry (${how}) did not start on ${opts.url}${said ? `:\n${said}` : ''}`);
  } finally {
    await agent.close(); // its keep-alive sockets would otherwise hold the process open
  }
}
