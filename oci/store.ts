import { AsyncLocalStorage } from 'node:async_hooks';
import { chmod, link, mkdir, open, readdir, readFile, rm, stat, statfs, utimes, writeFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Hash } from 'node:crypto';
import { readBlobRange, type Content, type ContentInfo } from './content.js';
import { AcpackError, formatBytes } from './errors.js';
import { FileLock } from './file-lock.js';
import { StagedFile } from './staged-file.js';
import { StageHash } from './hash-worker.js';
import { PieceHasher, PIECE_SIZE } from '../p2p/pieces.js';
import { digestOfHash, feedHash, hashFile, hexOf, isDigest, newHash, sha256, shortDigest, type Digest } from './digest.js';

/** BlobWriter pushes its data to disk every 16 MiB (see Writeback). */
const WRITEBACK_EVERY = 16 << 20;

/** Committed blobs are read-only; nothing in the store is writable by others, whatever the umask. */
const BLOB_MODE = 0o444;
const DIR_MODE = 0o755;
const PRIVATE_DIR_MODE = 0o700;
const PRIVATE_FILE_MODE = 0o600;

/** What a writer must end up holding before it may become visible. */
export interface Expected {
  /** Absent only when the bytes are trusted on first use (`acpack lock` pinning a binary). */
  digest?: Digest;
  size?: number;
  /** Where the bytes come from, for messages: `registry.k8s.io/pause:3.5`. */
  source?: string;
}

export interface WriterOptions {
  /** Neither hashes nor commits: adds a chunk to an upload without re-reading what is there. */
  appendOnly?: boolean;
  /** How long to wait for another writer of the same ref (another process's); 0: refuse at once. */
  waitMs?: number;
  /** Small facts kept with an in-flight write (an upload's repository and user), see `ingestMeta`. */
  meta?: Record<string, string>;
  /**
   * Hash the blob's pieces (p2p/pieces.ts) in the same pass as its digest (a resumed write's
   * earlier bytes too), for the peer cache: `pieces` once committed.
   */
  pieceHashes?: boolean;
}

/** Runs inside the store lock once a blob is in place: `created` is false when the digest was there already. */
export type OnCommitted = (digest: Digest, created: boolean) => void | Promise<void>;

/**
 * A content-addressed blob store, after containerd's content store: blobs live under
 * `blobs/sha256/<hex>` and only ever appear there after their bytes were hashed and matched;
 * in-flight writes live under `ingest/<key>/` and survive a crash so a re-run resumes them.
 *
 * Several processes write one store (the registry's workers, an import, gc). Two locks keep them
 * apart, both released by the kernel when a process dies (FileLock):
 * - one per ingest ref (`ingest/<key>/lock`), held by its writer for the whole write;
 * - one for the store (`store.lock`), held only for the short moments that change what is visible:
 *   a commit, a link or unlink in the index, one deletion of a gc sweep. Readers never take it.
 * A commit never replaces a blob: a digest already there keeps its file.
 */
export class ContentStore implements Content {
  private puts = 0;
  private queue: Promise<unknown> = Promise.resolve();
  private readonly inLock = new AsyncLocalStorage<true>();

  private constructor(readonly root: string) {}

  static async open(root: string): Promise<ContentStore> {
    await mkdir(root, { recursive: true, mode: DIR_MODE });
    await mkdir(join(root, 'blobs', 'sha256'), { recursive: true, mode: DIR_MODE });
    await mkdir(join(root, 'ingest'), { recursive: true, mode: PRIVATE_DIR_MODE });
    return new ContentStore(root);
  }

  /** The file of a committed blob. Only readers of the store's own layout (bundle writer, registry) need it. */
  path(digest: Digest): string {
    return join(this.root, 'blobs', 'sha256', hexOf(digest));
  }

  /** The size of a committed blob, or undefined when it is not in the store. */
  async size(digest: Digest): Promise<number | undefined> {
    return (await this.stat(digest))?.size;
  }

  /** Size and last use (mtime: written, found or reused) of a committed blob. */
  async stat(digest: Digest): Promise<{ size: number; mtimeMs: number } | undefined> {
    try {
      const s = await stat(this.path(digest));
      return { size: s.size, mtimeMs: s.mtimeMs };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  async info(digest: Digest): Promise<ContentInfo | undefined> {
    const size = await this.size(digest);
    return size === undefined ? undefined : { digest, size };
  }

  read(digest: Digest, start: number, end: number): Promise<Buffer> {
    return readBlobRange(this.path(digest), digest, start, end);
  }

  async has(digest: Digest): Promise<boolean> {
    return (await this.size(digest)) !== undefined;
  }

  async readBytes(digest: Digest): Promise<Buffer> {
    return readFile(this.path(digest));
  }

  /**
   * Runs `fn` holding the store lock: one writer at a time across every process on this store.
   * Re-entrant (a commit inside a locked section runs at once). Keep `fn` short: it stalls writers.
   */
  async exclusive<T>(fn: () => Promise<T> | T): Promise<T> {
    if (this.inLock.getStore()) return fn();
    const turn = this.queue.then(async () => {
      const lock = await FileLock.acquire(join(this.root, 'store.lock'), {
        busy: () => new AcpackError('BUSY', `the store ${this.root} stayed locked by another process for a minute (store.lock): is one stuck?`),
      });
      try {
        return await this.inLock.run(true, fn);
      } finally {
        await lock.release();
      }
    });
    this.queue = turn.catch(() => {});
    return turn;
  }

  /** Stores a small blob held in memory (a manifest, a config); one already there is marked as just used, as a commit does. */
  async put(data: Uint8Array, expected?: Expected): Promise<Digest> {
    const digest = expected?.digest ?? sha256(data);
    if (await this.has(digest)) {
      // A manifest pushed again (an index's child, before its index) must outlive gc's grace period from now.
      await this.touch(digest);
      return digest;
    }
    // A private ingest name: two puts of the same bytes at once both commit, the second keeping the first's file.
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
   * One writer per ref at a time, across processes: another is refused (INGEST_LOCKED) or, with
   * `waitMs`, waits for the first to finish.
   */
  async writer(ref: string, expected: Expected, opts: WriterOptions = {}): Promise<BlobWriter> {
    const key = ingestKey(ref);
    const dir = join(this.root, 'ingest', key);
    const lock = await this.lockIngest(dir, ref, opts.waitMs ?? 0);
    let fh: FileHandle | undefined;
    try {
      await writeFile(join(dir, 'ref'), ref, { mode: PRIVATE_FILE_MODE });
      if (opts.meta) await writeFile(join(dir, 'meta.json'), JSON.stringify(opts.meta), { mode: PRIVATE_FILE_MODE });
      const dataPath = join(dir, 'data');
      fh = await open(dataPath, 'a+', PRIVATE_FILE_MODE);
      const hashing = !opts.appendOnly;
      let offset = (await fh.stat()).size;
      if (expected.size !== undefined && offset > expected.size) {
        await fh.truncate(0);
        offset = 0;
      }
      const w = new BlobWriter(this, dir, fh, hashing, offset, expected, () => lock.release(), hashing && opts.pieceHashes);
      if (offset > 0 && hashing) await feedHash({ update: (c) => w.hashOnly(c) }, dataPath, offset);
      return w;
    } catch (err) {
      await fh?.close();
      await lock.release();
      throw err;
    }
  }

  /** Takes the lock of one ingest directory (made if absent), waiting up to `waitMs` for another holder. */
  private lockIngest(dir: string, ref: string, waitMs: number): Promise<FileLock> {
    return FileLock.acquire(join(dir, 'lock'), { timeoutMs: waitMs, prepare: () => mkdir(dir, { recursive: true, mode: PRIVATE_DIR_MODE }), busy: () => locked(ref) });
  }

  /** Bytes an in-flight write named `ref` holds, or undefined when there is none. */
  async ingestSize(ref: string): Promise<number | undefined> {
    try {
      return (await stat(join(this.root, 'ingest', ingestKey(ref), 'data'))).size;
    } catch {
      return undefined;
    }
  }

  /** The `meta` an in-flight write was opened with, or undefined. */
  async ingestMeta(ref: string): Promise<Record<string, string> | undefined> {
    try {
      return JSON.parse(await readFile(join(this.root, 'ingest', ingestKey(ref), 'meta.json'), 'utf8'));
    } catch {
      return undefined;
    }
  }

  /** Drops an in-flight write (a cancelled upload); INGEST_LOCKED while someone is writing it. */
  async abandon(ref: string): Promise<void> {
    if ((await this.removeIngest(ingestKey(ref))) === 'held') throw locked(ref);
  }

  /** Drops the in-flight write in directory `key` (a sweep of old uploads) unless a writer holds it; true when dropped. */
  async dropIngest(key: string): Promise<boolean> {
    return (await this.removeIngest(key)) === 'removed';
  }

  private async removeIngest(key: string): Promise<'removed' | 'held' | 'gone'> {
    const dir = join(this.root, 'ingest', key);
    const lock = await FileLock.try(join(dir, 'lock')).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return 'gone' as const;
      throw err;
    });
    if (lock === 'gone') return lock;
    if (!lock) return 'held';
    try {
      await rm(dir, { recursive: true, force: true });
    } finally {
      await lock.release();
    }
    return 'removed';
  }

  /** In-flight writes: directory name and when data last arrived. */
  async ingests(): Promise<{ key: string; touchedMs: number }[]> {
    const out: { key: string; touchedMs: number }[] = [];
    for (const key of await readdir(join(this.root, 'ingest')).catch(() => [] as string[])) {
      const dir = join(this.root, 'ingest', key);
      const touchedMs = await stat(join(dir, 'data')).then(
        (s) => s.mtimeMs,
        () => stat(dir).then((s) => s.mtimeMs, () => undefined),
      );
      if (touchedMs !== undefined) out.push({ key, touchedMs });
    }
    return out;
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

  /** Deletes a committed blob, under the store lock. */
  async delete(digest: Digest): Promise<void> {
    await this.exclusive(() => rm(this.path(digest), { force: true }));
  }

  /** Re-hashes a committed blob: the digest of its bytes now (its name, unless it rotted), or undefined when it is gone. */
  async rehash(digest: Digest, each?: (n: number) => Promise<void>): Promise<Digest | undefined> {
    try {
      return (await hashFile(this.path(digest), each)).digest;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  /**
   * @internal puts a verified ingest file in place as `digest`, under the store lock: a hard link,
   * which fails rather than replace a blob already there (kept as it is, marked as just used).
   * True when this call created the blob.
   */
  async publish(dataPath: string, digest: Digest, onCommitted?: OnCommitted): Promise<boolean> {
    await chmod(dataPath, BLOB_MODE);
    return this.exclusive(async () => {
      let created = true;
      try {
        await link(dataPath, this.path(digest));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        created = false;
        await this.touch(digest);
      }
      await onCommitted?.(digest, created);
      return created;
    });
  }
}

/**
 * One in-flight blob write. Bytes are hashed as they arrive and gathered into large writes
 * (staged-file.ts); `commit` checks size and digest, fsyncs and links the file into place. On a
 * mismatch the partial data is deleted, so a corrupt source can never poison a resume.
 *
 * A fresh write whose stages are the shared pool's is hashed on the hashing threads (hash-worker.ts),
 * stage by stage beside the disk write; any other (a resumed write, whose earlier bytes are read
 * back from disk, or one with stages of its own memory) on the calling thread, chunk by chunk.
 */
export class BlobWriter {
  private closed = false;
  /** The digest it was stored under, once committed. */
  committed?: Digest;
  /** Whether the commit created the blob (false: the store had it already). */
  created = false;
  /** The piece hashes (WriterOptions.pieceHashes) of the blob, once committed. */
  pieces: Buffer | undefined;
  private readonly file: StagedFile;
  /** This thread's hashes, or the hashing thread's. */
  private hash: Hash | undefined;
  private pieceHasher: PieceHasher | undefined;
  private stageHash: StageHash | undefined;
  /** The last `room`, until `wrote`. */
  private filling: Buffer | undefined;

  constructor(
    private readonly store: ContentStore,
    private readonly dir: string,
    fh: FileHandle,
    private readonly hashing: boolean,
    private written: number,
    readonly expected: Expected,
    private readonly release: () => Promise<void>,
    private readonly wantPieces = false,
  ) {
    this.file = new StagedFile(join(dir, 'data'), fh, written, {
      writebackEvery: WRITEBACK_EVERY,
      onStage: async (bytes) => this.stageHash?.update(bytes),
      diskFull: (err) =>
        new AcpackError('DISK_FULL', `no space left while writing blob ${describe(this.expected.digest)} under ${this.dir}: free some space and run again (verified blobs are kept)`, { cause: err }),
    });
    this.startHashes();
  }

  private startHashes(): void {
    if (!this.hashing) return;
    if (this.written === 0 && this.file.shared) {
      this.stageHash = new StageHash(this.wantPieces ? PIECE_SIZE : undefined);
    } else {
      this.hash = newHash();
      this.pieceHasher = this.wantPieces ? new PieceHasher() : undefined;
    }
  }

  /** @internal feeds bytes already on disk (a resumed write's) to the hashes. */
  hashOnly(chunk: Uint8Array): void {
    this.hash?.update(chunk);
    this.pieceHasher?.update(chunk);
  }

  /** Bytes accepted so far, including those a previous attempt left on disk. */
  get offset(): number {
    return this.written;
  }

  /** Takes `chunk` (copied: the caller may reuse its memory once this returns). */
  async write(chunk: Uint8Array): Promise<void> {
    await this.refuseBeyond(chunk.length);
    this.hashOnly(chunk);
    this.written += chunk.length;
    await this.file.write(chunk);
  }

  /**
   * Memory to put the next bytes in (never empty), for a source that can produce them in place (a
   * decoder): no copy on the way to disk. `wrote(n)` takes its first n bytes.
   */
  async room(): Promise<Buffer> {
    this.filling = await this.file.room();
    return this.filling;
  }

  async wrote(n: number): Promise<void> {
    const bytes = this.filling!.subarray(0, n);
    this.filling = undefined;
    await this.refuseBeyond(n);
    this.hashOnly(bytes);
    this.written += n;
    await this.file.wrote(n);
  }

  private async refuseBeyond(n: number): Promise<void> {
    const { size } = this.expected;
    if (size !== undefined && this.written + n > size) {
      await this.discard();
      throw this.mismatch(`more than the expected ${formatBytes(size)}`);
    }
  }

  /** Forgets everything written so far (the source could not resume). */
  async reset(): Promise<void> {
    await this.file.truncate(0);
    this.stageHash?.drop();
    this.stageHash = this.hash = this.pieceHasher = undefined;
    this.written = 0;
    this.startHashes();
  }

  /** Cuts the data back to `size` bytes (an upload chunk that was refused after it was written). */
  async truncate(size: number): Promise<void> {
    await this.file.truncate(size);
    this.written = size;
  }

  async commit(onCommitted?: OnCommitted): Promise<Digest> {
    if (!this.hashing) throw new AcpackError('INTERNAL', 'an append-only writer cannot commit');
    await this.file.flush();
    const { digest, size } = this.expected;
    if (size !== undefined && this.written !== size) {
      // Short: keep the partial data, a later attempt resumes it.
      throw new AcpackError(
        'BLOB_SHORT',
        `blob ${describe(digest)}${from(this.expected)} ended after ${formatBytes(this.written)}, expected ${formatBytes(size)}: the download was cut`,
      );
    }
    await this.file.lastWrite();
    const { digest: actual, pieces } = await this.digests();
    if (digest !== undefined && actual !== digest) {
      await this.discard();
      throw this.mismatch(`content hashing to ${shortDigest(actual)}`);
    }
    try {
      await this.file.sync();
    } catch (err) {
      await this.discard();
      throw new AcpackError('WRITE_FAILED', `blob ${describe(actual)}${from(this.expected)} could not be written to disk under ${this.dir} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}): nothing was stored; check the disk`, { cause: err });
    }
    await this.file.close();
    this.closed = true;
    this.pieces = pieces;
    try {
      this.created = await this.store.publish(join(this.dir, 'data'), actual, onCommitted);
    } finally {
      await rm(this.dir, { recursive: true, force: true });
      await this.release();
    }
    this.committed = actual;
    return actual;
  }

  /** Ends this attempt; what was written stays for a resume. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await this.file.flush();
    } finally {
      this.stageHash?.drop();
      await this.file.close();
      await this.release();
    }
  }

  /** Ends this attempt and deletes what it wrote. */
  async discard(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      this.stageHash?.drop();
      await this.file.close();
      await rm(this.dir, { recursive: true, force: true });
    } finally {
      await this.release();
    }
  }

  private async digests(): Promise<{ digest: Digest; pieces?: Buffer }> {
    const staged = this.stageHash;
    this.stageHash = undefined;
    if (staged) return staged.digest();
    return { digest: digestOfHash(this.hash!), pieces: this.pieceHasher?.digest() };
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

function locked(ref: string): AcpackError {
  return new AcpackError('INGEST_LOCKED', `a write of ${ref} is already in progress`);
}

function describe(d: Digest | undefined): string {
  return d ? shortDigest(d) : '(not pinned)';
}

function from(e: Expected): string {
  return e.source ? ` from ${e.source}` : '';
}

