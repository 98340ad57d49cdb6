import { createRequire } from 'node:module';
import zlib from 'node:zlib';
import type * as ZstdBinding from 'zstd-napi/binding.js';
import type { Chunks } from './chunks.js';

/**
 * zstd-napi is a native addon: the site's single-executable runtime cannot load one. It is required
 * on first use only (decompression on a Node without zlib's zstd), so code that only decompresses on
 * Node ≥ 22.15 never loads it. Compression (the packer's) is zstd-frames.ts.
 */
const napiBinding = () => createRequire(import.meta.url)('zstd-napi/binding.js') as typeof ZstdBinding;

/** Decompressed bytes per read: the one output buffer a reader fills again and again. */
const OUT_BYTES = 1 << 20;
const EMPTY = Buffer.alloc(0);
/**
 * Largest back-reference window a frame may ask for: 2^24 = 16 MiB of decoder memory. Bundles are
 * frames of 8 MiB at most (zstd-frames.ts); even `zstd -19` stays at an 8 MiB window. A frame that asks for more
 * (up to 2 GiB is legal zstd) is refused instead of allocated.
 */
const WINDOW_LOG_MAX = 24;

/** Node ≥ 22.15 (and 23.8) has zstd in zlib: no addon needed to read a bundle. */
const zlibZstd = typeof zlib.createZstdDecompress === 'function';

/** Which decoder ZstdReader uses on this Node, for tests and diagnostics. */
export const zstdDecoder: 'node:zlib' | 'zstd-napi' = zlibZstd ? 'node:zlib' : 'zstd-napi';

/**
 * One step of zstd decompression into memory the caller owns: whatever the decoder produced from
 * `input` into `out`, and how much of `input` it took.
 */
interface Inflater {
  inflate(input: Buffer, out: Buffer): { consumed: number; produced: number };
  /** Throws unless the input so far ended where a frame ends. */
  finish(): void;
  close(): void;
}

/**
 * A zstd stream, decompressed as it is read: each `read` returns the next bytes (at most 1 MiB) as a
 * view of one buffer that the next `read` fills again, so a multi-gigabyte bundle costs the same
 * few megabytes of memory and no allocation per byte (a fresh buffer per chunk costs a page fault
 * per 4 KiB, which is most of a stream decoder's time here); `readInto` decompresses into memory of
 * the caller's instead (the store's staging buffer: not even that one copy). The decoder runs only
 * when asked, on the calling thread: a few KB that expand to gigabytes cost no more than the reads
 * made of them, and a reader that stops stops the decompression. Compressed input is taken from
 * `input` only as the decoder needs it.
 */
export class ZstdReader {
  private readonly out = Buffer.allocUnsafeSlow(OUT_BYTES);
  private readonly inflater: Inflater = zlibZstd ? new ZlibInflater() : new NapiInflater();
  private input: Buffer | undefined;
  private full = false;
  private ended = false;

  constructor(private readonly source: Chunks) {}

  /** The next decompressed bytes, or undefined at the end of the stream; valid until the next call. */
  async read(): Promise<Buffer | undefined> {
    const n = await this.readInto(this.out);
    return n > 0 ? this.out.subarray(0, n) : undefined;
  }

  /**
   * Decompresses the next bytes straight into `dst` (not empty), at most its length: how many, 0 at
   * the end of the stream. What did not fit stays in the decoder for the next call.
   */
  async readInto(dst: Buffer): Promise<number> {
    // No room would read as a full output forever: the loop below never ends.
    if (dst.length === 0) throw new RangeError('ZstdReader.readInto needs room for at least one byte');
    for (;;) {
      // A call that filled its output may have left more in the decoder: drained before more input.
      if (!this.full && !this.input?.length) {
        if (this.ended) return 0;
        this.input = await this.source.next();
        if (!this.input) {
          this.ended = true;
          this.inflater.finish();
          return 0;
        }
      }
      const input = this.input ?? EMPTY;
      const { consumed, produced } = this.inflater.inflate(input, dst);
      this.input = input.subarray(consumed);
      this.full = produced === dst.length;
      if (produced > 0) return produced;
      if (consumed === 0 && input.length > 0) throw new Error('zstd made no progress on its input');
    }
  }

  close(): void {
    this.inflater.close();
    this.source.close();
  }
}

/**
 * zlib's zstd decoder, driven through its handle with output buffers of our own: the stream around
 * it allocates a fresh buffer for every chunk it produces. The handle's shape (`writeSync` with
 * in/out offsets, the two counters in `_writeState`) is that of every zlib handle since Node 10;
 * the site runtime pins the Node release, and tests run it.
 */
class ZlibInflater implements Inflater {
  private readonly stream = zlib.createZstdDecompress({ params: { [zlib.constants.ZSTD_d_windowLogMax]: WINDOW_LOG_MAX } });
  private readonly handle: ZlibHandle;
  private readonly state: Uint32Array;
  private error: Error | undefined;

  constructor() {
    const inner = this.stream as unknown as { _handle?: ZlibHandle; _writeState?: Uint32Array };
    if (typeof inner._handle?.writeSync !== 'function' || !(inner._writeState instanceof Uint32Array)) {
      throw new Error(`this Node (${process.version}) has zstd in zlib, but not the handle acpack drives it through`);
    }
    this.handle = inner._handle;
    this.state = inner._writeState;
    this.handle.onerror = (message: string, _errno: number, code: string) => {
      this.error = new Error(`${message} (${code})`);
    };
  }

  inflate(input: Buffer, out: Buffer): { consumed: number; produced: number } {
    this.handle.writeSync(zlib.constants.ZSTD_e_continue, input, 0, input.length, out, 0, out.length);
    this.check();
    return { consumed: input.length - this.state[1], produced: out.length - this.state[0] };
  }

  finish(): void {
    // Ending with no input left: the decoder says "unexpected end of file" in the middle of a frame.
    this.handle.writeSync(zlib.constants.ZSTD_e_end, EMPTY, 0, 0, Buffer.alloc(1), 0, 1);
    this.check();
  }

  close(): void {
    this.stream.close();
  }

  private check(): void {
    const err = this.error;
    if (err) throw err;
  }
}

interface ZlibHandle {
  writeSync(flush: number, input: Buffer, inOff: number, inLen: number, out: Buffer, outOff: number, outLen: number): void;
  onerror: (message: string, errno: number, code: string) => void;
}

/** zstd-napi's low-level decoder, for a Node without zstd in zlib (the packer's Node 20). */
class NapiInflater implements Inflater {
  private readonly dctx: ZstdBinding.DCtx;
  private inFrame = false;

  constructor() {
    const binding = napiBinding();
    this.dctx = new binding.DCtx();
    this.dctx.setParameter(binding.DParameter.windowLogMax, WINDOW_LOG_MAX);
  }

  inflate(input: Buffer, out: Buffer): { consumed: number; produced: number } {
    const [ret, produced, consumed] = this.dctx.decompressStream(out, input);
    // A call that did nothing says what the next frame's header needs: not a frame left open.
    if (produced > 0 || consumed > 0) this.inFrame = ret !== 0;
    return { consumed, produced };
  }

  finish(): void {
    if (this.inFrame) throw new Error('the zstd stream ends in the middle of a frame');
  }

  close(): void {}
}
