import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from '../../demo/source-registry.js';
import { stopChild } from '../../demo/processes.js';
import { ACINSTALL, tempDir } from '../helpers/env.js';

let work: Awaited<ReturnType<typeof tempDir>>;
let child: ChildProcess;
let base: string;

beforeAll(async () => {
  work = await tempDir();
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  await mkdir(join(work.dir, 'store')); // an empty store, made on purpose: serve refuses a missing one
  child = spawn(ACINSTALL, ['serve', '--store', join(work.dir, 'store'), '--listen', `127.0.0.1:${port}`, '--workers', '2', '--quiet'], {
    stdio: 'ignore',
  });
  for (let i = 0; i < 150; i++) {
    if ((await fetch(`${base}/v2/`).then((r) => r.status, () => 0)) === 200) return;
    await sleep(100);
  }
  throw new Error('acinstall serve did not start');
});

afterAll(async () => {
  if (child) await stopChild(child, 5000);
  await work?.cleanup();
});

describe('acinstall serve with two workers', () => {
  it('counts requests across every worker in /metrics', async () => {
    for (let i = 0; i < 20; i++) expect((await fetch(`${base}/v2/_catalog`, { headers: { connection: 'close' } })).status).toBe(200);
    for (let i = 0; i < 3; i++) expect((await fetch(`${base}/v2/nope/manifests/1`, { headers: { connection: 'close' } })).status).toBe(404);
    const text = await (await fetch(`${base}/metrics`)).text();
    expect(text).toMatch(/acpack_registry_requests_total\{route="catalog",method="GET",status="200"\} 20\b/);
    expect(text).toMatch(/acpack_registry_errors_total\{route="manifests",status="404"\} 3\b/);
  });
});

describe('a listen address that cannot be used', () => {
  it('is a clear error, not a crash', async () => {
    const { startRegistry } = await import('../../registry/index.js');
    const store = join(work.dir, 'bad-listen');
    await expect(startRegistry({ storeRoot: store, listen: 'garbage' })).rejects.toMatchObject({ code: 'BAD_ARGUMENT' });
    await expect(startRegistry({ storeRoot: store, listen: '127.0.0.1:99999' })).rejects.toMatchObject({ code: 'BAD_ARGUMENT' });
    const taken = base.replace('http://', '');
    await expect(startRegistry({ storeRoot: store, listen: taken })).rejects.toMatchObject({ code: 'LISTEN', message: expect.stringContaining('EADDRINUSE') });
  });
});
