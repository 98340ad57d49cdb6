import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
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
import { ACINSTALL, tempDir } from '../helpers/env.js';

/**
 * The registry as the site's single-executable runtime runs it: no mmap addon, every blob streamed
 * from its file. ACPACK_NO_MMAP makes this process take that path (each test file has its own modules).
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

it("acinstall's single executable serves from files even beside a checkout with the addon: none is mapped in its process", async () => {
  const port = await freePort();
  const storeRoot = join(work.dir, 'store');
  const serve = spawn(ACINSTALL, ['serve', '--store', storeRoot, '--listen', `127.0.0.1:${port}`, '--workers', '1', '--quiet'], { stdio: 'ignore', env: { ...process.env, ACPACK_NO_MMAP: '' } });
  try {
    const url = `http://127.0.0.1:${port}${path(blobs.big)}`;
    let res;
    for (let i = 0; i < 300 && !res; i++) res = await request(url).catch(() => sleep(100).then(() => undefined));
    expect(Buffer.from(await res!.body.arrayBuffer()).equals(blobs.big)).toBe(true);
    const maps = await readFile(`/proc/${serve.pid}/maps`, 'utf8');
    expect(maps).not.toMatch(/\.node$/m);
    expect(maps).not.toContain(sha256(blobs.big).slice(7));
  } finally {
    serve.kill('SIGTERM');
  }
});
