import { open, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { AcpackError } from '../oci/errors.js';

/**
 * One acinstall at a time changes a cluster: two runs would race on the same nodes and journal.
 * The lock is a file holding the owner's PID; a lock whose owner is gone (killed, rebooted) is taken over.
 */
export async function withStoreLock<T>(store: string, what: string, fn: () => Promise<T>): Promise<T> {
  const file = join(store, 'acinstall.lock');
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fh = await open(file, 'wx');
      await fh.writeFile(`${process.pid} ${what}\n`);
      await fh.close();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const [pid, ...rest] = (await readFile(file, 'utf8').catch(() => '')).trim().split(' ');
      if (alive(Number(pid))) throw new AcpackError('BUSY', `another acinstall (PID ${pid}, ${rest.join(' ') || 'unknown'}) is working on this cluster: wait for it, or stop it`);
      await rm(file, { force: true });
      continue;
    }
    try {
      return await fn();
    } finally {
      await rm(file, { force: true });
    }
  }
  throw new AcpackError('BUSY', `cannot take ${file}`);
}

function alive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
