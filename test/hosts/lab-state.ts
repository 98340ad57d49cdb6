import { readFile, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { labDown, type Lab } from './lab.js';
import { nodeArch } from '../../arch/platform.js';
import { siteExecutable } from '../../runtime/site-runtime.js';

/**
 * The lab a foreground process (`npm run hosts:up`, `npm run demo`) keeps up, written where
 * `hosts:exec` finds its hosts and `hosts:down` removes it after a crash. One at a time per path
 * (ACPACK_LAB_STATE, default /tmp/acpack-lab.json).
 */
export interface LabState {
  id: string;
  subnet: string;
  lock?: string;
  dir: string;
  key: string;
  hosts: { name: string; ip: string; netns: string }[];
  /** The hosts' sshd processes, killed by PID on hosts:down. */
  pids: number[];
}

const ROOT = resolve(import.meta.dirname, '../..');

export const LAB_STATE = process.env.ACPACK_LAB_STATE ?? '/tmp/acpack-lab.json';

export async function claimLabState(): Promise<void> {
  if (existsSync(LAB_STATE)) throw new Error(`a lab is already up (${LAB_STATE}); run npm run hosts:down first`);
}

export async function saveLabState(lab: Lab, file = LAB_STATE): Promise<void> {
  const state: LabState = {
    id: lab.id,
    subnet: lab.subnet,
    lock: lab.lock,
    dir: lab.dir,
    key: lab.key,
    hosts: lab.hosts.map(({ name, ip, netns }) => ({ name, ip, netns })),
    pids: lab.hosts.map((h) => h.sshd.pid!).filter(Boolean),
  };
  await writeFile(file, `${JSON.stringify(state, null, 2)}\n`);
}

export async function loadLabState(): Promise<LabState | undefined> {
  if (!existsSync(LAB_STATE)) return undefined;
  return JSON.parse(await readFile(LAB_STATE, 'utf8')) as LabState;
}

/** Tears the lab down (its processes by PID, namespaces, route, directory) and forgets it. */
export async function removeLab(lab: Lab): Promise<void> {
  await labDown(lab);
  await rm(LAB_STATE, { force: true });
}

/** hosts:down after a crash: what the state file names, by PID and by name. */
export async function removeSavedLab(state: LabState): Promise<void> {
  for (const pid of state.pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone already
    }
  }
  // labDown kills what remains in the namespaces, deletes them and the route.
  await removeLab({ id: state.id, subnet: state.subnet, lock: state.lock, dir: state.dir, key: state.key, hosts: [] });
}

/** How to reach each host of a lab, for the one that brought it up to print. */
export function describeLab(state: LabState): string {
  const rows = state.hosts.map((h) => `  ${h.name}  ${h.ip}   a shell on it: npm run hosts:exec -- ssh ${h.name}\n`);
  return `${rows.join('')}  acinstall on ${state.hosts[0].name} (the first master): npm run hosts:exec -- acinstall status --store …\n`;
}

/**
 * The command line that runs `argv` from `host`'s network: acinstall and acpack from this checkout
 * (as they run on a first master: this machine's files, the host's network), `ssh NAME|IP` into a
 * host as root with the lab's key, anything else as it is.
 */
export function hostCommand(state: LabState, host: LabState['hosts'][number], argv: string[]): string[] {
  const [cmd, ...rest] = argv;
  const target = cmd === 'ssh' ? state.hosts.find((h) => h.name === rest[0] || h.ip === rest[0]) : undefined;
  const run = cmd === 'acinstall'
    ? [siteExecutable(nodeArch()), ...rest]
    : cmd === 'acpack'
    ? [process.execPath, '--import', 'tsx', join(ROOT, 'packer/main.ts'), ...rest]
    : target
      ? ['ssh', '-i', state.key, '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR', `root@${target.ip}`, ...rest.slice(1)]
      : argv;
  return ['nsenter', `--net=/run/netns/${host.netns}`, '--', ...run];
}
