import { createWriteStream } from 'node:fs';
import { open, rename, rm } from 'node:fs/promises';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import { AcpackError } from './errors.js';
import { digestOfHash, newHash, shortDigest, type Digest, hexOf } from './digest.js';
import type { ContentStore } from './store.js';
import type { ImageIndex } from './media-types.js';
import { BLOB_PREFIX, BUNDLE_JSON_ENTRY, INDEX_ENTRY, OCI_LAYOUT_BYTES, OCI_LAYOUT_ENTRY, type BundleDescriptor } from './bundle-format.js';
import { zstdCompress } from './zstd.js';

export interface BundleBlob {
  digest: Digest;
  size: number;
}

export interface WriteBundleOptions {
  /** Entry mtime in seconds; SOURCE_DATE_EPOCH by convention. */
  mtime: number;
  /** Bytes of blob data read from the store so far (for progress). */
  onBytes?: (n: number) => void;
  /** A blob still arriving in the store: the writer waits for it before reading it. */
  ready?: (digest: Digest) => Promise<unknown> | undefined;
  /** Blobs hashed on their way into the store moments ago; every other blob is re-hashed as it is read. */
  verified?: ReadonlySet<Digest>;
}

/** JSON the bundle carries: two-space indented, trailing newline, keys in the order built. */
export function bundleJsonBytes(value: unknown): Buffer {
  return Buffer.from(`${JSON.stringify(value, null, 2)}\n`);
}

/**
 * Streams a bundle out of the store: tar entries in format order, every blob hashed as it is
 * read back, zstd with fixed parameters. Written to a temp file, fsynced and renamed, so a
 * failure never leaves a partial `out`.
 */
export async function writeBundle(
  store: ContentStore,
  descriptor: BundleDescriptor,
  index: ImageIndex,
  blobs: BundleBlob[],
  out: string,
  opts: WriteBundleOptions,
): Promise<void> {
  const tmp = `${out}.partial-${process.pid}`;
  const pack = tar.pack();
  const mtime = new Date(opts.mtime * 1000);
  const header = (name: string, size: number) => ({ name, size, mode: 0o644, mtime, uid: 0, gid: 0, uname: '', gname: '', type: 'file' as const });

  const fill = async () => {
    const small = (name: string, data: Buffer) =>
      new Promise<void>((resolve, reject) => pack.entry(header(name, data.length), data, (err) => (err ? reject(err) : resolve())));
    await small(OCI_LAYOUT_ENTRY, OCI_LAYOUT_BYTES);
    await small(BUNDLE_JSON_ENTRY, bundleJsonBytes(descriptor));
    await small(INDEX_ENTRY, bundleJsonBytes(index));
    for (const blob of blobs) {
      await opts.ready?.(blob.digest);
      const entry = pack.entry(header(`${BLOB_PREFIX}${hexOf(blob.digest)}`, blob.size));
      const check = opts.verified?.has(blob.digest) ? new CountingPassThrough(opts.onBytes) : new VerifyingPassThrough(blob, opts.onBytes);
      await pipeline(store.read(blob.digest), check, entry);
    }
    pack.finalize();
  };

  try {
    await Promise.all([fill(), pipeline(pack, zstdCompress(), createWriteStream(tmp))]);
    const fh = await open(tmp, 'r+');
    await fh.sync();
    await fh.close();
    await rename(tmp, out);
  } catch (err) {
    pack.destroy();
    await rm(tmp, { force: true });
    if ((err as NodeJS.ErrnoException).code === 'ENOSPC') {
      throw new AcpackError('DISK_FULL', `no space left on the device of ${out}; nothing was written`, { cause: err });
    }
    throw err;
  }
}

/** Passes bytes through, reporting how many. */
class CountingPassThrough extends Transform {
  constructor(private readonly onBytes?: (n: number) => void) {
    super({ highWaterMark: 1 << 20 });
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.onBytes?.(chunk.length);
    done(null, chunk);
  }
}

/** Passes bytes through, and fails at the end if they do not hash to the expected digest. */
export class VerifyingPassThrough extends Transform {
  private readonly hash = newHash();
  private seen = 0;

  constructor(
    private readonly expected: BundleBlob,
    private readonly onBytes?: (n: number) => void,
    private readonly where = 'the content store',
  ) {
    super({ highWaterMark: 1 << 20 });
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.hash.update(chunk);
    this.seen += chunk.length;
    this.onBytes?.(chunk.length);
    done(null, chunk);
  }

  override _flush(done: TransformCallback): void {
    const actual = digestOfHash(this.hash);
    if (actual !== this.expected.digest || this.seen !== this.expected.size) {
      done(
        new AcpackError(
          'DIGEST_MISMATCH',
          `blob ${shortDigest(this.expected.digest)} in ${this.where} is corrupt (read ${this.seen} bytes hashing to ${shortDigest(actual)}, expected ${this.expected.size})`,
        ),
      );
      return;
    }
    done();
  }
}
