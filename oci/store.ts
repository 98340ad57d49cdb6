import { mkdir, open, readdir, rename, rm, stat, statfs, readFile, utimes, writeFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Hash } from 'node:crypto';
import { AcpackError, formatBytes } from './errors.js';
import { Writeback } from './writeback.js';
import { digestOfHash, feedHash, hashFile, hexOf, isDigest, newHash, READ_CHUNK, sha256, shortDigest, type Digest } from './digest.js';

/** BlobWriter pushes its data to disk every 16 MiB (see Writeback). */
const WRITEBACK_EVERY = 16 << 20;

/** What a writer must end up holding before it may become visible. */
export interface Expected {
  /** Absent only when the bytes are trusted on first use (`acpack lock` pinning a binary). */
  digest?: Digest;
  size?: number;
  /** Where the bytes come from, for messages: `registry.k8s.io/pause:3.5`. */
  source?: string;
}

/**
 * A content-addressed blob store, after containerd's content store: blobs live under
 * `blobs/sha256/<hex>` and only ever appear there after their bytes were hashed and matched;
 * in-flight writes live under `ingest/<key>/` and survive a crash so a re-run resumes them.
 */
export class ContentStore {
  private readonly active = new Set<string>();
  private puts = 0;

  private constructor(readonly root: string) {}

  static async open(root: string): Promise<ContentStore> {
    await mkdir(join(root, 'blobs', 'sha256'), { recursive: true });
    await mkdir(join(root, 'ingest'), { recursive: true });
    return new ContentStore(root);
  }

  /** The file of a committed blob. Only readers of the store's own layout (bundle writer, registry) need it. */
  path(digest: Digest): string {
    return join(this.root, 'blobs', 'sha256', hexOf(digest));
  }

  /** The size of a committed blob, or undefined when it is not in the store. */
  async size(digest: Digest): Promise<number | undefined> {
    try {
      return (await stat(this.path(digest))).size;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  async has(digest: Digest): Promise<boolean> {
    return (await this.size(digest)) !== undefined;
  }

  async readBytes(digest: Digest): Promise<Buffer> {
    return readFile(this.path(digest));
  }

  /** Stores a small blob held in memory (a manifest, a config). */
  async put(data: Uint8Array, expected?: Expected): Promise<Digest> {
    const digest = expected?.digest ?? sha256(data);
    if (await this.has(digest)) return digest;
    // A private ingest name: two puts of the same bytes at once both commit the same file, harmlessly.
    const w = await this.writer(`put-${hexOf(digest)}-${process.pid}-${++this.puts}`, { ...expected, digest, size: data.length });
    try {
      await w.write(data);
      await w.commit();
    } finally {
      await w.close();
    }
    return digest;
  }

  /**
   * Opens (or resumes) the in-flight write named `ref`. `offset` tells how many bytes a previous
   * attempt left, already hashed; the caller continues from there or calls `reset()`.
   * One writer per ref at a time: a second one is refused, as in containerd. An `appendOnly` writer
   * neither hashes nor commits: it adds a chunk to an upload without re-reading what is there.
   */
  async writer(ref: string, expected: Expected, opts: { appendOnly?: boolean } = {}): Promise<BlobWriter> {
    const key = ingestKey(ref);
    if (this.active.has(key)) throw new AcpackError('INGEST_LOCKED', `a write of ${ref} is already in progress`);
    this.active.add(key);
    try {
      const dir = join(this.root, 'ingest', key);
      await mkdir(dir, { recursive: true });
      await writeFile(join(dir, 'ref'), ref);
      const dataPath = join(dir, 'data');
      const fh = await open(dataPath, 'a+');
      const hash = opts.appendOnly ? undefined : newHash();
      let offset = (await fh.stat()).size;
      if (expected.size !== undefined && offset > expected.size) {
        await fh.truncate(0);
        offset = 0;
      }
      if (offset > 0 && hash) await feedHash(hash, dataPath, offset);
      return new BlobWriter(this, dir, fh, hash, offset, expected, () => this.active.delete(key));
    } catch (err) {
      this.active.delete(key);
      throw err;
    }
  }

  /** Bytes an in-flight write named `ref` holds, or undefined when there is none. */
  async ingestSize(ref: string): Promise<number | undefined> {
    try {
      return (await stat(join(this.root, 'ingest', ingestKey(ref), 'data'))).size;
    } catch {
      return undefined;
    }
  }

  /** Drops an in-flight write (a cancelled upload). */
  async abandon(ref: string): Promise<void> {
    await rm(join(this.root, 'ingest', ingestKey(ref)), { recursive: true, force: true });
  }

  /** Bytes the store's file system still has for an unprivileged writer. */
  async freeBytes(): Promise<number> {
    const fs = await statfs(this.root);
    return fs.bavail * fs.bsize;
  }

  /** Every committed blob. */
  async list(): Promise<Digest[]> {
    const names = await readdir(join(this.root, 'blobs', 'sha256'));
    return names.map((n) => `sha256:${n}`).filter(isDigest);
  }

  /** Marks a committed blob as just used: a collection spares blobs younger than its grace period. */
  async touch(digest: Digest): Promise<void> {
    const now = new Date();
    await utimes(this.path(digest), now, now).catch(() => {});
  }

  async delete(digest: Digest): Promise<void> {
    await rm(this.path(digest), { force: true });
  }

  /** Re-hashes a committed blob; true when its bytes still match its name. */
  async check(digest: Digest): Promise<boolean> {
    const { digest: actual } = await hashFile(this.path(digest));
    return actual === digest;
  }

  /** @internal moves a verified ingest file into place. */
  async publish(dataPath: string, digest: Digest): Promise<void> {
    await rename(dataPath, this.path(digest));
  }
}

/**
 * One in-flight blob write. Bytes are hashed as they arrive and buffered into large writes;
 * `commit` checks size and digest, fsyncs and renames. On a mismatch the partial data is
 * deleted, so a corrupt source can never poison a resume.
 */
export class BlobWriter {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private closed = false;
  /** The digest it was stored under, once committed. */
  committed?: Digest;
  private readonly writeback: Writeback;

  constructor(
    private readonly store: ContentStore,
    private readonly dir: string,
    private readonly fh: FileHandle,
    private hash: Hash | undefined,
    private written: number,
    readonly expected: Expected,
    private readonly release: () => void,
  ) {
    this.writeback = new Writeback(fh, WRITEBACK_EVERY);
  }

  /** Bytes accepted so far, including those a previous attempt left on disk. */
  get offset(): number {
    return this.written;
  }

  async write(chunk: Uint8Array): Promise<void> {
    const { size } = this.expected;
    if (size !== undefined && this.written + chunk.length > size) {
      await this.discard();
      throw this.mismatch(`more than the expected ${formatBytes(size)}`);
    }
    this.hash?.update(chunk);
    this.written += chunk.length;
    this.pending.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length));
    this.pendingBytes += chunk.length;
    if (this.pendingBytes >= 4 * READ_CHUNK) await this.flush();
  }

  /** Forgets everything written so far (the source could not resume). */
  async reset(): Promise<void> {
    this.pending = [];
    this.pendingBytes = 0;
    await this.fh.truncate(0);
    if (this.hash) this.hash = newHash();
    this.written = 0;
  }

  async commit(): Promise<Digest> {
    if (!this.hash) throw new AcpackError('INTERNAL', 'an append-only writer cannot commit');
    await this.flush();
    const { digest, size } = this.expected;
    if (size !== undefined && this.written !== size) {
      // Short: keep the partial data, a later attempt resumes it.
      throw new AcpackError(
        'BLOB_SHORT',
        `blob ${describe(digest)}${from(this.expected)} ended after ${formatBytes(this.written)}, expected ${formatBytes(size)}: the download was cut`,
      );
    }
    const actual = digestOfHash(this.hash);
    if (digest !== undefined && actual !== digest) {
      await this.discard();
      throw this.mismatch(`content hashing to ${shortDigest(actual)}`);
    }
    await this.writeback.settled();
    await this.fh.sync();
    await this.fh.close();
    this.closed = true;
    await this.store.publish(join(this.dir, 'data'), actual);
    await rm(this.dir, { recursive: true, force: true });
    this.release();
    this.committed = actual;
    return actual;
  }

  /** Ends this attempt; what was written stays for a resume. */
  async close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      try {
        await this.flush();
      } finally {
        await this.writeback.settled();
        await this.fh.close();
        this.release();
      }
    }
  }

  /** Ends this attempt and deletes what it wrote. */
  async discard(): Promise<void> {
    this.pending = [];
    this.pendingBytes = 0;
    if (!this.closed) {
      this.closed = true;
      await this.writeback.settled();
      await this.fh.close();
      this.release();
    }
    await rm(this.dir, { recursive: true, force: true });
  }

  private async flush(): Promise<void> {
    if (this.pendingBytes === 0) return;
    const data = this.pending;
    this.pending = [];
    this.pendingBytes = 0;
    try {
      await this.fh.writev(data);
      for (const b of data) this.writeback.wrote(b.length);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOSPC' || code === 'EDQUOT') {
        throw new AcpackError('DISK_FULL', `no space left while writing blob ${describe(this.expected.digest)} under ${this.dir}: free some space and run again (verified blobs are kept)`, { cause: err });
      }
      throw err;
    }
  }

  private mismatch(what: string): AcpackError {
    const { digest } = this.expected;
    return new AcpackError(
      'DIGEST_MISMATCH',
      `blob ${describe(digest)}${from(this.expected)} delivered ${what}: the source changed or is corrupt; nothing was stored`,
    );
  }
}

function ingestKey(ref: string): string {
  return sha256(ref).slice(7, 39);
}

function describe(d: Digest | undefined): string {
  return d ? shortDigest(d) : '(not pinned)';
}

function from(e: Expected): string {
  return e.source ? ` from ${e.source}` : '';
}
