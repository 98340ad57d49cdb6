import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { createReadStream, existsSync } from 'node:fs';
import { readdir, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import tar from 'tar-stream';
import { bundle } from '../../packer/index.js';
import { parsePlatformList } from '../../arch/platform.js';
import { importBundle, IndexDb } from '../../registry/index.js';
import { zstdCompress } from '../helpers/zstd-stream.js';
import { ACINSTALL, silent, tempDir, withRegistry } from '../helpers/env.js';
import { buildFixture, imageRef, pushFixture, writeManifest, type Fixture } from '../helpers/fixtures.js';

const run = promisify(execFile);
let fx: Fixture;
let work: Awaited<ReturnType<typeof tempDir>>;
let bundlePath: string;
let tarPath: string;
let sourceHost: string;

beforeAll(async () => {
  work = await tempDir();
  const source = await withRegistry();
  sourceHost = source.registry.host;
  fx = await buildFixture('import');
  await pushFixture(source.registry.host, fx);
  const m = await writeManifest(work.dir, { images: [imageRef(source.registry.host, fx.web)] });
  bundlePath = join(work.dir, 'b.tar.zst');
  await bundle({ manifestFile: m, platforms: parsePlatformList('amd64'), cacheDir: join(work.dir, 'cache'), reporter: silent, sourceDateEpoch: 0, out: bundlePath });
  await source.cleanup();
  tarPath = join(work.dir, 'b.tar');
  await run('sh', ['-c', `zstd -dc '${bundlePath}' > '${tarPath}'`]);
});

afterAll(() => work?.cleanup());

/** The store's blobs and the index's tags, to compare before and after a refused import. */
async function snapshot(store: string) {
  const blobs = existsSync(join(store, 'blobs/sha256')) ? (await readdir(join(store, 'blobs/sha256'))).sort() : [];
  let tags: string[] = [];
  if (existsSync(join(store, 'index.db'))) {
    const db = new IndexDb(store);
    tags = db.allRepos().flatMap((r) => db.tags(r, 1000).map((t) => `${r}:${t}`));
    db.close();
  }
  return { blobs, tags };
}

/** Rewrites the bundle's tar entry by entry, letting `edit` change or add entries, then recompresses. */
async function rewrite(name: string, edit: (h: tar.Header, data: Buffer) => { header: tar.Header; data?: Buffer }[]): Promise<string> {
  const extract = tar.extract();
  const pack = tar.pack();
  const out = join(work.dir, name);
  const z = zstdCompress();
  const chunks: Buffer[] = [];
  z.on('data', (c: Buffer) => chunks.push(c));
  const done = new Promise((r) => z.on('end', r));
  pack.pipe(z);
  createReadStream(tarPath).pipe(extract);
  for await (const entry of extract) {
    const parts: Buffer[] = [];
    for await (const c of entry) parts.push(c as Buffer);
    for (const e of edit(entry.header, Buffer.concat(parts))) pack.entry(e.header, e.data ?? '');
  }
  pack.finalize();
  await done;
  await writeFile(out, Buffer.concat(chunks));
  return out;
}

describe('acinstall import refuses bad bundles and changes nothing', () => {
  it('a blob whose bytes do not match its name: the blobs it added are removed, the index untouched', async () => {
    const store = join(work.dir, 'store-mismatch');
    const before = await snapshot(store);
    // Every blob declared with its size, but the last one's bytes changed: the ones before it are committed first.
    const names = (await run('tar', ['-tf', tarPath])).stdout.trim().split('\n');
    const last = names[names.length - 1];
    const bad = await rewrite('mismatch.tar.zst', (h, data) => {
      if (h.name !== last) return [{ header: h, data }];
      const flipped = Buffer.from(data);
      flipped[flipped.length >> 1] ^= 0xff;
      return [{ header: h, data: flipped }];
    });
    await expect(importBundle(bad, store)).rejects.toMatchObject({ code: 'DIGEST_MISMATCH', message: expect.stringContaining('nothing was imported') });
    expect(await snapshot(store)).toEqual(before);
    expect(await readdir(join(store, 'ingest'))).toEqual([]);
  });

  it.each([
    ['a symlink', (h: tar.Header) => ({ ...h, name: `blobs/sha256/${'e'.repeat(64)}`, type: 'symlink' as const, linkname: '/etc/passwd', size: 0 })],
    ['a path with ..', (h: tar.Header) => ({ ...h, name: '../../etc/cron.d/x' })],
    ['an absolute path', (h: tar.Header) => ({ ...h, name: '/etc/passwd' })],
    ['a device', (h: tar.Header) => ({ ...h, name: `blobs/sha256/${'f'.repeat(64)}`, type: 'block-device' as const, size: 0 })],
  ])('an entry that is %s', async (_what, hostile) => {
    const bad = await rewrite(`hostile-${_what.replace(/\W/g, '')}.tar.zst`, (h, data) => {
      if (h.name !== 'index.json') return [{ header: h, data }];
      const extra = hostile(h);
      return [{ header: h, data }, { header: extra, data: extra.type === 'file' ? Buffer.from('x') : undefined }];
    });
    const store = join(work.dir, `store-${_what.replace(/\W/g, '')}`);
    await expect(importBundle(bad, store)).rejects.toMatchObject({ code: 'BAD_BUNDLE' });
    expect(await snapshot(store)).toEqual({ blobs: [], tags: [] });
  });

  it('an index.json whose digest points outside the store', async () => {
    const bad = await rewrite('escape-digest.tar.zst', (h, data) => {
      if (h.name !== 'index.json') return [{ header: h, data }];
      const index = JSON.parse(data.toString());
      index.manifests[0].digest = 'sha256:../../../../../../etc/hostname';
      const text = Buffer.from(JSON.stringify(index));
      return [{ header: { ...h, size: text.length }, data: text }];
    });
    const store = join(work.dir, 'store-escape');
    // bundle.json names index.json's digest: the edited one is refused before its entries are looked at.
    await expect(importBundle(bad, store)).rejects.toMatchObject({ code: 'BAD_BUNDLE', message: expect.stringMatching(/index\.json \(.*\) is not the one bundle\.json names/) });
    expect(await snapshot(store)).toEqual({ blobs: [], tags: [] });
  });

  it('an oversized metadata entry', async () => {
    const bad = await rewrite('huge-index.tar.zst', (h, data) =>
      h.name === 'index.json' ? [{ header: { ...h, size: 65 << 20 }, data: Buffer.alloc(65 << 20, 0x20) }] : [{ header: h, data }],
    );
    await expect(importBundle(bad, join(work.dir, 'store-huge'))).rejects.toThrow(/index\.json.*far more than metadata/);
  });
});

describe('acinstall import from standard input', () => {
  it('streams a bundle piped in', async () => {
    const store = join(work.dir, 'store-stdin');
    const child = spawn(ACINSTALL, ['import', '-', '--store', store], { stdio: ['pipe', 'pipe', 'pipe'] });
    createReadStream(bundlePath).pipe(child.stdin);
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c));
    let err = '';
    child.stderr.on('data', (c: Buffer) => (err += c));
    const code = await new Promise((r) => child.on('close', r));
    expect(code, err).toBe(0);
    expect(out).toMatch(/imported test v1: 1 reference, \d+ blobs/);
    expect((await snapshot(store)).tags).toEqual([imageRef(sourceHost, fx.web)]);
  });
});

describe('acinstall gc after an import', () => {
  it('keeps every blob the bundle needs, and removes an old blob nothing needs', async () => {
    const store = join(work.dir, 'store-gc');
    await importBundle(bundlePath, store);
    const stray = Buffer.from('nothing refers to me');
    const strayHex = createHash('sha256').update(stray).digest('hex');
    await writeFile(join(store, 'blobs/sha256', strayHex), stray);
    const before = await snapshot(store);
    // Everything two days old, so the one-hour grace spares nothing.
    const old = new Date(Date.now() - 2 * 86400_000);
    for (const f of before.blobs) await utimes(join(store, 'blobs/sha256', f), old, old);
    const acinstall = (...args: string[]) => run(ACINSTALL, [...args, '--store', store]);
    expect((await acinstall('gc', '--dry-run')).stdout).toMatch(/^would remove 1 blob \(20 bytes\) and 0 abandoned uploads/);
    expect((await snapshot(store)).blobs).toEqual(before.blobs);
    expect((await acinstall('gc')).stdout).toMatch(/^removed 1 blob /);
    const after = await snapshot(store);
    expect(after.blobs).toEqual(before.blobs.filter((b) => b !== strayHex));
    expect(after.tags).toEqual(before.tags);
    // Importing again marks the bundle's blobs as used now, so a collection running meanwhile spares them.
    await importBundle(bundlePath, store);
    for (const f of after.blobs) expect((await stat(join(store, 'blobs/sha256', f))).mtimeMs).toBeGreaterThan(Date.now() - 60_000);
  });
});
