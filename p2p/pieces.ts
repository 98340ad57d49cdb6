/**
 * Pieces: a blob is cut into fixed-size pieces, each with its own sha256, so that a node can check
 * every piece it receives from a peer on arrival instead of finding out at the end of a 400 MB blob.
 * Piece i covers [i·P, min((i+1)·P, size)); a zero-byte blob has no pieces. The hashes of a blob are
 * one Buffer: the 32-byte sha256 of each piece, concatenated in piece order.
 */
import { createHash, timingSafeEqual, type Hash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { AcpackError } from '../oci/errors.js';
import { READ_CHUNK } from '../oci/digest.js';

/**
 * 1 MiB: each hop a piece makes costs its time on the link (0.42 s at 20 Mbit/s, 0.04 s at
 * 200 Mbit/s), and a blob cut finer spreads over more nodes at once. bench/p2p-sim, 8 nodes at
 * 20 Mbit/s: every node done at 1.36·T_phys with 4 MiB pieces, 1.04 with 1 MiB; 50 nodes at
 * 200 Mbit/s: 1.28 and 1.15. A piece costs a request and 32 bytes of hash: 32 kB a GB.
 */
export const PIECE_SIZE = 1024 * 1024;
/** The length of one piece hash (sha256). */
export const PIECE_HASH_BYTES = 32;
/** The smallest and largest piece sizes accepted from anyone (a tracker input, an index row). */
export const MIN_PIECE_SIZE = 64 * 1024;
export const MAX_PIECE_SIZE = 64 * 1024 * 1024;

export function checkPieceSize(pieceSize: number): void {
  if (!Number.isSafeInteger(pieceSize) || pieceSize < MIN_PIECE_SIZE || pieceSize > MAX_PIECE_SIZE) {
    throw new AcpackError('BAD_PIECE_SIZE', `piece size ${pieceSize} is not an integer from ${MIN_PIECE_SIZE} to ${MAX_PIECE_SIZE}`);
  }
}

function checkSize(size: number): void {
  if (!Number.isSafeInteger(size) || size < 0) throw new AcpackError('BAD_SIZE', `blob size ${size} is not a non-negative integer`);
}

/** How many pieces a blob of `size` bytes has. */
export function pieceCount(size: number, pieceSize = PIECE_SIZE): number {
  checkSize(size);
  checkPieceSize(pieceSize);
  return Math.ceil(size / pieceSize);
}

/** The byte range [start, end) of piece `index`. */
export function pieceRange(size: number, index: number, pieceSize = PIECE_SIZE): { start: number; end: number } {
  const count = pieceCount(size, pieceSize);
  if (!Number.isInteger(index) || index < 0 || index >= count) {
    throw new AcpackError('BAD_PIECE', `piece ${index} is not one of the ${count} pieces of a ${size}-byte blob`);
  }
  const start = index * pieceSize;
  return { start, end: Math.min(start + pieceSize, size) };
}

/**
 * Hashes the pieces of a blob from the same chunks that feed the blob's own sha256, in one pass.
 * Chunks may be of any size and cross piece boundaries: a chunk is split with subarray views, never
 * copied, so the cost is the second sha256 and nothing else.
 */
export class PieceHasher {
  private hash: Hash = createHash('sha256');
  /** Bytes of the current piece hashed so far. */
  private inPiece = 0;
  private readonly done: Buffer[] = [];
  private total = 0;
  private finished = false;

  constructor(readonly pieceSize = PIECE_SIZE) {
    checkPieceSize(pieceSize);
  }

  /** Bytes fed so far. */
  get bytes(): number {
    return this.total;
  }

  update(chunk: Uint8Array): this {
    if (this.finished) throw new AcpackError('PIECES_FINISHED', 'the piece hashes were already taken; a PieceHasher hashes one blob');
    let at = 0;
    while (at < chunk.length) {
      const take = Math.min(chunk.length - at, this.pieceSize - this.inPiece);
      this.hash.update(at === 0 && take === chunk.length ? chunk : chunk.subarray(at, at + take));
      this.inPiece += take;
      at += take;
      if (this.inPiece === this.pieceSize) this.closePiece();
    }
    this.total += chunk.length;
    return this;
  }

  /** The concatenated piece hashes (32 bytes per piece); the hasher is then spent. */
  digest(): Buffer {
    if (this.finished) throw new AcpackError('PIECES_FINISHED', 'the piece hashes were already taken; a PieceHasher hashes one blob');
    if (this.inPiece > 0) this.closePiece();
    this.finished = true;
    return Buffer.concat(this.done, this.done.length * PIECE_HASH_BYTES);
  }

  private closePiece(): void {
    this.done.push(this.hash.digest());
    this.hash = createHash('sha256');
    this.inPiece = 0;
  }
}

/** Piece hashes of bytes held whole in memory (tests, small blobs). */
export function pieceHashes(data: Uint8Array, pieceSize = PIECE_SIZE): Buffer {
  return new PieceHasher(pieceSize).update(data).digest();
}

/** Whether `hashes` has the length a blob of `size` bytes needs. */
export function hashesFit(hashes: Uint8Array, size: number, pieceSize = PIECE_SIZE): boolean {
  return hashes.length === pieceCount(size, pieceSize) * PIECE_HASH_BYTES;
}

/**
 * Whether `bytes` are piece `index` as `hashes` says. A piece of the wrong length is refused before
 * hashing; the caller knows the range it asked for, so a short answer is a bad piece too.
 */
export function verifyPiece(hashes: Uint8Array, index: number, bytes: Uint8Array): boolean {
  const count = hashes.length / PIECE_HASH_BYTES;
  if (!Number.isInteger(count)) throw new AcpackError('BAD_PIECE_HASHES', `piece hashes of ${hashes.length} bytes are not a whole number of sha256 hashes`);
  if (!Number.isInteger(index) || index < 0 || index >= count) {
    throw new AcpackError('BAD_PIECE', `piece ${index} is not one of the ${count} pieces`);
  }
  const expected = hashes.subarray(index * PIECE_HASH_BYTES, (index + 1) * PIECE_HASH_BYTES);
  return timingSafeEqual(createHash('sha256').update(bytes).digest(), expected);
}

/**
 * The piece hashes of a file already in the store (blobs committed before pieces existed get theirs
 * on first demand), with its size. `expectedSize`, when given, must match: a blob that changed under
 * its digest is a store fault to report, not a set of hashes to hand out.
 */
export async function pieceHashesOfFile(path: string, pieceSize = PIECE_SIZE, expectedSize?: number): Promise<{ hashes: Buffer; size: number }> {
  const hasher = new PieceHasher(pieceSize);
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.allocUnsafe(READ_CHUNK);
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, READ_CHUNK, null);
      if (bytesRead === 0) break;
      hasher.update(buf.subarray(0, bytesRead));
    }
  } finally {
    await fh.close();
  }
  if (expectedSize !== undefined && hasher.bytes !== expectedSize) {
    throw new AcpackError('SIZE_MISMATCH', `${path} has ${hasher.bytes} bytes, ${expectedSize} expected`);
  }
  return { size: hasher.bytes, hashes: hasher.digest() };
}
