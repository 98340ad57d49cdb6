import type { FileHandle } from 'node:fs/promises';

/** The background flush; a test replaces it to inject a disk error (EIO). */
export const diskSync = { datasync: (fh: FileHandle): Promise<void> => fh.datasync() };

/**
 * Pushes a growing file to disk in the background every `every` bytes written, so the closing fsync
 * finds little left to do and the disk works while data still arrives (left alone, the kernel waits
 * for gigabytes of dirty pages, then stalls every writer at once). One datasync at a time.
 *
 * Linux reports a write-back error (EIO) once per descriptor: if a background sync swallowed it, the
 * final fsync would succeed over bytes that never reached the disk. So the first error is kept and
 * `settled()` throws it.
 */
export class Writeback {
  private unsynced = 0;
  private syncing?: Promise<void>;
  private failed?: unknown;

  constructor(
    private readonly fh: FileHandle,
    private readonly every: number,
  ) {}

  /** `n` more bytes were written. */
  wrote(n: number): void {
    this.unsynced += n;
    if (this.unsynced < this.every || this.syncing) return;
    this.unsynced = 0;
    this.syncing = diskSync
      .datasync(this.fh)
      .catch((err) => {
        this.failed ??= err;
      })
      .finally(() => (this.syncing = undefined));
  }

  /** Waits for the background sync in flight, if any (before the final fsync or a close); throws the first one that failed. */
  async settled(): Promise<void> {
    await this.syncing;
    if (this.failed !== undefined) throw this.failed;
  }
}
