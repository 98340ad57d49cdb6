import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { chmod, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { createReadStream } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import Database from 'better-sqlite3';
import { ContentStore } from '../../oci/store.js';
import { diskSync } from '../../oci/writeback.js';
import { sha256, type Digest } from '../../oci/digest.js';
import { bundle } from '../../packer/index.js';
import { parsePlatformList } from '../../arch/platform.js';
import { collectGarbage, createRegistryApp, importBundle, IndexDb, scrubStore } from '../../registry/index.js';
import { GC_MIN_AGE_MS } from '../../registry/gc.js';
import { ACINSTALL, ROOT, silent, tempDir, withRegistry } from '../helpers/env.js';
import { buildFixture, imageRef, pushFixture, writeManifest } from '../helpers/fixtures.js';

const run = promisify(execFile);
let t: Awaited<ReturnType<typeof tempDir>>;
beforeEach(async () => (t = await tempDir()));
afterEach(() => t.cleanup());

/** A separate process holding one of the store's locks (test/helpers/store-holder.ts); resolves once it holds it. */
async function holder(root: string, ...args: string[]): Promise<ChildProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'test/helpers/store-holder.ts'), root, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (c: Buffer) => c.toString().includes('held') && resolve());
    child.on('exit', (code) => reject(new Error(`holder exited ${code} before holding`)));
  });
  return child;
}

const exited = (c: ChildProcess) => new Promise((r) => (c.exitCode !== null || c.signalCode !== null ? r(c.exitCode) : c.on('exit', r)));

describe('the content store across processes', () => {
  it('never replaces a committed blob: a second commit of the digest keeps the first file, read-only', async () => {
    const store = await ContentStore.open(t.dir);
    const data = Buffer.from('layer bytes');
    const digest = await store.put(data);
    const first = await stat(store.path(digest));
    expect(first.mode & 0o777).toBe(0o444);
    const w = await store.writer('again', { digest });
    await w.write(data);
    await w.commit();
    expect(w.created).toBe(false);
    const after = await stat(store.path(digest));
    expect(after.ino).toBe(first.ino);
    expect(await readFile(store.path(digest))).toEqual(data);
    expect(await readdir(join(t.dir, 'ingest'))).toEqual([]);
  });

  it('lets one writer per ingest ref at a time, across processes; a waiter gets it when the holder dies', async () => {
    const store = await ContentStore.open(t.dir);
    const child = await holder(t.dir, 'ref', 'import-x', '60000');
    try {
      await expect(store.writer('import-x', {})).rejects.toMatchObject({ code: 'INGEST_LOCKED' });
      const waiting = store.writer('import-x', {}, { waitMs: 30_000 });
      await new Promise((r) => setTimeout(r, 300));
      child.kill('SIGKILL'); // the kernel drops a dead process's locks
      const w = await waiting;
      expect(w.offset).toBe('partial'.length); // what the dead writer had flushed is there to resume
      await w.close();
    } finally {
      child.kill('SIGKILL');
      await exited(child);
    }
  });

  it('holds the store lock across processes, and waiting for it never blocks the event loop', async () => {
    const store = await ContentStore.open(t.dir);
    const child = await holder(t.dir, 'store', '800');
    let ticks = 0;
    const timer = setInterval(() => ticks++, 10);
    const started = Date.now();
    await store.exclusive(() => {});
    const waited = Date.now() - started;
    clearInterval(timer);
    await exited(child);
    expect(waited).toBeGreaterThan(300);
    expect(ticks).toBeGreaterThan(waited / 10 / 3);
  });

  it('fails the commit when a background write-back reported EIO, and stores nothing', async () => {
    const store = await ContentStore.open(t.dir);
    const data = Buffer.alloc(40 << 20, 7); // past the 16 MiB write-back mark
    const real = diskSync.datasync;
    diskSync.datasync = async () => {
      throw Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' });
    };
    try {
      // A resumed write at an offset that is not block-aligned: its bytes go through the page cache
      // (full stages from an aligned offset go with O_DIRECT, which needs no write-back).
      const first = await store.writer('eio', { digest: sha256(data), size: data.length });
      await first.write(data.subarray(0, 1000));
      await first.close();
      const w = await store.writer('eio', { digest: sha256(data), size: data.length });
      expect(w.offset).toBe(1000);
      for (let at = 1000; at < data.length; at += 1 << 20) await w.write(data.subarray(at, at + (1 << 20)));
      await expect(w.commit()).rejects.toMatchObject({ code: 'WRITE_FAILED', message: expect.stringContaining('EIO') });
    } finally {
      diskSync.datasync = real;
    }
    expect(await store.has(sha256(data))).toBe(false);
    expect(await readdir(join(t.dir, 'ingest'))).toEqual([]);
  });

  it('writes nothing others may write, whatever the umask', async () => {
    const old = process.umask(0);
    try {
      const store = await ContentStore.open(join(t.dir, 's'));
      await store.put(Buffer.from('a blob'));
      const w = await store.writer('in-flight', {});
      await w.write(Buffer.from('half'));
      await w.close();
      new IndexDb(store.root).close();
      const { stdout } = await run('find', [store.root, '-perm', '-o+w']);
      expect(stdout).toBe('');
    } finally {
      process.umask(old);
    }
  });
});

describe('the scrub', () => {
  it('paces its reads with a rate (to run beside a serving registry) and still finds what it must', async () => {
    const store = await ContentStore.open(t.dir);
    const db = new IndexDb(t.dir);
    try {
      await store.put(randomBytes(8 << 20));
      const started = Date.now();
      const r = await scrubStore(store, db, { rate: 4e6 });
      expect(r).toMatchObject({ blobs: 1, bytes: 8 << 20, problems: [] });
      expect(Date.now() - started).toBeGreaterThanOrEqual(1500); // 8 MiB at 4 MB/s: ~2 s, never faster
    } finally {
      db.close();
    }
  });
});

describe('collection and rollback beside other writers', () => {
  it('gc re-checks each blob under the lock: a manifest recorded after the mark keeps its blobs', async () => {
    const store = await ContentStore.open(t.dir);
    const db = new IndexDb(t.dir);
    try {
      const layer = await store.put(Buffer.from('a layer nobody names yet'));
      const manifest = await store.put(Buffer.from(JSON.stringify({ schemaVersion: 2, layers: [{ digest: layer }] })));
      const later = Date.now() + GC_MIN_AGE_MS * 2;
      let release!: () => void;
      // Hold the store lock, so the collection marks, then waits at its first deletion.
      const held = store.exclusive(() => new Promise<void>((r) => (release = r)));
      await new Promise((r) => setTimeout(r, 20));
      const gc = collectGarbage(store, db, { now: later });
      await new Promise((r) => setTimeout(r, 50));
      db.record({ repoManifests: [{ repo: 'x/app', digest: manifest }], manifestRefs: [{ manifest, children: [layer] }] });
      release();
      await held;
      expect((await gc).blobs).toBe(0);
      expect(await store.has(layer)).toBe(true);
      db.deleteManifest('x/app', manifest);
      expect((await collectGarbage(store, db, { now: later })).blobs).toBe(2);
      expect(await store.has(layer)).toBe(false);
    } finally {
      db.close();
    }
  });

  it('gc spares a blob found by HEAD or linked within the grace period', async () => {
    const store = await ContentStore.open(t.dir);
    const db = new IndexDb(t.dir);
    try {
      const found = await store.put(Buffer.from('found by HEAD'));
      const linked = await store.put(Buffer.from('linked by a push'));
      const old = new Date(Date.now() - 2 * GC_MIN_AGE_MS);
      for (const d of [found, linked]) await import('node:fs/promises').then((fs) => fs.utimes(store.path(d), old, old));
      const { app } = await createRegistryApp({ storeRoot: t.dir });
      db.record({ blobLinks: [{ repo: 'acpack.local/x/app', digest: found }] }, Date.now() - 2 * GC_MIN_AGE_MS);
      db.record({ blobLinks: [{ repo: 'acpack.local/x/app', digest: linked }] });
      const server = app.listen(0, '127.0.0.1');
      await new Promise((r) => server.once('listening', r));
      try {
        const port = (server.address() as { port: number }).port;
        expect((await fetch(`http://127.0.0.1:${port}/v2/x/app/blobs/${found}`, { method: 'HEAD' })).status).toBe(200);
      } finally {
        server.close();
      }
      expect((await collectGarbage(store, db)).blobs).toBe(0);
      expect((await collectGarbage(store, db, { now: Date.now() + 2 * GC_MIN_AGE_MS })).blobs).toBe(2);
    } finally {
      db.close();
    }
  });
});

describe('imports and scrubs of a real bundle', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let bundlePath: string;
  beforeAll(async () => {
    work = await tempDir();
    const source = await withRegistry();
    const fx = await buildFixture('integrity');
    await pushFixture(source.registry.host, fx);
    const m = await writeManifest(work.dir, { images: [imageRef(source.registry.host, fx.web), imageRef(source.registry.host, fx.db)] });
    bundlePath = join(work.dir, 'b.tar.zst');
    await bundle({ manifestFile: m, platforms: parsePlatformList('amd64,arm64'), cacheDir: join(work.dir, 'cache'), reporter: silent, sourceDateEpoch: 0, out: bundlePath });
    await source.cleanup();
  });
  afterAll(() => work?.cleanup());

  it('a failed import removes only the blobs it created that nobody took up since, and no ingest data stays', async () => {
    const store = join(t.dir, 'store');
    const whole = await readFile(bundlePath);
    // The cut import reads half the bundle, then stalls in the middle of a blob. The whole import
    // meanwhile passes over the blobs the cut one created (marking them as used), and waits for the
    // blob being written. Only then is the cut one's medium pulled: its rollback must spare what the
    // whole import now relies on, or that import fails at the end with a missing blob.
    let seen = 0;
    const stalled = async () => {
      for (let last = -1; seen === 0 || seen !== last; ) {
        last = seen;
        await new Promise((r) => setTimeout(r, 300));
      }
    };
    const cut = Readable.from(
      (async function* () {
        yield whole.subarray(0, whole.length >> 1);
        await stalled();
        throw new Error('the medium was pulled');
      })(),
    );
    const second = importBundle(cut, store, undefined, 'cut bundle').then(
      () => 'imported',
      (err) => err.message as string,
    );
    await new Promise((r) => setTimeout(r, 300));
    await importBundle(createReadStream(bundlePath), store, (n) => (seen += n));
    expect(await second).toMatch(/nothing was imported/);
    expect(await readdir(join(store, 'ingest'))).toEqual([]);
    const db = new IndexDb(store);
    try {
      const report = await scrubStore(await ContentStore.open(store), db);
      expect(report.problems).toEqual([]);
      expect(report.blobs).toBeGreaterThan(5);
    } finally {
      db.close();
    }
  });

  it('acinstall verify --store names a corrupt blob, a stray file and a dangling link; --repair quarantines them; a re-import heals', async () => {
    const store = join(t.dir, 'store');
    await importBundle(bundlePath, store);
    const cli = (...args: string[]) =>
      run(ACINSTALL, ['verify', '--store', store, ...args]).then(
        (r) => ({ code: 0, out: r.stdout }),
        (e) => ({ code: e.code as number, out: `${e.stdout}${e.stderr}` }),
      );
    expect(await cli()).toMatchObject({ code: 0, out: expect.stringContaining('all good') });

    const s = await ContentStore.open(store);
    const sizes = await Promise.all((await s.list()).map(async (d) => ({ d, size: (await s.size(d))! })));
    const layer = sizes.sort((a, b) => b.size - a.size)[0].d; // the biggest: a layer
    await chmod(s.path(layer), 0o644);
    await writeFile(s.path(layer), Buffer.from('bit rot'), { flag: 'r+' });
    await writeFile(join(store, 'blobs/sha256/leftover.tmp'), 'x');
    const db = new IndexDb(store);
    const gone = `sha256:${'d'.repeat(64)}` as Digest;
    db.record({ blobLinks: [{ repo: 'acpack.local/x/app', digest: gone }] });
    db.close();

    const found = await cli();
    expect(found.code).toBe(1);
    expect(found.out).toContain(`corrupt: blob ${layer}`);
    expect(found.out).toContain('stray: blobs/sha256/leftover.tmp');
    expect(found.out).toContain(`dangling: acpack.local/x/app links blob ${gone}`);

    const repaired = await cli('--repair');
    expect(repaired.out).toContain(`corrupt (repaired): blob ${layer}`);
    expect(await s.has(layer)).toBe(false);
    expect((await readdir(join(store, 'quarantine'))).length).toBe(2);
    // The corrupt layer is gone now: the manifests that need it are named until the bundle comes again.
    const missing = await cli();
    expect(missing).toMatchObject({ code: 1, out: expect.stringContaining(`needs blob ${layer}`) });
    await importBundle(bundlePath, store);
    expect(await cli()).toMatchObject({ code: 0, out: expect.stringContaining('all good') });
  }, 180_000); // six CLI runs: slow to start on a busy machine

  it('re-hashes a blob the store already holds as it passes: a bundle with other bytes under that digest is refused', async () => {
    const store = join(t.dir, 'store');
    await importBundle(bundlePath, store);
    const s = await ContentStore.open(store);
    const sizes = await Promise.all((await s.list()).map(async (d) => ({ d, size: (await s.size(d))! })));
    const layer = sizes.sort((a, b) => b.size - a.size)[0].d;
    // Flip one byte of that blob inside the bundle (keeping the size): the store's copy is good, the bundle's is not.
    const tarPath = join(t.dir, 'b.tar');
    await run('sh', ['-c', `zstd -dc '${bundlePath}' > '${tarPath}'`]);
    const tar = await readFile(tarPath);
    const at = tar.indexOf(Buffer.from(`blobs/sha256/${layer.slice(7)}`)) + 512 + 100;
    tar[at] ^= 0xff;
    await writeFile(tarPath, tar);
    await run('sh', ['-c', `zstd -q -f '${tarPath}' -o '${tarPath}.zst'`]);
    await expect(importBundle(`${tarPath}.zst`, store)).rejects.toMatchObject({ code: 'DIGEST_MISMATCH' });
  });
});

describe('stores written by the previous release', () => {
  it('a store written by a newer acinstall is refused, not rewritten', async () => {
    new IndexDb(t.dir).close();
    const raw = new Database(join(t.dir, 'index.db'));
    raw.pragma('user_version = 99');
    raw.close();
    expect(() => new IndexDb(t.dir)).toThrow(expect.objectContaining({ code: 'STORE_TOO_NEW' }));
    const again = new Database(join(t.dir, 'index.db'));
    expect(again.pragma('user_version', { simple: true })).toBe(99);
    again.close();
  });

  it('open and are migrated in place: blob links and manifest references rebuilt, every blob still served', async () => {
    await run('tar', ['-xf', join(ROOT, 'test/fixtures/store-v1.tar'), '-C', t.dir]);
    const raw = new Database(join(t.dir, 'index.db'));
    expect(raw.pragma('user_version', { simple: true })).toBe(0);
    expect(raw.prepare("SELECT name FROM sqlite_master WHERE name = 'blob_links'").get()).toBeUndefined();
    const repos = (raw.prepare('SELECT DISTINCT repo FROM repo_manifests').all() as { repo: string }[]).map((r) => r.repo);
    raw.close();

    const db = new IndexDb(t.dir);
    const store = await ContentStore.open(t.dir);
    try {
      const links = db.allBlobLinks();
      expect(new Set(links.map((l) => l.repo))).toEqual(new Set(repos));
      // Every blob in the old store is reachable from a manifest, so nothing is collectable...
      const all = await store.list();
      const live = db.reachableBlobs();
      for (const d of all) expect(live.has(d), d).toBe(true);
      expect((await collectGarbage(store, db, { now: Date.now() + 2 * GC_MIN_AGE_MS })).blobs).toBe(0);
      // ...and every layer is served under its repository.
      const { app } = await createRegistryApp({ storeRoot: t.dir });
      const server = app.listen(0, '127.0.0.1');
      await new Promise((r) => server.once('listening', r));
      try {
        const port = (server.address() as { port: number }).port;
        for (const { repo, digest } of links) {
          const r = await fetch(`http://127.0.0.1:${port}/v2/${repo.replace(/:(\d+)\//, '_$1/')}/blobs/${digest}`);
          expect(r.status, `${repo} ${digest}`).toBe(200);
          expect(sha256(Buffer.from(await r.arrayBuffer()))).toBe(digest);
        }
      } finally {
        server.close();
      }
      expect((await scrubStore(store, db)).problems).toEqual([]);
    } finally {
      db.close();
    }
    const again = new Database(join(t.dir, 'index.db'));
    expect(again.pragma('user_version', { simple: true })).toBe(4);
    again.close();
  });
});
