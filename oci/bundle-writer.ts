import { open, rename, rm, stat } from 'node:fs/promises';
import { AcpackError } from './errors.js';
import { StagedFile } from './staged-file.js';
import { readDirect } from './direct-read.js';
import { digestOfHash, hexOf, newHash, shortDigest, type Digest } from './digest.js';
import { TAR_END, tarHeader, tarPadding } from './tar-header.js';
import type { ContentStore } from './store.js';
import type { ImageIndex } from './media-types.js';
import { BLOB_PREFIX, BUNDLE_JSON_ENTRY, BUNDLE_SIG_ENTRY, INDEX_ENTRY, OCI_LAYOUT_BYTES, OCI_LAYOUT_ENTRY, VOLUME_ENTRY, type BundleDescriptor } from './bundle-format.js';
import { DENSE_LEVEL, FrameCompressor, isPacked, PACKED_LEVEL } from './zstd-frames.js';

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
  /** bundle.json.sig for bundle.json's bytes (bundle-signature.ts), when the bundle is signed. */
  sign?: (descriptorBytes: Buffer) => Buffer;
}

/** What a bundle run is writing (the bundle's and its executables' temp files): an interrupted CLI removes them before it exits. */
export const partialBundles = new Set<string>();

/** JSON the bundle carries: two-space indented, trailing newline, keys in the order built. */
export function bundleJsonBytes(value: unknown): Buffer {
  return Buffer.from(`${JSON.stringify(value, null, 2)}\n`);
}

/** A blob entry of a bundle file: a whole blob of the store, or a part of one (`of`, from `offset`). */
export interface EntryBlob extends BundleBlob {
  of?: { digest: Digest; offset: number };
}

/**
 * Streams a bundle out of the store: tar entries in format order, every blob hashed as it is
 * read back, zstd frames with fixed parameters (zstd-frames.ts). Written to a temp file, fsynced
 * and renamed, so a failure never leaves a partial `out`.
 */
export async function writeBundle(
  store: ContentStore,
  descriptor: BundleDescriptor,
  index: ImageIndex,
  blobs: BundleBlob[],
  out: string,
  opts: WriteBundleOptions,
): Promise<void> {
  const tmp = await writeBundleFile(store, metadataEntries(descriptor, index, opts.sign), blobs, out, opts);
  await rename(tmp, out);
  partialBundles.delete(tmp);
}

/**
 * Writes a bundle over volumes: each file `outs[i]` holds the metadata (with its `volume` entry),
 * then `blobs[i]`. All are written under temporary names and renamed only once every one is whole,
 * so a failure leaves none; `maxBytes` bounds each (an internal error past it: planVolumes keeps room).
 */
export async function writeVolumes(
  store: ContentStore,
  descriptor: BundleDescriptor,
  index: ImageIndex,
  blobs: EntryBlob[][],
  outs: string[],
  maxBytes: number,
  opts: WriteBundleOptions,
): Promise<void> {
  const tmps: string[] = [];
  let renamed = 0;
  try {
    for (let i = 0; i < outs.length; i++) {
      const tmp = await writeBundleFile(store, metadataEntries(descriptor, index, opts.sign, i + 1), blobs[i], outs[i], opts);
      tmps.push(tmp);
      const size = (await stat(tmp)).size;
      if (size > maxBytes) throw new AcpackError('INTERNAL', `volume ${i + 1} came to ${size} bytes, over the ${maxBytes} asked for`);
    }
    for (; renamed < outs.length; renamed++) await rename(tmps[renamed], outs[renamed]);
  } catch (err) {
    // None of the set, rather than a set that looks whole in part.
    for (const out of outs.slice(0, renamed)) await rm(out, { force: true });
    throw err;
  } finally {
    for (const tmp of tmps) {
      await rm(tmp, { force: true });
      partialBundles.delete(tmp);
    }
  }
}

/** The metadata entries of a bundle file, in format order; `volume` for a file of a volume set. */
function metadataEntries(descriptor: BundleDescriptor, index: ImageIndex, sign: WriteBundleOptions['sign'], volume?: number): { name: string; data: Buffer }[] {
  const descriptorBytes = bundleJsonBytes(descriptor);
  return [
    { name: OCI_LAYOUT_ENTRY, data: OCI_LAYOUT_BYTES },
    { name: BUNDLE_JSON_ENTRY, data: descriptorBytes },
    ...(sign ? [{ name: BUNDLE_SIG_ENTRY, data: sign(descriptorBytes) }] : []),
    ...(volume !== undefined && (descriptor.volumes ?? 1) > 1 ? [{ name: VOLUME_ENTRY, data: Buffer.from(`${volume}\n`) }] : []),
    { name: INDEX_ENTRY, data: bundleJsonBytes(index) },
  ];
}

/** The tar.zst of `metadata` then `blobs`, fsynced under a temporary name beside `out`, which it returns. */
async function writeBundleFile(store: ContentStore, metadata: { name: string; data: Buffer }[], blobs: EntryBlob[], out: string, opts: WriteBundleOptions): Promise<string> {
  const tmp = `${out}.partial-${process.pid}`;
  partialBundles.add(tmp);
  const file = new StagedFile(tmp, await open(tmp, 'w'), 0, {
    writebackEvery: 64 << 20,
    diskFull: (err) => new AcpackError('DISK_FULL', `no space left on the device of ${out}; nothing was written`, { cause: err }),
  });
  const zstd = new FrameCompressor((frame) => file.write(frame));
  try {
    for (const { name, data } of metadata) {
      await zstd.write(tarHeader(name, data.length, 0o644, opts.mtime), DENSE_LEVEL);
      await zstd.write(data, DENSE_LEVEL);
      await zstd.write(tarPadding(data.length), DENSE_LEVEL);
    }
    await zstd.endFrame(); // a small first frame: whoever reads only the metadata decodes only that
    const head = Buffer.alloc(8);
    for (const blob of blobs) {
      const source = blob.of?.digest ?? blob.digest;
      await opts.ready?.(source);
      const hash = !blob.of && opts.verified?.has(blob.digest) ? undefined : newHash();
      const fh = await open(store.path(source), 'r');
      let seen = 0;
      try {
        // Already compressed (by its first bytes, so parts of a blob go alike): zstd's cheapest level.
        const level = isPacked(head.subarray(0, (await fh.read(head, 0, head.length, 0)).bytesRead)) ? PACKED_LEVEL : DENSE_LEVEL;
        await zstd.write(tarHeader(`${BLOB_PREFIX}${hexOf(blob.digest)}`, blob.size, 0o644, opts.mtime), level);
        for await (const bytes of readDirect(store.path(source), blob.of?.offset ?? 0, blob.size)) {
          hash?.update(bytes);
          await zstd.write(bytes, level);
          seen += bytes.length;
          opts.onBytes?.(bytes.length);
        }
        // A whole blob must end where its size says; a longer file is as corrupt as a shorter one.
        if (!blob.of && seen === blob.size && (await fh.read(head, 0, 1, seen)).bytesRead > 0) seen++;
        if (seen !== blob.size || (hash && digestOfHash(hash) !== blob.digest)) {
          const what = blob.of ? `part ${shortDigest(blob.digest)} of blob ${shortDigest(source)}` : `blob ${shortDigest(blob.digest)}`;
          throw new AcpackError(
            'DIGEST_MISMATCH',
            `${what} in the content store (${store.root}) is corrupt: ${seen} bytes${hash ? ` hashing to ${shortDigest(digestOfHash(hash))}` : ''}, expected ${blob.size}; delete it and run again`,
          );
        }
        await zstd.write(tarPadding(blob.size), level);
      } finally {
        await fh.close();
      }
    }
    await zstd.write(TAR_END, DENSE_LEVEL);
    await zstd.end();
    await file.sync();
    await file.close();
    return tmp;
  } catch (err) {
    await file.close().catch(() => {});
    await rm(tmp, { force: true });
    partialBundles.delete(tmp);
    if ((err as NodeJS.ErrnoException).code === 'ENOSPC') {
      throw new AcpackError('DISK_FULL', `no space left on the device of ${out}; nothing was written`, { cause: err });
    }
    throw err;
  } finally {
    await zstd.close();
  }
}
