import { createRequire } from 'node:module';
import { Duplex, type DuplexOptions } from 'node:stream';
import zlib from 'node:zlib';
import type * as ZstdBinding from 'zstd-napi/binding.js';

/**
 * zstd-napi is a native addon: the site's single-executable runtime cannot load one. It is required
 * on first use only (decompression on a Node without zlib's zstd), so code that only decompresses on
 * Node ≥ 22.15 never loads it. Compression (the packer's) is zstd-frames.ts.
 */
const napiBinding = () => createRequire(import.meta.url)('zstd-napi/binding.js') as typeof ZstdBinding;

/** Decompressed bytes per native call, and what the readable side holds before it stops asking for more. */
const OUT_CHUNK = 256 << 10;
const OUT_BUFFERED = 1 << 20;
const IN_BUFFERED = 1 << 20;
/**
 * Largest back-reference window a frame may ask for: 2^24 = 16 MiB of decoder memory. Bundles are
 * frames of 8 MiB at most (zstd-frames.ts); even `zstd -19` stays at an 8 MiB window. A frame that asks for more
 * (up to 2 GiB is legal zstd) is refused instead of allocated.
 */
const WINDOW_LOG_MAX = 24;

/** Node ≥ 22.15 (and 23.8) has zstd in zlib: no addon needed to read a bundle. */
const zlibZstd = typeof zlib.createZstdDecompress === 'function';

/** Which decoder zstdDecompress uses on this Node, for tests and diagnostics. */
export const zstdDecoder: 'node:zlib' | 'zstd-napi' = zlibZstd ? 'node:zlib' : 'zstd-napi';

/**
 * zstd decompression driven by demand: a decoder call produces at most OUT_CHUNK bytes, and only
 * while the reader wants more; a written chunk of compressed input is acknowledged (so the next is
 * taken) only once all of it was decompressed and read. Memory stays flat whatever the compression
 * ratio: a few KB that expand to gigabytes cost no more than a few KB that expand to megabytes, and
 * a consumer that stops reading stops the decompression.
 *
 * zlib's stream works that way by itself (since Node 14 it waits for _read when push() says the
 * buffer is full); zstd-napi's DecompressStream does not (it pushes the whole output of each input
 * chunk at once), hence DemandDecompress over its low-level binding on older Nodes.
 */
export function zstdDecompress(): Duplex {
  if (!zlibZstd) return new DemandDecompress();
  // zlib hands these to its Transform; @types/node's ZstdOptions omits the stream's half.
  const options: zlib.ZstdOptions & DuplexOptions = {
    chunkSize: OUT_CHUNK,
    params: { [zlib.constants.ZSTD_d_windowLogMax]: WINDOW_LOG_MAX },
    readableHighWaterMark: OUT_BUFFERED,
    writableHighWaterMark: IN_BUFFERED,
  };
  return zlib.createZstdDecompress(options);
}

class DemandDecompress extends Duplex {
  private readonly dctx: ZstdBinding.DCtx;
  /** The written chunk being decompressed (what is left of it), and its write callback. */
  private input: Buffer | null = null;
  private inputDone: ((err?: Error | null) => void) | null = null;
  private wanted = false;
  private inFrame = false;

  constructor() {
    super({ readableHighWaterMark: OUT_BUFFERED, writableHighWaterMark: IN_BUFFERED });
    const binding = napiBinding();
    this.dctx = new binding.DCtx();
    this.dctx.setParameter(binding.DParameter.windowLogMax, WINDOW_LOG_MAX);
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, done: (err?: Error | null) => void): void {
    this.input = chunk;
    this.inputDone = done;
    this.pump();
  }

  override _final(done: (err?: Error | null) => void): void {
    // Runs after the last write was acknowledged, so every input byte has been decompressed and read.
    if (this.inFrame) {
      done(new Error('the zstd stream ends in the middle of a frame'));
      return;
    }
    this.push(null);
    done();
  }

  override _read(): void {
    this.wanted = true;
    this.pump();
  }

  override _destroy(err: Error | null, done: (err?: Error | null) => void): void {
    const pending = this.inputDone;
    this.input = null;
    this.inputDone = null;
    pending?.(err);
    done(err);
  }

  private pump(): void {
    while (this.wanted && this.input !== null && !this.destroyed) {
      const out = Buffer.allocUnsafe(OUT_CHUNK);
      let ret: number;
      let produced: number;
      let consumed: number;
      try {
        [ret, produced, consumed] = this.dctx.decompressStream(out, this.input);
      } catch (err) {
        this.destroy(err as Error);
        return;
      }
      this.input = this.input.subarray(consumed);
      if (produced > 0) this.wanted = this.push(out.subarray(0, produced));
      // Done with this chunk once zstd took all of it and had room to spare (nothing left to flush).
      if (this.input.length === 0 && (produced < OUT_CHUNK || ret === 0)) {
        this.inFrame = ret !== 0;
        const done = this.inputDone!;
        this.input = null;
        this.inputDone = null;
        done();
      } else if (produced === 0 && consumed === 0) {
        this.destroy(new Error('zstd made no progress on its input'));
        return;
      }
    }
  }
}
