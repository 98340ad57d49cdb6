import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, truncate } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sha256 } from '../../oci/digest.js';
import { PieceStore } from '../../p2p/piece-store.js';
import { MIN_PIECE_SIZE, pieceHashes, pieceRange } from '../../p2p/pieces.js';

const P = MIN_PIECE_SIZE;
const data = randomBytes(3 * P + 100);
const digest = sha256(data);
const hashes = pieceHashes(data, P);
const piece = (i: number) => {
  const { start, end } = pieceRange(data.length, i, P);
  return data.subarray(start, end);
};

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'acpack-pieces-'));
});
afterEach(() => rm(dir, { recursive: true, force: true }));

describe("an agent's piece store", () => {
  it('writes one of two copies of a piece that arrive together, and refuses a bad one', async () => {
    const store = await PieceStore.open(dir, 2 ** 30);
    const blob = await store.partial(digest, data.length, P, hashes);
    const both = await Promise.all([blob.put(1, Buffer.from(piece(1))), blob.put(1, Buffer.from(piece(1)))]);
    expect(both.sort()).toEqual(['had', 'new']);
    const flipped = Buffer.from(piece(2));
    flipped[7] ^= 1;
    expect(await blob.put(2, flipped)).toBe('bad');
    expect(blob.have.toArray()).toEqual([1]);
    await blob.close();
  });

  it('keeps verified pieces across a restart, re-hashing them, and drops one whose bytes were lost', async () => {
    const store = await PieceStore.open(dir, 2 ** 30);
    const first = await store.partial(digest, data.length, P, hashes);
    for (const i of [0, 3]) expect(await first.put(i, Buffer.from(piece(i)))).toBe('new');
    await first.close();
    // A power cut that kept the marks but not the last piece's bytes.
    await truncate(first.path, 3 * P);
    const again = await (await PieceStore.open(dir, 2 ** 30)).partial(digest, data.length, P, hashes);
    expect(again.have.toArray()).toEqual([0]);
    for (const i of [1, 2, 3]) await again.put(i, Buffer.from(piece(i)));
    await again.finish();
    expect(await store.whole(digest)).toBe(data.length);
    expect(existsSync(first.path)).toBe(false);
  });

  it('keeps whole blobs up to its bound, the least recently used going first', async () => {
    const store = await PieceStore.open(dir, data.length + 10);
    const other = randomBytes(P + 1);
    for (const bytes of [data, other]) {
      const b = await store.partial(sha256(bytes), bytes.length, P, pieceHashes(bytes, P));
      for (let i = 0; i < b.pieces; i++) {
        const { start, end } = pieceRange(bytes.length, i, P);
        await b.put(i, Buffer.from(bytes.subarray(start, end)));
      }
      await b.finish();
    }
    expect(await store.whole(digest)).toBeUndefined();
    expect(await store.whole(sha256(other))).toBe(other.length);
  });
});
