import { afterEach, beforeEach, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { withStoreLock } from '../../installer/store-lock.js';
import { tempDir } from '../helpers/env.js';

let t: Awaited<ReturnType<typeof tempDir>>;
beforeEach(async () => (t = await tempDir()));
afterEach(() => t.cleanup());

it('lets one acinstall at a time work on a store, and frees it after', async () => {
  let release!: () => void;
  const first = withStoreLock(t.dir, 'installing a.tar.zst', () => new Promise<string>((r) => (release = () => r('first done'))));
  await new Promise((r) => setTimeout(r, 20));
  await expect(withStoreLock(t.dir, 'deleting 10.0.0.5', async () => 'second')).rejects.toMatchObject({
    code: 'BUSY',
    message: expect.stringContaining(`PID ${process.pid}, installing a.tar.zst`),
  });
  release();
  expect(await first).toBe('first done');
  expect(existsSync(join(t.dir, 'acinstall.lock'))).toBe(false);
  expect(await withStoreLock(t.dir, 'again', async () => 'free again')).toBe('free again');
});

it('takes over the lock of an acinstall that died', async () => {
  const dead = spawnSync('sh', ['-c', 'echo $$']).stdout.toString().trim(); // a PID that has exited
  await writeFile(join(t.dir, 'acinstall.lock'), `${dead} installing old.tar.zst\n`);
  expect(await withStoreLock(t.dir, 'installing new.tar.zst', async () => 'ran')).toBe('ran');
});
