import { describe, expect, it } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PIECE_HASH_BYTES, PieceHasher, pieceCount, pieceHashes, pieceHashesOfFile, pieceRange, verifyPiece } from '../../p2p/pieces.js';
import { tempDir } from '../helpers/env.js';

const P = 64 * 1024; // the smallest piece size, so that tests stay small

/** The piece hashes computed the obvious way, one slice per piece. */
function reference(data: Buffer, pieceSize: number): Buffer {
  const out: Buffer[] = [];
  for (let at = 0; at < data.length; at += pieceSize) out.push(createHash('sha256').update(data.subarray(at, at + pieceSize)).digest());
  return Buffer.concat(out);
}

describe('pieces', () => {
  it('counts pieces and their ranges, the last one short, a zero-byte blob none', () => {
    expect(pieceCount(0, P)).toBe(0);
    expect(pieceCount(1, P)).toBe(1);
    expect(pieceCount(P, P)).toBe(1);
    expect(pieceCount(P + 1, P)).toBe(2);
    expect(pieceRange(2 * P + 5, 2, P)).toEqual({ start: 2 * P, end: 2 * P + 5 });
    expect(pieceRange(2 * P, 1, P)).toEqual({ start: P, end: 2 * P });
    expect(() => pieceRange(2 * P, 2, P)).toThrow(/not one of the 2 pieces/);
    expect(() => pieceCount(10, 1000)).toThrow(/piece size/);
  });

  it.each([
    ['exact pieces', 3 * P, [P]],
    ['one byte over', 3 * P + 1, [7, P - 3, 2 * P + 1, 100]],
    ['chunks larger than a piece', 5 * P - 9, [2 * P + 3]],
    ['odd chunks straddling boundaries', 4 * P + 12_345, [1, 65_535, 65_537, 3, 99_999]],
    ['one byte at a time near the end', P + 40, [P - 20, 1]],
  ])('hashes each piece whatever the chunking: %s', (_name, size, pattern) => {
    const data = randomBytes(size);
    const hasher = new PieceHasher(P);
    let at = 0;
    for (let i = 0; at < size; i++) {
      const n = pattern[i % pattern.length];
      hasher.update(data.subarray(at, at + n));
      at += n;
    }
    const hashes = hasher.digest();
    expect(hasher.bytes).toBe(size);
    expect(hashes.length).toBe(pieceCount(size, P) * PIECE_HASH_BYTES);
    expect(hashes.equals(reference(data, P))).toBe(true);
  });

  it('gives no hashes for no bytes, and refuses to be used twice', () => {
    const hasher = new PieceHasher(P);
    expect(hasher.digest().length).toBe(0);
    expect(() => hasher.update(Buffer.from('x'))).toThrow(/already taken/);
  });

  it('verifies each piece and catches a flipped byte, a short piece and a piece in the wrong place', () => {
    const data = randomBytes(3 * P + 100);
    const hashes = pieceHashes(data, P);
    for (let i = 0; i < 4; i++) {
      const { start, end } = pieceRange(data.length, i, P);
      expect(verifyPiece(hashes, i, data.subarray(start, end))).toBe(true);
    }
    const bad = Buffer.from(data.subarray(P, 2 * P));
    bad[12_345] ^= 0x01;
    expect(verifyPiece(hashes, 1, bad)).toBe(false);
    expect(verifyPiece(hashes, 1, data.subarray(P, 2 * P - 1))).toBe(false);
    expect(verifyPiece(hashes, 2, data.subarray(P, 2 * P))).toBe(false);
    expect(() => verifyPiece(hashes, 4, data.subarray(0, 1))).toThrow(/not one of the 4 pieces/);
  });

  it('hashes a file in the store as the hasher does, and refuses one whose size changed', async () => {
    const t = await tempDir();
    try {
      const data = randomBytes(2 * 1024 * 1024 + 77); // crosses the 1 MiB reads and the pieces at different places
      const path = join(t.dir, 'blob');
      await writeFile(path, data);
      const { hashes, size } = await pieceHashesOfFile(path, 3 * P);
      expect(size).toBe(data.length);
      expect(hashes.equals(reference(data, 3 * P))).toBe(true);
      await expect(pieceHashesOfFile(path, 3 * P, data.length + 1)).rejects.toThrow(/expected/);
    } finally {
      await t.cleanup();
    }
  });
});
