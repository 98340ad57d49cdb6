import { createReadStream } from 'node:fs';
import type { Readable } from 'node:stream';
import tar from 'tar-stream';
import { AcpackError, formatBytes } from './errors.js';
import { isDigest, type Digest } from './digest.js';
import { BLOB_PREFIX, BUNDLE_FORMAT, BUNDLE_JSON_ENTRY, BUNDLE_SIG_ENTRY, INDEX_ENTRY, OCI_LAYOUT_ENTRY, type BundleDescriptor } from './bundle-format.js';
import type { ImageIndex } from './media-types.js';
import { zstdDecompress } from './zstd.js';

export type BundleEntry =
  | { kind: 'layout'; data: Buffer }
  | { kind: 'descriptor'; data: Buffer; descriptor: BundleDescriptor }
  | { kind: 'signature'; data: Buffer }
  | { kind: 'index'; data: Buffer; index: ImageIndex }
  | { kind: 'blob'; digest: Digest; size: number; stream: Readable };

/** Metadata entries are read into memory; nothing honest comes close to this. */
const MAX_METADATA_BYTES = 64 << 20;

const ORDER = [OCI_LAYOUT_ENTRY, BUNDLE_JSON_ENTRY, BUNDLE_SIG_ENTRY, INDEX_ENTRY];

/**
 * Streams the entries of a bundle.tar.zst in order. A blob's stream must be consumed before
 * the next entry is asked for. Anything that is not format v1 (unknown names, paths, links,
 * out-of-order metadata, oversized metadata) is refused with BAD_BUNDLE. Breaking out of the
 * loop stops reading.
 */
export async function* bundleEntries(input: Readable | string, label = typeof input === 'string' ? input : 'the bundle'): AsyncGenerator<BundleEntry> {
  const source = typeof input === 'string' ? createReadStream(input, { highWaterMark: 1 << 20 }) : input;
  const extract = tar.extract();
  const bad = (why: string) => new AcpackError('BAD_BUNDLE', `${label} is not a valid acpack bundle: ${why}`);
  const decompress = zstdDecompress();
  const fail = (err: Error) => extract.destroy(decodeError(err, label));
  source.on('error', fail);
  decompress.on('error', fail);
  source.pipe(decompress).pipe(extract);

  let lastMeta = -1;
  let sawBlob = false;
  try {
    for await (const entry of extract) {
      const { name, type, size = 0 } = entry.header;
      if (type !== 'file') throw bad(`entry "${name}" is a ${type}, only plain files belong in a bundle`);
      if (name.startsWith(BLOB_PREFIX)) {
        const digest = `sha256:${name.slice(BLOB_PREFIX.length)}`;
        if (!isDigest(digest)) throw bad(`entry "${name}" is not named by a sha256 digest`);
        if (lastMeta < ORDER.indexOf(INDEX_ENTRY)) throw bad(`blob ${name} comes before index.json`);
        sawBlob = true;
        yield { kind: 'blob', digest, size, stream: entry as unknown as Readable };
        entry.resume(); // whatever the consumer left unread
        continue;
      }
      const at = ORDER.indexOf(name);
      if (at < 0) throw bad(`unexpected entry "${name}"`);
      if (at <= lastMeta || sawBlob) throw bad(`entry "${name}" is out of order`);
      if (size > MAX_METADATA_BYTES) throw bad(`entry "${name}" is ${formatBytes(size)}, far more than metadata can be`);
      lastMeta = at;
      const data = await readAll(entry as unknown as Readable);
      if (name === OCI_LAYOUT_ENTRY) yield { kind: 'layout', data };
      else if (name === BUNDLE_SIG_ENTRY) yield { kind: 'signature', data };
      else if (name === BUNDLE_JSON_ENTRY) {
        const descriptor = parseJson<BundleDescriptor>(data, name, bad);
        if (descriptor.format !== BUNDLE_FORMAT) throw bad(`bundle.json says format ${String(descriptor.format)}; this acpack reads format ${BUNDLE_FORMAT}`);
        yield { kind: 'descriptor', data, descriptor };
      } else {
        yield { kind: 'index', data, index: parseJson<ImageIndex>(data, name, bad) };
      }
    }
    if (lastMeta < ORDER.indexOf(INDEX_ENTRY)) throw bad('it ends before index.json');
  } finally {
    source.destroy();
    decompress.destroy();
    extract.destroy();
  }
}

/** Reads just bundle.json, stopping right after it: cheap whatever the bundle's size. */
export async function readDescriptor(path: string): Promise<BundleDescriptor> {
  for await (const entry of bundleEntries(path)) {
    if (entry.kind === 'descriptor') return entry.descriptor;
  }
  throw new AcpackError('BAD_BUNDLE', `${path} has no bundle.json`);
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

function parseJson<T>(data: Buffer, name: string, bad: (why: string) => Error): T {
  try {
    return JSON.parse(data.toString('utf8')) as T;
  } catch {
    throw bad(`${name} is not JSON`);
  }
}

function decodeError(err: Error, label: string): Error {
  if (err instanceof AcpackError) return err;
  if ((err as NodeJS.ErrnoException).code === 'ENOENT') return new AcpackError('NOT_FOUND', `${label} does not exist`);
  return new AcpackError('BAD_BUNDLE', `${label} could not be decompressed (${err.message}): it is truncated or not a zstd bundle`, { cause: err });
}
