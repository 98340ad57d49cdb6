import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import bcrypt from 'bcryptjs';
import { DOCKER_REGISTRY_BIN, freePort, startSourceRegistry } from '../../demo/source-registry.js';
import { stopChild } from '../../demo/processes.js';
import { pushImage, type SampleImage } from '../../demo/samples.js';

/**
 * Debian's docker-registry on 127.0.0.1 with htpasswd users (it answers 401 with a Basic challenge),
 * holding `images`: they are pushed into an open registry on the same storage first, which is then
 * stopped, since our sample pusher does not log in.
 */
export async function startAuthRegistry(dir: string, users: Record<string, string>, images: SampleImage[]): Promise<{ host: string; stop(): Promise<void> }> {
  const open = await startSourceRegistry(join(dir, 'open'));
  try {
    for (const image of images) await pushImage(open.host, image);
  } finally {
    await open.stop();
  }
  await writeFile(join(dir, 'htpasswd'), Object.entries(users).map(([user, password]) => `${user}:${bcrypt.hashSync(password, 4)}\n`).join(''));
  const host = `127.0.0.1:${await freePort()}`;
  // Our own config, loopback only (the package's default listens everywhere).
  await writeFile(
    join(dir, 'config.yml'),
    `version: 0.1\nlog: {level: error, accesslog: {disabled: true}}\nstorage: {filesystem: {rootdirectory: ${join(dir, 'open', 'data')}}, redirect: {disable: true}}\nauth: {htpasswd: {realm: test, path: ${join(dir, 'htpasswd')}}}\nhttp: {addr: '${host}'}\n`,
  );
  const child = spawn(DOCKER_REGISTRY_BIN, ['serve', join(dir, 'config.yml')], { stdio: 'ignore' });
  const stop = () => stopChild(child);
  for (let i = 0; i < 100; i++) {
    if ((await fetch(`http://${host}/v2/`).then((r) => r.status, () => 0)) === 401) return { host, stop };
    await sleep(100);
  }
  await stop();
  throw new Error(`docker-registry with htpasswd did not answer on ${host} within 10 s`);
}
