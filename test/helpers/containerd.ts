import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { stopChild } from '../../demo/processes.js';

/** A real containerd (Debian's) with its own root, state and socket under `dir`, without the CRI plugin. */
export interface Containerd {
  socket: string;
  process: ChildProcess;
  stop(): Promise<void>;
}

export async function startContainerd(dir: string): Promise<Containerd> {
  await mkdir(dir, { recursive: true });
  const socket = join(dir, 'containerd.sock');
  const config = join(dir, 'config.toml');
  await writeFile(
    config,
    `version = 2
root = "${join(dir, 'root')}"
state = "${join(dir, 'state')}"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "${socket}"
[ttrpc]
  address = "${socket}.ttrpc"
`,
  );
  let log = '';
  const child = spawn('containerd', ['--config', config], { stdio: ['ignore', 'ignore', 'pipe'] });
  child.stderr!.on('data', (c: Buffer) => (log = (log + c.toString()).slice(-4000)));
  const stop = () => stopChild(child, 5000);
  for (let i = 0; i < 100 && !existsSync(socket); i++) {
    if (child.exitCode !== null) throw new Error(`containerd exited: ${log}`);
    await sleep(100);
  }
  if (!existsSync(socket)) {
    await stop();
    throw new Error(`containerd did not start: ${log}`);
  }
  return { socket, process: child, stop };
}

/** containerd's registry host configuration: `upstream` answered by `mirror`, and nothing else. */
export async function writeHostsToml(hostsDir: string, upstream: string, mirror: string): Promise<void> {
  const dir = join(hostsDir, upstream);
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'hosts.toml'), `server = "http://${upstream}"\n\n[host."http://${mirror}"]\n  capabilities = ["pull", "resolve"]\n`);
}
