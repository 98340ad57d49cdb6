import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { Writeback } from './writeback.js';
import { copyInto, DIRECT_ALIGN, giveStage, isAligned, STAGE_BYTES, takeStage } from './stages.js';

export interface StagedFileOptions {
  /** Push page-cache writes to disk every this many bytes (see Writeback). */
  writebackEvery: number;
  /** Sees each stage's bytes, in order, while they are written; the stage is reused once both are done. */
  onStage?: (bytes: Buffer) => Promise<void>;
  /** The error to throw for a full disk (ENOSPC, EDQUOT). */
  diskFull: (err: Error) => Error;
}

/**
 * Appends to a file through staging buffers (stages.ts): bytes are copied in, so a caller may reuse
 * its memory as soon as `write` returns, and a full stage is written in the background while the
 * next one fills (one write in flight). A full stage at a block-aligned offset goes to disk with
 * O_DIRECT, straight from its memory; the rest (a file's tail, an unaligned resume, a file system
 * without O_DIRECT) through the page cache, pushed to disk by a Writeback as it grows.
 *
 * A file keeps the (at most two) stages it took until it is closed. Its first comes from the shared
 * pool when one is free, and then so do all of them (`shared`): with none free for a second, it
 * waits for its first to be written and fills that again. With none free at all, it uses memory of
 * its own.
 */
export class StagedFile {
  private stage: Buffer | undefined;
  private staged = 0;
  /** Stages of this file not being filled or written. */
  private readonly spare: Buffer[] = [];
  private owned = 0;
  /** Whether this file's stages are the pool's (page-aligned shared memory). */
  readonly shared: boolean;
  /** Bytes in the file: where the next write lands. */
  private onDisk: number;
  /** The file opened with O_DIRECT, once a full stage goes to disk; null where that cannot work. */
  private direct: FileHandle | null | undefined;
  /** The stage being written in the background. */
  private flushing: Promise<void> | undefined;
  private readonly writeback: Writeback;
  /** Set by lastWrite: the stages are given back. */
  private ended = false;

  constructor(
    readonly path: string,
    private readonly fh: FileHandle,
    offset: number,
    private readonly opts: StagedFileOptions,
  ) {
    this.onDisk = offset;
    this.writeback = new Writeback(fh, opts.writebackEvery);
    const first = takeStage();
    this.shared = first !== undefined;
    this.spare.push(first ?? Buffer.allocUnsafeSlow(STAGE_BYTES));
    this.owned = 1;
  }

  async write(chunk: Uint8Array): Promise<void> {
    for (let at = 0; at < chunk.length; ) {
      const room = await this.room();
      const n = Math.min(chunk.length - at, room.length);
      copyInto(room, chunk.subarray(at, at + n));
      at += n;
      await this.wrote(n);
    }
  }

  /**
   * The free part of the stage being filled (never empty), for a caller that produces its bytes
   * in place (a decoder) rather than copying them in; `wrote` says how many it put there.
   */
  async room(): Promise<Buffer> {
    if (this.ended) throw new Error(`${this.path} was written to after its last write`);
    this.stage ??= await this.nextStage();
    return this.stage.subarray(this.staged);
  }

  /** Takes the first `n` bytes of the last `room` as the file's next bytes. */
  async wrote(n: number): Promise<void> {
    this.staged += n;
    if (this.staged === this.stage!.length) await this.startFlush();
  }

  /**
   * Everything written so far is in the file, and the stages go back to the pool now rather than
   * at `close`: a blob that waits for its fsync and commit holds none (each stage a process
   * touches costs it 1024 page faults the first time). No write may follow.
   */
  async lastWrite(): Promise<void> {
    await this.flush();
    this.ended = true;
    for (const s of this.spare.splice(0)) giveStage(s);
  }

  /** Everything written so far, in the file (not yet durable: see `sync`). */
  async flush(): Promise<void> {
    await this.settleFlush();
    await this.writeStage();
  }

  /** Everything written so far, durable. */
  async sync(): Promise<void> {
    await this.flush();
    await this.writeback.settled(); // a background sync that failed (EIO) fails this one
    await this.fh.sync();
  }

  /** Cuts the file to `size` bytes, dropping what was staged and not written yet when `size` is 0. */
  async truncate(size: number): Promise<void> {
    if (size === 0) {
      await this.settleFlush().catch(() => {});
      this.staged = 0;
    } else await this.flush();
    await this.fh.truncate(size);
    this.onDisk = size;
  }

  /** Closes the file; what was staged and not flushed is lost. The stages go back to the pool. */
  async close(): Promise<void> {
    try {
      await this.settleFlush().catch(() => {});
      await this.writeback.settled().catch(() => {});
    } finally {
      if (this.stage) this.spare.push(this.stage);
      this.stage = undefined;
      for (const s of this.spare.splice(0)) giveStage(s);
      await this.closeDirect().catch(() => {});
      await this.fh.close();
    }
  }

  /** A stage to fill: a spare one, a second from the pool, or the one being written once it is. */
  private async nextStage(): Promise<Buffer> {
    const spare = this.spare.pop();
    if (spare) return spare;
    const pooled = this.shared && this.owned < 2 ? takeStage() : undefined;
    if (pooled) {
      this.owned++;
      return pooled;
    }
    if (!this.shared && this.owned < 2) {
      this.owned++;
      return Buffer.allocUnsafeSlow(STAGE_BYTES);
    }
    await this.settleFlush();
    return this.spare.pop()!;
  }

  /** Writes the full stage in the background, once the write before it is done; its failure is thrown by the next call that waits. */
  private async startFlush(): Promise<void> {
    await this.settleFlush();
    const writing = this.writeStage();
    writing.catch(() => {});
    this.flushing = writing;
  }

  private async settleFlush(): Promise<void> {
    const writing = this.flushing;
    this.flushing = undefined;
    await writing;
  }

  private async writeStage(): Promise<void> {
    const buf = this.stage;
    const n = this.staged;
    this.stage = undefined;
    this.staged = 0;
    if (!buf) return;
    try {
      const bytes = buf.subarray(0, n);
      await Promise.all([this.toDisk(bytes), this.opts.onStage?.(bytes)]);
    } finally {
      this.spare.push(buf);
    }
  }

  private async toDisk(bytes: Buffer): Promise<void> {
    const n = bytes.length;
    try {
      let at = await this.writeDirect(bytes);
      if (at < n) {
        this.writeback.wrote(n - at);
        // At its place: the descriptor's own position knows nothing of the direct writes.
        while (at < n) at += (await this.fh.write(bytes, at, n - at, this.onDisk + at)).bytesWritten;
      }
      this.onDisk += n;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw code === 'ENOSPC' || code === 'EDQUOT' ? this.opts.diskFull(err as Error) : err;
    }
  }

  /**
   * Writes whole blocks with O_DIRECT where it can: returns how many bytes went that way, the rest
   * to go through the page cache. Direct writes are on the disk when they return; the final fsync
   * makes them durable with the file's metadata.
   */
  private async writeDirect(bytes: Buffer): Promise<number> {
    const n = bytes.length;
    if (this.direct === null || n === 0 || !isAligned(bytes) || n % DIRECT_ALIGN !== 0 || this.onDisk % DIRECT_ALIGN !== 0) return 0;
    let at = 0;
    try {
      this.direct ??= await open(this.path, constants.O_WRONLY | constants.O_DIRECT);
      while (at < n) at += (await this.direct.write(bytes, at, n - at, this.onDisk + at)).bytesWritten;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EINVAL') throw err;
      // tmpfs before Linux 6.6, some FUSE file systems: the page cache it is, for this file.
      await this.closeDirect();
      this.direct = null;
    }
    return at;
  }

  private async closeDirect(): Promise<void> {
    const fh = this.direct;
    this.direct = undefined;
    await fh?.close();
  }
}
