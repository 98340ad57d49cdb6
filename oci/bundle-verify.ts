import { AcpackError } from './errors.js';
import type { Digest } from './digest.js';
import { bundleEntries, drainVerified } from './bundle-reader.js';
import { manifestDigests, type BundleDescriptor } from './bundle-format.js';
import type { ImageIndex, ImageManifest } from './media-types.js';
import { graphOf, walkBundle } from './bundle-graph.js';
import type { BundleSignature } from './bundle-signature.js';

export interface VerifyReport {
  descriptor: BundleDescriptor;
  blobs: number;
  bytes: number;
  /** Which file of a volume set this is. */
  volume?: number;
}

/**
 * Reads a whole bundle once: re-hashes every blob, then checks that everything reachable from
 * index.json is there with its size (an index's children only where bundle.json says that
 * platform was bundled). The reader has already refused whatever the bundle does not declare
 * (sizes, duplicates, totals, metadata). Throws at the first bad entry, naming it.
 * `checkOrigin` gets bundle.json and its signature once the metadata is read, before any blob:
 * it throws to stop there.
 */
export async function verifyBundle(path: string, onBytes?: (n: number) => void, checkOrigin?: (descriptorBytes: Buffer, signature?: BundleSignature) => void): Promise<VerifyReport> {
  let descriptor: BundleDescriptor | undefined;
  let index: ImageIndex | undefined;
  const sizes = new Map<Digest, number>();
  /** Only what the walk needs of each manifest (its children), not the whole document. */
  const manifests = new Map<Digest, ImageIndex & ImageManifest>();
  let bytes = 0;

  let volume: number | undefined;
  let descriptorBytes: Buffer | undefined;
  let signature: BundleSignature | undefined;
  for await (const entry of bundleEntries(path)) {
    if (entry.kind === 'descriptor') [descriptor, descriptorBytes] = [entry.descriptor, entry.data];
    else if (entry.kind === 'signature') signature = entry.signature;
    else if (entry.kind === 'volume') volume = entry.volume;
    else if (entry.kind === 'index') {
      index = entry.index;
      checkOrigin?.(descriptorBytes!, signature);
    } else if (entry.kind === 'blob') {
      const seen = await drainVerified(entry, path, onBytes);
      sizes.set(entry.digest, seen);
      bytes += seen;
      if (entry.manifest) manifests.set(entry.digest, graphOf(entry.manifest));
    }
  }
  if (!descriptor || !index) throw new AcpackError('BAD_BUNDLE', `${path}: bundle.json or index.json is missing`);

  // Format 2: a volume of a set holds some of the blobs, a delta leaves its base's out. The others
  // are checked against bundle.json's list (their own volume hashes them; the site holds the base),
  // and only the manifests held here are walked into. The reader has checked that this file holds
  // every blob the list puts in it.
  const listed = new Map((descriptor.blobs.list ?? []).map((b) => [b.digest, b.size] as const));
  await walkBundle(path, descriptor, index, {
    size: async (d) => sizes.get(d) ?? listed.get(d),
    manifest: async (d) => manifests.get(d),
  });
  for (const d of manifestDigests(descriptor)) {
    if (!sizes.has(d) && !listed.has(d)) throw new AcpackError('MISSING_BLOB', `${path}: bundle.json lists manifest ${d}, which is not in the bundle`);
  }
  return { descriptor, blobs: sizes.size, bytes, ...(volume ? { volume } : {}) };
}
