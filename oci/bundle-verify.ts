import { AcpackError } from './errors.js';
import { digestOfHash, newHash, shortDigest, type Digest } from './digest.js';
import { bundleEntries } from './bundle-reader.js';
import { manifestDigests, type BundleDescriptor } from './bundle-format.js';
import { isIndexType, type Descriptor, type ImageIndex, type ImageManifest } from './media-types.js';

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
  const need = (d: Descriptor, from: string) => {
    const size = sizes.get(d.digest);
    if (size === undefined) throw new AcpackError('MISSING_BLOB', `${path}: ${from} needs blob ${d.digest} (${d.mediaType}), which is not in the bundle`);
    if (size !== d.size) throw new AcpackError('MISSING_BLOB', `${path}: ${from} says blob ${shortDigest(d.digest)} has ${d.size} bytes, the bundle holds ${size}`);
  };
  const walk = (d: Descriptor, from: string, depth: number): void => {
    need(d, from);
    const m = manifests.get(d.digest);
    if (!m || depth > 4) return;
    if (isIndexType(d.mediaType) || 'manifests' in m) {
      for (const child of (m as ImageIndex).manifests ?? []) {
        if (bundled.has(child.digest)) walk(child, `index ${shortDigest(d.digest)} of ${from}`, depth + 1);
      }
    } else {
      const im = m as ImageManifest;
      if (im.config) need(im.config, `manifest ${shortDigest(d.digest)} of ${from}`);
      for (const layer of im.layers ?? []) {
        if (!layer.urls?.length) need(layer, `manifest ${shortDigest(d.digest)} of ${from}`);
      }
    }
  };
  for (const m of index.manifests ?? []) walk(m, m.annotations?.['org.opencontainers.image.ref.name'] ?? shortDigest(m.digest), 0);
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
