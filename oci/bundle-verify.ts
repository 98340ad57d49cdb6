import { AcpackError } from './errors.js';
import { digestOfHash, newHash, shortDigest, type Digest } from './digest.js';
import { bundleEntries } from './bundle-reader.js';
import { manifestDigests, type BundleDescriptor } from './bundle-format.js';
import type { ImageIndex, ImageManifest } from './media-types.js';
import { walkBundle } from './bundle-graph.js';

export interface VerifyReport {
  descriptor: BundleDescriptor;
  blobs: number;
  bytes: number;
}

const MAX_MANIFEST_BYTES = 4 << 20;

/**
 * Reads a whole bundle once: re-hashes every blob, then checks that everything reachable from
 * index.json is there with its size (an index's children only where bundle.json says that
 * platform was bundled). Throws at the first bad entry, naming it.
 */
export async function verifyBundle(path: string, onBytes?: (n: number) => void): Promise<VerifyReport> {
  let descriptor: BundleDescriptor | undefined;
  let index: ImageIndex | undefined;
  let promised = new Set<Digest>();
  const sizes = new Map<Digest, number>();
  const manifests = new Map<Digest, ImageManifest | ImageIndex>();
  let bytes = 0;

  for await (const entry of bundleEntries(path)) {
    if (entry.kind === 'descriptor') {
      descriptor = entry.descriptor;
      promised = manifestDigests(descriptor);
    } else if (entry.kind === 'index') {
      index = entry.index;
      for (const m of index.manifests ?? []) promised.add(m.digest);
    } else if (entry.kind === 'blob') {
      if (sizes.has(entry.digest)) throw bad(path, `blob ${shortDigest(entry.digest)} appears twice`);
      const keep = promised.has(entry.digest) && entry.size <= MAX_MANIFEST_BYTES;
      const hash = newHash();
      const chunks: Buffer[] = [];
      let seen = 0;
      for await (const chunk of entry.stream) {
        hash.update(chunk as Buffer);
        seen += (chunk as Buffer).length;
        onBytes?.((chunk as Buffer).length);
        if (keep) chunks.push(chunk as Buffer);
      }
      const actual = digestOfHash(hash);
      if (actual !== entry.digest || seen !== entry.size) {
        throw new AcpackError('DIGEST_MISMATCH', `${path}: blob ${entry.digest} is corrupt: its ${seen} bytes hash to ${shortDigest(actual)}`);
      }
      sizes.set(entry.digest, seen);
      bytes += seen;
      if (keep) {
        try {
          manifests.set(entry.digest, JSON.parse(Buffer.concat(chunks).toString('utf8')));
        } catch {
          throw bad(path, `manifest ${shortDigest(entry.digest)} is not JSON`);
        }
      }
    }
  }
  if (!descriptor || !index) throw bad(path, 'bundle.json or index.json is missing');

  const bundled = manifestDigests(descriptor);
  await walkBundle(path, descriptor, index, {
    size: async (d) => sizes.get(d),
    manifest: async (d) => manifests.get(d) as (ImageIndex & ImageManifest) | undefined, // larger ones are not kept
  });
  for (const d of bundled) {
    if (!sizes.has(d)) throw new AcpackError('MISSING_BLOB', `${path}: bundle.json lists manifest ${d}, which is not in the bundle`);
  }
  if (descriptor.blobs.count !== sizes.size || descriptor.blobs.bytes !== bytes) {
    throw bad(path, `bundle.json promises ${descriptor.blobs.count} blobs / ${descriptor.blobs.bytes} bytes, the bundle holds ${sizes.size} / ${bytes}`);
  }
  return { descriptor, blobs: sizes.size, bytes };
}

function bad(path: string, why: string): AcpackError {
  return new AcpackError('BAD_BUNDLE', `${path}: ${why}`);
}
