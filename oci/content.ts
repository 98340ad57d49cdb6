import { open } from 'node:fs/promises';
import type { Digest } from './digest.js';
import { AcpackError } from './errors.js';

// The content store's seams, after containerd's core/content: a provider reads blobs by digest, an
// ingester writes them (bytes become visible only under the digest they hash to), a manager lists
// and deletes them. Two stores have them: the master's (oci/store.ts) and each node's peer cache
// (p2p/piece-store.ts), held to one test suite (test/unit/content-store.test.ts).

export interface ContentInfo {
  digest: Digest;
  size: number;
}

export interface ContentProvider {
  /** A committed blob's size; undefined when the store does not hold it. */
  info(digest: Digest): Promise<ContentInfo | undefined>;
  /** Bytes [start, end) of a committed blob: BLOB_UNKNOWN when absent, SHORT_READ past its end. */
  read(digest: Digest, start: number, end: number): Promise<Buffer>;
}

export interface ContentWriter {
  write(chunk: Uint8Array): Promise<void>;
  /** Makes the bytes visible under their digest, when it and their size are the expected ones; throws otherwise. */
  commit(): Promise<Digest>;
  /** Ends the write and deletes what it wrote. */
  discard(): Promise<void>;
}

export interface ContentIngester {
  /** A write under `ref` (one writer per ref at a time) of the blob `expected` names. */
  writer(ref: string, expected: ContentInfo): Promise<ContentWriter>;
}

export interface ContentManager {
  list(): Promise<Digest[]>;
  delete(digest: Digest): Promise<void>;
}

export type Content = ContentProvider & ContentIngester & ContentManager;

/** Bytes [start, end) of the file holding a committed blob, for both stores' `read`. */
export async function readBlobRange(path: string, digest: Digest, start: number, end: number): Promise<Buffer> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new AcpackError('BLOB_UNKNOWN', `blob ${digest} is not in this store`);
    throw err;
  }
  try {
    const bytes = Buffer.allocUnsafe(Math.max(0, end - start));
    const { bytesRead } = await fh.read(bytes, 0, bytes.length, start);
    if (bytesRead !== bytes.length) throw new AcpackError('SHORT_READ', `blob ${digest} ends before byte ${end} (read ${start + bytesRead})`);
    return bytes;
  } finally {
    await fh.close();
  }
}
