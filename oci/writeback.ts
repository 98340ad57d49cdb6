import type { FileHandle } from 'node:fs/promises';

/**
 * Pushes a growing file to disk in the background every `every` bytes written, so the closing fsync
 * finds little left to do and the disk works while data still arrives (left alone, the kernel waits
 * for gigabytes of dirty pages, then stalls every writer at once). One datasync at a time.
 */
export class Writeback {
  private unsynced = 0;
  private syncing?: Promise<void>;

  constructor(
    private readonly fh: FileHandle,
    private readonly every: number,
  ) {}

  /** `n` more bytes were written. */
  wrote(n: number): void {
    this.unsynced += n;
    if (this.unsynced < this.every || this.syncing) return;
    this.unsynced = 0;
    this.syncing = this.fh.datasync().catch(() => {}).finally(() => (this.syncing = undefined));
  }

  /** Waits for the background sync in flight, if any (before the final fsync or a close). */
  async settled(): Promise<void> {
    await this.syncing;
  }
}
