import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Content } from '../../oci/content.js';
import { sha256 } from '../../oci/digest.js';
import { ContentStore } from '../../oci/store.js';
import { PieceStore } from '../../p2p/piece-store.js';
import { tempDir } from '../helpers/env.js';

/**
 * One suite for both content stores (oci/content.ts): the master's (oci/store.ts) and a node's peer
 * cache (p2p/piece-store.ts). What they promise alike: bytes are visible only under the digest
 * they hash to, read back exactly, and a failed write leaves nothing behind.
 */
const stores: [string, (dir: string) => Promise<Content>][] = [
  ['the local store', (dir) => ContentStore.open(dir)],
  ['the peer cache', (dir) => PieceStore.open(dir, 1 << 30)],
];

/** Every file under `dir`, relative: what a failed write must not add to. */
async function files(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) if (e.isFile() && !e.name.endsWith('lock')) out.push(join(e.parentPath, e.name).slice(dir.length));
  return out.sort();
}

describe.each(stores)('%s as a content store', (_name, open) => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let store: Content;
  const data = randomBytes(300_000);
  const blob = { digest: sha256(data), size: data.length };

  beforeEach(async () => {
    work = await tempDir('acpack-content-');
    store = await open(work.dir);
  });
  afterEach(() => work.cleanup());

  const put = async (ref: string, bytes: Buffer, expected = blob) => {
    const w = await store.writer(ref, expected);
    for (let at = 0; at < bytes.length; at += 65_536) await w.write(bytes.subarray(at, at + 65_536));
    return w.commit();
  };

  it('commits bytes under their digest and reads them back exactly, whole and by range', async () => {
    expect(await store.info(blob.digest)).toBeUndefined();
    expect(await put('a', data)).toBe(blob.digest);
    expect(await store.info(blob.digest)).toEqual(blob);
    expect((await store.read(blob.digest, 0, data.length)).equals(data)).toBe(true);
    expect((await store.read(blob.digest, 1000, 70_000)).equals(data.subarray(1000, 70_000))).toBe(true);
    await expect(store.read(blob.digest, 0, data.length + 1)).rejects.toMatchObject({ code: 'SHORT_READ' });
    expect(await store.list()).toEqual([blob.digest]);
  });

  it('refuses bytes that are not the expected digest, or not its size, and keeps nothing of them', async () => {
    const before = await files(work.dir);
    const other = Buffer.from(data);
    other[12345] ^= 1;
    await expect(put('a', other)).rejects.toThrow();
    await expect(put('b', data.subarray(0, 1000))).rejects.toThrow();
    await expect(put('c', Buffer.concat([data, Buffer.from('x')]))).rejects.toThrow();
    expect(await store.info(blob.digest)).toBeUndefined();
    await expect(store.read(blob.digest, 0, 1)).rejects.toMatchObject({ code: 'BLOB_UNKNOWN' });
    expect(await store.list()).toEqual([]);
    // The short write may stay for a resume in the local store; nothing is visible as a blob.
    expect((await files(work.dir)).filter((f) => !before.includes(f) && !f.includes('ingest'))).toEqual([]);
  });

  it('keeps the blob it holds when the same digest is committed again', async () => {
    await put('a', data);
    expect(await put('b', data)).toBe(blob.digest);
    expect((await store.read(blob.digest, 0, data.length)).equals(data)).toBe(true);
    expect(await store.list()).toEqual([blob.digest]);
  });

  it('forgets a discarded write, and a deleted blob', async () => {
    const w = await store.writer('a', blob);
    await w.write(data.subarray(0, 5000));
    await w.discard();
    expect(await store.info(blob.digest)).toBeUndefined();
    await put('a', data);
    await store.delete(blob.digest);
    expect(await store.info(blob.digest)).toBeUndefined();
    expect(await store.list()).toEqual([]);
  });
});
