import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFile, stat } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent, request } from 'undici';
import { sha256 } from '../../oci/digest.js';
import { ContentStore } from '../../oci/store.js';
import { ensureTls, IndexDb, startRegistry, type RunningRegistry } from '../../registry/index.js';
import { mappedBlobs } from '../../registry/mapped-blobs.js';
import { noise } from '../../demo/samples.js';
import { freePort } from '../../demo/source-registry.js';
import { nodeArch } from '../../arch/platform.js';
import { siteAddon } from '../../runtime/site-runtime.js';
import { ACINSTALL, tempDir } from '../helpers/env.js';

/**
 * The registry without the mmap addon, every blob streamed from its file: what the site's single
 * executable falls back to when its store cannot hold the addon it carries (a noexec mount).
 * ACPACK_NO_MMAP makes this process take that path (each test file has its own modules); the last
 * tests run the executable itself, with its addon and without.
 */
process.env.ACPACK_NO_MMAP = '1';

const REPO = 'registry.example/files';
let work: Awaited<ReturnType<typeof tempDir>>;
let plain: RunningRegistry;
let tls: RunningRegistry;
let agent: Agent;
const blobs = { big: noise('files-big', (5 << 20) + 123), small: noise('files-small', 1000), one: Buffer.from('x'), empty: Buffer.alloc(0) };

beforeAll(async () => {
  work = await tempDir();
  const storeRoot = join(work.dir, 'store');
  const store = await ContentStore.open(storeRoot);
  for (const b of Object.values(blobs)) await store.put(b);
  const db = new IndexDb(storeRoot);
  db.record({ blobLinks: Object.values(blobs).map((b) => ({ repo: REPO, digest: sha256(b) })) });
  db.close();
  const files = await ensureTls(storeRoot, { hostnames: [], ips: ['127.0.0.1'] });
  plain = await startRegistry({ storeRoot, listen: '127.0.0.1:0' });
  tls = await startRegistry({ storeRoot, listen: '127.0.0.1:0', tls: files });
  agent = new Agent({ connect: { ca: files.ca } });
});

afterAll(async () => {
  await plain?.close();
  await tls?.close();
  await agent?.close();
  await work?.cleanup();
});

const path = (b: Buffer) => `/v2/${REPO}/blobs/${sha256(b)}`;

async function get(reg: RunningRegistry, b: Buffer, headers: Record<string, string> = {}, method: 'GET' | 'HEAD' = 'GET') {
  const r = await request(`${reg.url}${path(b)}`, { method, headers, dispatcher: agent });
  return { status: r.statusCode, headers: r.headers, body: Buffer.from(await r.body.arrayBuffer()) };
}

it('takes the file path: no mappings in this process', async () => {
  expect(mappedBlobs(await ContentStore.open(join(work.dir, 'store')))).toBeUndefined();
});

describe.each([
  ['plain HTTP', () => plain],
  ['TLS', () => tls],
])('blobs from files over %s', (_name, reg) => {
  it('whole, every size, byte for byte', async () => {
    for (const b of Object.values(blobs)) {
      const r = await get(reg(), b);
      expect(r.status).toBe(200);
      expect(r.headers['content-length']).toBe(String(b.length));
      expect(r.body.equals(b)).toBe(true);
    }
  });

  it('by range, and HEAD without a body', async () => {
    const b = blobs.big;
    const part = await get(reg(), b, { range: 'bytes=1048570-2097160' });
    expect(part.status).toBe(206);
    expect(part.headers['content-range']).toBe(`bytes 1048570-2097160/${b.length}`);
    expect(part.body.equals(b.subarray(1048570, 2097161))).toBe(true);
    expect((await get(reg(), b, { range: 'bytes=-7' })).body.equals(b.subarray(b.length - 7))).toBe(true);
    expect((await get(reg(), b, { range: `bytes=${b.length}-` })).status).toBe(416);
    const head = await get(reg(), b, {}, 'HEAD');
    expect([head.status, head.headers['content-length'], head.body.length]).toEqual([200, String(b.length), 0]);
  });

  it('many at once', async () => {
    const all = await Promise.all(Array.from({ length: 40 }, (_, i) => get(reg(), i % 2 ? blobs.big : blobs.small)));
    expect(all.filter((r, i) => r.status !== 200 || !r.body.equals(i % 2 ? blobs.big : blobs.small))).toHaveLength(0);
  });
});

it('outlives clients that leave mid-blob', async () => {
  const [host, port] = plain.host.split(':');
  for (let i = 0; i < 5; i++) {
    await new Promise<void>((resolve, reject) => {
      const sock = connect(Number(port), host, () => sock.write(`GET ${path(blobs.big)} HTTP/1.1\r\nHost: ${plain.host}\r\n\r\n`));
      let got = 0;
      sock.on('data', (c) => {
        got += c.length;
        if (got > 64 << 10) {
          sock.destroy();
          resolve();
        }
      });
      sock.on('error', reject);
    });
  }
  expect((await get(plain, blobs.big)).body.equals(blobs.big)).toBe(true);
});

/** `acinstall serve` on the files' store, as `spawnServe` starts it, until `fn` is done with its process and what it wrote. */
async function withExecutable(spawnServe: (storeRoot: string, port: number) => ChildProcess, fn: (pid: number, stderr: () => string) => Promise<void>): Promise<void> {
  const port = await freePort();
  const serve = spawnServe(join(work.dir, 'store'), port);
  let stderr = '';
  serve.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  try {
    const url = `http://127.0.0.1:${port}${path(blobs.big)}`;
    let res;
    for (let i = 0; i < 300 && !res; i++) res = await request(url).catch(() => sleep(100).then(() => undefined));
    expect(res, stderr).toBeDefined();
    expect(Buffer.from(await res!.body.arrayBuffer()).equals(blobs.big)).toBe(true);
    await fn(serve.pid!, () => stderr);
  } finally {
    serve.kill('SIGTERM');
  }
}

/** What serve wrote to stderr besides the line saying where it serves. */
const besidesServing = (stderr: string) => stderr.split('\n').filter((l) => l && !l.startsWith('acinstall: serving '));

const serveArgs = (storeRoot: string, port: number) => ['serve', '--store', storeRoot, '--listen', `127.0.0.1:${port}`, '--workers', '1', '--quiet'];

it("acinstall's single executable maps blobs with the addon it carries, written into the store, never a checkout's", async () => {
  await withExecutable(
    (storeRoot, port) => spawn(ACINSTALL, serveArgs(storeRoot, port), { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ACPACK_NO_MMAP: '' } }),
    async (pid, stderr) => {
      const maps = await readFile(`/proc/${pid}/maps`, 'utf8');
      const addons = [...new Set([...maps.matchAll(/ (\/\S+\.node)$/gm)].map((m) => m[1]))];
      // The one this arch's executable was built with, named by its digest.
      const carried = `map_file-${sha256(await readFile(siteAddon(nodeArch()))).slice(7)}.node`;
      expect(addons).toEqual([join(work.dir, 'store', '.runtime', carried)]);
      expect((await stat(addons[0])).mode & 0o777).toBe(0o755);
      expect(maps).toContain(sha256(blobs.big).slice(7));
      expect(besidesServing(stderr())).toEqual([]);
    },
  );
});

it('on a noexec store the executable serves from files, and says so in one line', async () => {
  // The store bind-mounted noexec over itself, in a mount namespace of the server's own.
  await withExecutable(
    (storeRoot, port) =>
      spawn('unshare', ['-m', 'sh', '-c', 'mount --bind "$0" "$0" && mount -o remount,bind,noexec "$0" && exec "$@"', storeRoot, ACINSTALL, ...serveArgs(storeRoot, port)], {
        stdio: ['ignore', 'ignore', 'pipe'],
        env: { ...process.env, ACPACK_NO_MMAP: '' },
      }),
    async (pid, stderr) => {
      const mounts = (await readFile(`/proc/${pid}/mountinfo`, 'utf8')).split('\n').map((l) => l.split(' '));
      expect(mounts.find((m) => m[4] === join(work.dir, 'store'))?.[5]).toContain('noexec');
      const maps = await readFile(`/proc/${pid}/maps`, 'utf8');
      // The loader leaves the first (read-only) page range of the file it failed to load mapped; none is code.
      expect(maps.split('\n').filter((l) => l.endsWith('.node') && l.split(' ')[1].includes('x'))).toEqual([]);
      expect(maps).not.toContain(sha256(blobs.big).slice(7));
      expect(besidesServing(stderr())).toEqual([expect.stringMatching(/^acinstall: blobs are read from their files, not mapped: the mmap addon does not load from .*failed to map segment/)]);
    },
  );
});
