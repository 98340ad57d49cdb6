import { open, type FileHandle } from 'node:fs/promises';
import type { Readable } from 'node:stream';

/** Bytes pulled one chunk at a time; a chunk may be a view of memory that the next call reuses. */
export interface Chunks {
  /** The next chunk, or undefined at the end; valid until the next call. */
  next(): Promise<Buffer | undefined>;
  /** Stops reading (an open file is closed once its last read returns). */
  close(): void;
}

/** Bytes per read of a file. */
const READ_BYTES = 1 << 20;

/**
 * A file read through two buffers used in turn: while one chunk is being used, the next read fills
 * the other (the one the caller just gave back by asking again). A fresh buffer per read, as a
 * ReadStream's, costs a page fault per 4 KiB and work for the collector, for every byte of a
 * multi-gigabyte bundle.
 */
export function fileChunks(path: string): Chunks {
  const buffers = [Buffer.allocUnsafeSlow(READ_BYTES), Buffer.allocUnsafeSlow(READ_BYTES)];
  let turn = 0;
  let file: Promise<FileHandle> | undefined;
  let reading: Promise<number> | undefined;
  let closed = false;
  const readInto = (buf: Buffer) => file!.then((fh) => fh.read(buf, 0, buf.length, null)).then((r) => r.bytesRead);
  const closeFile = () => {
    const fh = file;
    file = undefined;
    // After the read in flight, if any: a handle closed under a read fails it.
    void Promise.allSettled([reading]).then(() => fh?.then((h) => h.close()).catch(() => {}));
  };
  return {
    async next() {
      if (closed) return undefined;
      file ??= open(path, 'r');
      reading ??= readInto(buffers[turn]);
      const n = await reading;
      const buf = buffers[turn];
      if (n === 0) {
        reading = undefined;
        this.close();
        return undefined;
      }
      turn ^= 1;
      reading = readInto(buffers[turn]);
      reading.catch(() => {}); // thrown by the next call, if it comes
      return buf.subarray(0, n);
    },
    close() {
      if (closed) return;
      closed = true;
      closeFile();
    },
  };
}

/** A stream's chunks as they come (standard input: a pipe hands over fresh memory anyway). */
export function streamChunks(stream: Readable): Chunks {
  const it = stream[Symbol.asyncIterator]();
  return {
    async next() {
      const r = await it.next();
      return r.done ? undefined : (r.value as Buffer);
    },
    close() {
      stream.destroy();
    },
  };
}
