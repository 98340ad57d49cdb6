import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { mkdir, open, readdir, rename, rm, stat, utimes, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { readBlobRange, type Content, type ContentInfo, type ContentWriter } from '../oci/content.js';
import { hexOf, isDigest, READ_CHUNK, sha256, type Digest } from '../oci/digest.js';
import { AcpackError, formatBytes } from '../oci/errors.js';
import { Bitfield } from './bitfield.js';
import type { BufferPool } from '../oci/buffer-pool.js';
import { pieceCount, pieceRange, verifyPiece } from './pieces.js';

/**
 * Where a node's agent keeps blobs while it fetches them piece by piece, and after, to serve its
 * peers. Under `dir`:
 *   partial/<hex>   the blob's bytes at their offsets, a sparse file of its full size
 *   partial/<hex>.have   which pieces were verified (rewritten after each; re-checked on open)
 *   partial/<hex>.in-<ref>   a blob written whole, in order (the ingester: blobs of 64 KiB or
 *                   less, passed through from the registry), until its digest is checked
 *   blobs/<hex>     a whole blob whose digest was verified, renamed from partial/ (the
 *                   installer puts acinstall's runtime there too, checked and by way of partial/)
 * Whole blobs are kept up to `maxBytes` (least recently used go first); a partial one stays until
 * it is whole. containerd keeps its own copy of what it pulled: this is the peer cache's extra disk.
 * As a content store (oci/content.ts) it provides, ingests, lists and deletes whole blobs.
 */
export class PieceStore implements Content {
  /** Refs being written (one writer per ref). */
  private readonly writing = new Set<string>();

  private constructor(
    readonly dir: string,
    readonly maxBytes: number,
  ) {}

  static async open(dir: string, maxBytes: number): Promise<PieceStore> {
    await mkdir(join(dir, 'partial'), { recursive: true, mode: 0o700 });
    await mkdir(join(dir, 'blobs'), { recursive: true, mode: 0o700 });
    // A whole write does not outlive its process: what one left is dropped.
    for (const name of await readdir(join(dir, 'partial'))) if (name.includes('.in-')) await rm(join(dir, 'partial', name), { force: true });
    return new PieceStore(dir, maxBytes);
  }

  wholePath(digest: Digest): string {
    return join(this.dir, 'blobs', hexOf(digest));
  }

  /** The size of a whole blob kept here, marking it used; undefined when there is none. */
  async whole(digest: Digest): Promise<number | undefined> {
    try {
      const s = await stat(this.wholePath(digest));
      const now = new Date();
      await utimes(this.wholePath(digest), now, now).catch(() => {});
      return s.size;
    } catch {
      return undefined;
    }
  }

  async info(digest: Digest): Promise<ContentInfo | undefined> {
    const size = await this.whole(digest);
    return size === undefined ? undefined : { digest, size };
  }

  read(digest: Digest, start: number, end: number): Promise<Buffer> {
    return readBlobRange(this.wholePath(digest), digest, start, end);
  }

  async list(): Promise<Digest[]> {
    return (await this.wholeBlobs()).map((b) => b.digest);
  }

  async delete(digest: Digest): Promise<void> {
    await rm(this.wholePath(digest), { force: true });
  }

  /** A blob written whole, in order: kept once its size and digest are checked (what was there under that digest stays). */
  async writer(ref: string, expected: ContentInfo): Promise<ContentWriter> {
    if (this.writing.has(ref)) throw new AcpackError('INGEST_BUSY', `${ref} is being written already`);
    this.writing.add(ref);
    const path = join(this.dir, 'partial', `${hexOf(expected.digest)}.in-${sha256(ref).slice(7, 23)}`);
    try {
      return new WholeWriter(this, expected, path, await open(path, 'w', 0o600), () => this.writing.delete(ref));
    } catch (err) {
      this.writing.delete(ref);
      throw err;
    }
  }

  /** Whole blobs kept here (what the agent announces as done). */
  async wholeBlobs(): Promise<{ digest: Digest; size: number }[]> {
    const out: { digest: Digest; size: number }[] = [];
    for (const name of await readdir(join(this.dir, 'blobs'))) {
      const digest = `sha256:${name}`;
      if (!isDigest(digest)) continue;
      const s = await stat(join(this.dir, 'blobs', name)).catch(() => undefined);
      if (s) out.push({ digest, size: s.size });
    }
    return out;
  }

  /**
   * A blob being fetched: the partial file, made or resumed. Pieces a previous run marked verified
   * are hashed again (a power cut may have lost bytes the mark outlived); those that still match stay.
   */
  async partial(digest: Digest, size: number, pieceSize: number, hashes: Buffer): Promise<PartialBlob> {
    const path = join(this.dir, 'partial', hexOf(digest));
    // Read and write at any offset, made if absent, never truncated: a restart resumes it.
    const fh = await open(path, constants.O_RDWR | constants.O_CREAT, 0o600);
    try {
      if ((await fh.stat()).size !== size) await fh.truncate(size);
      const count = pieceCount(size, pieceSize);
      const have = new Bitfield(count);
      const marked = await readMarks(`${path}.have`, count);
      for (const i of marked?.toArray() ?? []) {
        const { start, end } = pieceRange(size, i, pieceSize);
        const bytes = Buffer.allocUnsafe(end - start);
        await fh.read(bytes, 0, bytes.length, start);
        if (verifyPiece(hashes, i, bytes)) have.set(i);
      }
      return new PartialBlob(this, digest, size, pieceSize, hashes, path, fh, have);
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  /** Makes room for `bytes` more: whole blobs, least recently used first. */
  async makeRoom(bytes: number): Promise<void> {
    const entries = await Promise.all(
      (await readdir(join(this.dir, 'blobs'))).map(async (name) => ({ name, s: await stat(join(this.dir, 'blobs', name)).catch(() => undefined) })),
    );
    const kept = entries.filter((e) => e.s).sort((a, b) => a.s!.mtimeMs - b.s!.mtimeMs);
    let total = kept.reduce((n, e) => n + e.s!.size, 0);
    for (const e of kept) {
      if (total + bytes <= this.maxBytes) break;
      await rm(join(this.dir, 'blobs', e.name), { force: true });
      total -= e.s!.size;
    }
  }
}

async function readMarks(path: string, count: number): Promise<Bitfield | undefined> {
  try {
    const fh = await open(path, 'r');
    try {
      const buf = Buffer.alloc(((count + 7) >> 3) + 1);
      const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
      return bytesRead === buf.length - 1 ? Bitfield.fromBase64(buf.subarray(0, bytesRead).toString('base64'), count) : undefined;
    } finally {
      await fh.close();
    }
  } catch {
    return undefined; // none, or not this blob's: every piece is fetched again
  }
}

/** One blob being fetched: verified pieces written at their offsets, the marks kept beside. */
export class PartialBlob {
  private marking = Promise.resolve();
  private closed = false;
  private readonly writing = new Set<number>();

  constructor(
    private readonly store: PieceStore,
    readonly digest: Digest,
    readonly size: number,
    readonly pieceSize: number,
    readonly hashes: Buffer,
    readonly path: string,
    private readonly fh: FileHandle,
    readonly have: Bitfield,
  ) {}

  get pieces(): number {
    return this.have.length;
  }

  /** Writes piece `index` if its bytes hash right: 'bad' (nothing written) when they do not, 'had' when another copy came first. */
  async put(index: number, bytes: Buffer): Promise<'new' | 'had' | 'bad'> {
    const { start, end } = pieceRange(this.size, index, this.pieceSize);
    if (bytes.length !== end - start || !verifyPiece(this.hashes, index, bytes)) return 'bad';
    // Two copies of one piece (the endgame asks two peers) may arrive together: the first one writes.
    if (this.have.has(index) || this.writing.has(index)) return 'had';
    this.writing.add(index);
    try {
      await this.fh.write(bytes, 0, bytes.length, start);
    } finally {
      this.writing.delete(index);
    }
    this.have.set(index);
    // Marks are a hint for a restart (re-checked then), written one at a time, latest state last.
    const marks = Buffer.from(this.have.toBase64(), 'base64');
    this.marking = this.marking.then(() => writeMarks(`${this.path}.have`, marks)).catch(() => {});
    return 'new';
  }

  /** Piece `index`'s bytes, verified earlier (in a buffer of `pool`'s when given); undefined when this node does not have it. */
  async read(index: number, pool?: BufferPool): Promise<Buffer | undefined> {
    if (!this.have.has(index) || this.closed) return undefined;
    const { start, end } = pieceRange(this.size, index, this.pieceSize);
    const bytes = pool ? pool.take(end - start) : Buffer.allocUnsafe(end - start);
    const { bytesRead } = await this.fh.read(bytes, 0, bytes.length, start);
    if (bytesRead === bytes.length) return bytes;
    pool?.give(bytes);
    return undefined;
  }

  /**
   * Every piece in place: the whole blob is hashed against its digest, then renamed where whole
   * blobs live (and served from there). A mismatch (which the piece hashes make a tracker or
   * registry fault, not a peer's) drops everything and throws.
   */
  async finish(): Promise<void> {
    if (!this.have.isFull) throw new AcpackError('INTERNAL', `${this.digest} is not whole yet`);
    await this.marking;
    const hash = createHash('sha256');
    const buf = Buffer.allocUnsafe(READ_CHUNK);
    for (let at = 0; at < this.size; ) {
      const { bytesRead } = await this.fh.read(buf, 0, Math.min(buf.length, this.size - at), at);
      if (bytesRead === 0) break;
      hash.update(buf.subarray(0, bytesRead));
      at += bytesRead;
    }
    await this.fh.sync();
    await this.close();
    if (`sha256:${hash.digest('hex')}` !== this.digest) {
      await this.discard();
      throw new AcpackError('DIGEST_MISMATCH', `${this.digest}: its pieces matched their hashes but the whole did not match its digest; the piece hashes the registry gave are wrong`);
    }
    await this.store.makeRoom(this.size);
    await rename(this.path, this.store.wholePath(this.digest));
    await rm(`${this.path}.have`, { force: true });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.marking;
    await this.fh.close();
  }

  async discard(): Promise<void> {
    await this.close();
    await rm(this.path, { force: true });
    await rm(`${this.path}.have`, { force: true });
  }

  describe(): string {
    return `${this.digest} (${formatBytes(this.size)}, ${this.have.count}/${this.pieces} pieces)`;
  }
}

async function writeMarks(path: string, marks: Buffer): Promise<void> {
  const tmp = `${path}.tmp`;
  const fh = await open(tmp, 'w', 0o600);
  try {
    await fh.write(marks);
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
}

/** The ingester's writer: hashed as written, renamed into blobs/ when the digest matches. */
class WholeWriter implements ContentWriter {
  private readonly hash = createHash('sha256');
  private written = 0;
  private ended = false;

  constructor(
    private readonly store: PieceStore,
    private readonly expected: ContentInfo,
    private readonly path: string,
    private readonly fh: FileHandle,
    private readonly release: () => void,
  ) {}

  async write(chunk: Uint8Array): Promise<void> {
    if (this.ended) throw new AcpackError('INTERNAL', `${this.expected.digest}: written after its end`);
    if (this.written + chunk.length > this.expected.size) {
      await this.discard();
      throw new AcpackError('SIZE_MISMATCH', `${this.expected.digest}: more than its ${this.expected.size} bytes`);
    }
    this.hash.update(chunk);
    await this.fh.write(chunk);
    this.written += chunk.length;
  }

  async commit(): Promise<Digest> {
    const { digest, size } = this.expected;
    const got = `sha256:${this.hash.digest('hex')}`;
    if (this.written !== size || got !== digest) {
      await this.discard();
      throw new AcpackError('DIGEST_MISMATCH', `${digest}: ${this.written} bytes hashing to ${got}, not its ${size} bytes`);
    }
    try {
      await this.fh.sync();
      await this.end();
      if ((await this.store.whole(digest)) !== undefined) await rm(this.path, { force: true });
      else {
        await this.store.makeRoom(size);
        await rename(this.path, this.store.wholePath(digest));
      }
      return digest;
    } catch (err) {
      await rm(this.path, { force: true });
      throw err;
    }
  }

  async discard(): Promise<void> {
    await this.end();
    await rm(this.path, { force: true });
  }

  private async end(): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    this.release();
    await this.fh.close();
  }
}
