import type { Readable } from 'node:stream';
import { AcpackError, formatBytes } from '../oci/errors.js';
import { shortDigest, type Digest } from '../oci/digest.js';
import { walkBundle } from '../oci/bundle-graph.js';
import { ContentStore } from '../oci/store.js';
import { bundleEntries } from '../oci/bundle-reader.js';
import { manifestDigests, type BundleDescriptor } from '../oci/bundle-format.js';
import { ANNOTATION_REF_NAME, type ImageIndex, type ImageManifest } from '../oci/media-types.js';
import { IndexDb, type ManifestRow, type TagRow } from './index-db.js';
import { splitRefName } from './naming.js';

export interface ImportResult {
  name: string;
  version: string;
  blobs: number;
  /** Blobs the store did not have before. */
  added: number;
  addedBytes: number;
  refs: number;
}

/**
 * Streams a bundle into the store in one pass, hashing every blob as it is written, then records
 * its references in the index. Anything wrong (a corrupt, truncated or hostile bundle, a full disk)
 * leaves the store and the index exactly as they were: blobs this import added are removed again.
 */
export async function importBundle(input: string | Readable, storeRoot: string, onBytes?: (n: number) => void, label?: string): Promise<ImportResult> {
  const source = label ?? (typeof input === 'string' ? input : 'the bundle on standard input');
  const store = await ContentStore.open(storeRoot);
  const added: Digest[] = [];
  let descriptor: BundleDescriptor | undefined;
  let index: ImageIndex | undefined;
  let blobs = 0;
  let addedBytes = 0;
  try {
    for await (const entry of bundleEntries(input, source)) {
      if (entry.kind === 'descriptor') {
        descriptor = entry.descriptor;
        await checkFreeSpace(store, storeRoot, descriptor);
      } else if (entry.kind === 'index') {
        index = entry.index;
      } else if (entry.kind === 'blob') {
        blobs++;
        if (await store.has(entry.digest)) {
          await store.touch(entry.digest); // in use again: a collection running now must not take it
          for await (const chunk of entry.stream) onBytes?.((chunk as Buffer).length);
          continue;
        }
        const w = await store.writer(`import-${entry.digest}`, { digest: entry.digest, size: entry.size, source });
        try {
          if (w.offset > 0) await w.reset();
          for await (const chunk of entry.stream) {
            await w.write(chunk as Buffer);
            onBytes?.((chunk as Buffer).length);
          }
          await w.commit();
        } finally {
          await w.close();
        }
        added.push(entry.digest);
        addedBytes += entry.size;
      }
    }
    if (!descriptor || !index) throw new AcpackError('BAD_BUNDLE', `${source} has no bundle.json or index.json`);
    const rows = await collectRows(store, descriptor, index, source);
    const db = new IndexDb(storeRoot);
    try {
      db.record(rows.manifests, rows.tags, rows.repoManifests);
    } finally {
      db.close();
    }
    return { name: descriptor.name, version: descriptor.version, blobs, added: added.length, addedBytes, refs: rows.tags.length };
  } catch (err) {
    for (const d of added) await store.delete(d);
    if (err instanceof AcpackError) throw new AcpackError(err.code, `${err.message} (nothing was imported)`, { cause: err });
    throw err;
  }
}

async function checkFreeSpace(store: ContentStore, root: string, d: BundleDescriptor): Promise<void> {
  const free = await store.freeBytes();
  if (free >= d.blobs.bytes) return;
  // A re-import needs next to nothing: skip the check when the store already holds the bundle's manifests.
  const known = await Promise.all([...manifestDigests(d)].map((m) => store.has(m)));
  if (known.every(Boolean)) return;
  throw new AcpackError('DISK_FULL', `${d.name} ${d.version} needs up to ${formatBytes(d.blobs.bytes)} under ${root}, which has ${formatBytes(free)} free`);
}

/**
 * Walks index.json through the store (the same walk `acpack verify` does): every manifest reachable
 * becomes a row of the repository it was reached from, and each reference name a tag. A missing blob,
 * a bad digest or a manifest that is not JSON fails the import.
 */
async function collectRows(store: ContentStore, d: BundleDescriptor, index: ImageIndex, source: string) {
  const manifests = new Map<Digest, ManifestRow>();
  const repoManifests: { repo: string; digest: Digest }[] = [];
  const blobs = {
    size: (digest: Digest) => store.size(digest),
    manifest: async (digest: Digest) => {
      try {
        return JSON.parse((await store.readBytes(digest)).toString('utf8')) as ImageIndex & ImageManifest;
      } catch {
        throw new AcpackError('BAD_BUNDLE', `${source}: manifest ${shortDigest(digest)} is not JSON`);
      }
    },
  };
  await walkBundle(source, d, index, blobs, (desc, refName) => {
    if (!refName) return;
    manifests.set(desc.digest, { digest: desc.digest, mediaType: desc.mediaType, size: desc.size });
    repoManifests.push({ repo: splitRefName(refName).repo, digest: desc.digest });
  });
  const tags: (TagRow & { path: string })[] = [];
  for (const entry of index.manifests ?? []) {
    const refName = entry.annotations?.[ANNOTATION_REF_NAME];
    if (!refName) continue;
    const { repo, path, tag } = splitRefName(refName);
    if (tag) tags.push({ repo, path, tag, digest: entry.digest });
  }
  return { manifests: [...manifests.values()], tags, repoManifests };
}
