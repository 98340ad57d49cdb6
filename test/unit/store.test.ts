import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ContentStore } from '../../oci/store.js';
import { sha256 } from '../../oci/digest.js';
import { pieceHashes } from '../../p2p/pieces.js';
import { ROOT, tempDir } from '../helpers/env.js';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

let t: Awaited<ReturnType<typeof tempDir>>;
let store: ContentStore;
beforeEach(async () => {
  t = await tempDir();
  store = await ContentStore.open(t.dir);
});
afterEach(() => t.cleanup());

const data = Buffer.from('hello content store');
const digest = sha256(data);

describe('ContentStore', () => {
  it('makes a blob visible only on a verified commit', async () => {
    const w = await store.writer('r1', { digest, size: data.length });
    await w.write(data.subarray(0, 5));
    expect(await store.has(digest)).toBe(false);
    await w.write(data.subarray(5));
    await w.commit();
    expect(await store.has(digest)).toBe(true);
    expect(await readFile(store.path(digest))).toEqual(data);
    expect(await readdir(join(t.dir, 'ingest'))).toEqual([]);
  });

  it('stores what it was given, byte for byte, and its piece hashes, whether it hashes on the hashing thread (O_DIRECT stages) or here (a resumed write)', async () => {
    // 13 MiB and a tail, in chunks that cut across the 4 MiB stages; the chunk's memory reused (as the bundle reader does).
    const big = Buffer.alloc(13 * (1 << 20) + 123);
    for (let i = 0; i + 4 <= big.length; i += 4) big.writeUInt32LE((i * 2654435761) >>> 0, i);
    const want = sha256(big);
    const scratch = Buffer.alloc(777_777);
    const feed = async (w: Awaited<ReturnType<ContentStore['writer']>>, from: number) => {
      for (let at = from; at < big.length; at += scratch.length) {
        const n = big.copy(scratch, 0, at, at + scratch.length);
        await w.write(scratch.subarray(0, n));
        scratch.fill(0xee); // whatever the writer kept a reference to is now wrong
      }
    };
    // As the bundle reader decompresses: into the writer's own memory, less than it offers at times.
    const fill = async (w: Awaited<ReturnType<ContentStore['writer']>>, from: number) => {
      for (let at = from, i = 0; at < big.length; i++) {
        const room = await w.room();
        const n = big.copy(room, 0, at, at + Math.min(room.length, i % 2 ? 999_999 : room.length));
        at += n;
        await w.wrote(n);
      }
    };
    const whole = await store.writer('aligned', { digest: want, size: big.length }, { pieceHashes: true });
    await feed(whole, 0);
    await whole.commit();
    expect(sha256(await readFile(store.path(want)))).toBe(want);
    expect(whole.pieces?.equals(pieceHashes(big))).toBe(true);

    // A resumed write from an unaligned offset: every stage through the page cache.
    await store.delete(want);
    const first = await store.writer('resumed', { digest: want, size: big.length });
    await first.write(big.subarray(0, 5000));
    await first.close();
    const rest = await store.writer('resumed', { digest: want, size: big.length }, { pieceHashes: true });
    expect(rest.offset).toBe(5000);
    await feed(rest, 5000);
    await rest.commit();
    expect(sha256(await readFile(store.path(want)))).toBe(want);
    expect(rest.pieces?.equals(pieceHashes(big))).toBe(true);

    // Bytes put in place, fresh and resumed.
    for (const from of [0, 5000]) {
      await store.delete(want);
      if (from) {
        const cut = await store.writer('in-place', { digest: want, size: big.length });
        await cut.write(big.subarray(0, from));
        await cut.close();
      }
      const inPlace = await store.writer('in-place', { digest: want, size: big.length }, { pieceHashes: true });
      await fill(inPlace, from);
      await inPlace.commit();
      expect(sha256(await readFile(store.path(want)))).toBe(want);
      expect(inPlace.pieces?.equals(pieceHashes(big))).toBe(true);
    }

    // A corrupt source is caught on either thread.
    const bad = await store.writer('bad', { digest: want, size: big.length });
    await bad.write(Buffer.alloc(big.length));
    await expect(bad.commit()).rejects.toMatchObject({ code: 'DIGEST_MISMATCH' });
  });

  it('lets its process exit: a writer closed before it wrote anything leaves no hashing thread holding it open', async () => {
    // A file, not -e: a script given with -e exits at its end whatever it leaves behind.
    const script = join(t.dir, 'exits.mts');
    await writeFile(script, [
      `const { ContentStore } = await import(${JSON.stringify(join(ROOT, 'oci', 'store.ts'))});`,
      `const store = await ContentStore.open(${JSON.stringify(join(t.dir, 'exits'))});`,
      "const w = await store.writer('never-written', { size: 10 });",
      'await w.close();',
      "console.log('closed');",
    ].join('\n'));
    const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', script], { cwd: ROOT, timeout: 20_000 });
    expect(stdout.trim()).toBe('closed');
  });

  it('refuses content that does not match and keeps nothing', async () => {
    const w = await store.writer('r2', { digest, size: data.length, source: 'example.org/x:1' });
    await w.write(Buffer.from('hello CONTENT store'));
    await expect(w.commit()).rejects.toMatchObject({ code: 'DIGEST_MISMATCH', message: expect.stringContaining('from example.org/x:1') });
    expect(await store.has(digest)).toBe(false);
    expect(await readdir(join(t.dir, 'ingest'))).toEqual([]);
  });

  it('refuses more bytes than expected as soon as they arrive', async () => {
    const w = await store.writer('r3', { digest, size: 4 });
    await expect(w.write(data)).rejects.toMatchObject({ code: 'DIGEST_MISMATCH' });
    expect(await readdir(join(t.dir, 'ingest'))).toEqual([]);
    const inPlace = await store.writer('r3', { digest, size: 4 });
    data.copy(await inPlace.room());
    await expect(inPlace.wrote(data.length)).rejects.toMatchObject({ code: 'DIGEST_MISMATCH' });
    expect(await readdir(join(t.dir, 'ingest'))).toEqual([]);
  });

  it('resumes an interrupted write from where it stopped', async () => {
    const big = Buffer.alloc(3 << 20, 7);
    const d = sha256(big);
    const w1 = await store.writer('r4', { digest: d, size: big.length });
    await w1.write(big.subarray(0, 2 << 20));
    await w1.close(); // the process "dies" here
    const w2 = await store.writer('r4', { digest: d, size: big.length });
    expect(w2.offset).toBe(2 << 20);
    await w2.write(big.subarray(2 << 20));
    await w2.commit();
    expect(await store.rehash(d)).toBe(d);
  });

  it('keeps a short write for a later resume, and says so', async () => {
    const w = await store.writer('r5', { digest, size: data.length });
    await w.write(data.subarray(0, 3));
    await expect(w.commit()).rejects.toMatchObject({ code: 'BLOB_SHORT' });
    await w.close();
    const again = await store.writer('r5', { digest, size: data.length });
    expect(again.offset).toBe(3);
    await again.close();
  });

  it('allows one writer per ref at a time', async () => {
    const w = await store.writer('r6', { digest, size: data.length });
    await expect(store.writer('r6', { digest, size: data.length })).rejects.toMatchObject({ code: 'INGEST_LOCKED' });
    await w.close();
  });

  it('stores an unpinned blob under the digest of what arrived', async () => {
    const w = await store.writer('r7', {});
    await w.write(data);
    expect(await w.commit()).toBe(digest);
    expect(existsSync(store.path(digest))).toBe(true);
  });
});
