import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { mkdir, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { stopChild } from './processes.js';

/** Debian's docker-registry (CNCF distribution 2.8), started by hand on 127.0.0.1 with our own config. */
export interface SourceRegistry {
  host: string;
  dir: string;
  process: ChildProcess;
  stop(): Promise<void>;
}

export const DOCKER_REGISTRY_BIN = '/usr/bin/docker-registry';

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

export async function startSourceRegistry(dir: string, port?: number): Promise<SourceRegistry> {
  if (!existsSync(DOCKER_REGISTRY_BIN)) {
    throw new Error(`${DOCKER_REGISTRY_BIN} is missing: apt-get install docker-registry`);
  }
  const p = port ?? (await freePort());
  const host = `127.0.0.1:${p}`;
  await mkdir(join(dir, 'data'), { recursive: true });
  // The package's default config listens on every interface; ours binds loopback only.
  const config = `version: 0.1
log:
  level: error
  accesslog: {disabled: true}
storage:
  filesystem: {rootdirectory: ${join(dir, 'data')}}
  delete: {enabled: true}
  redirect: {disable: true}
http:
  addr: ${host}
`;
  await writeFile(join(dir, 'config.yml'), config);
  const child = spawn(DOCKER_REGISTRY_BIN, ['serve', join(dir, 'config.yml')], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => (stderr = (stderr + c.toString()).slice(-4000)));
  const stop = () => stopChild(child);
  for (let i = 0; i < 100; i++) {
    if (child.exitCode !== null) throw new Error(`docker-registry exited: ${stderr.trim()}`);
    try {
      const res = await fetch(`http://${host}/v2/`);
      if (res.ok) return { host, dir, process: child, stop };
    } catch {
      // not listening yet
    }
    await sleep(100);
  }
  await stop();
  throw new Error(`docker-registry did not answer on ${host} within 10 s: ${stderr.trim()}`);
}
