import type { Readable } from 'node:stream';
import { AcpackError, formatBytes } from '../oci/errors.js';
import { shortDigest, type Digest } from '../oci/digest.js';
import { walkBundle } from '../oci/bundle-graph.js';
import { ContentStore } from '../oci/store.js';
import { bundleEntries, drainVerified } from '../oci/bundle-reader.js';
import { BUNDLE_LIMITS, manifestDigests, type BundleDescriptor } from '../oci/bundle-format.js';
import { ANNOTATION_REF_NAME, type ImageIndex, type ImageManifest } from '../oci/media-types.js';
import { childrenOf, IndexDb, type ManifestRow, type Recorded, type TagRow } from './index-db.js';
import { splitRefName } from './naming.js';
import { PieceHasher } from '../p2p/pieces.js';
import { judgeOrigin, originOf, type BundleSignature, type Origin, type TrustPolicy } from '../oci/bundle-signature.js';

export interface ImportResult {
  name: string;
  version: string;
  blobs: number;
  /** Blobs the store did not have before. */
  added: number;
  addedBytes: number;
  refs: number;
  /** Who signed it, as far as this site's trust keys tell. */
  origin: Origin;
  /** Set when it was taken with its origin unchecked: what to tell the operator. */
  warning?: string;
}

/** How long an import waits for another process (another import) writing the same blob. */
const SAME_BLOB_WAIT_MS = 30 * 60_000;

/**
 * Streams a bundle into the store in one pass, hashing every blob as it is written (and every blob
 * the store already holds, as it passes), then records its references in the index. Anything wrong
 * (a corrupt, truncated or hostile bundle, a full disk) leaves the store and the index as they were:
 * the blobs this import added are removed again unless something else took them up meanwhile, and
 * its partial writes are dropped. Other imports, pushes and gc may run at the same time.
 */
export async function importBundle(input: string | Readable, storeRoot: string, onBytes?: (n: number) => void, label?: string, trust: TrustPolicy = { keys: [] }): Promise<ImportResult> {
  const source = label ?? (typeof input === 'string' ? input : 'the bundle on standard input');
  const store = await ContentStore.open(storeRoot);
  const db = new IndexDb(storeRoot);
  /** Blobs this import created, with their mtime right after: a later touch means someone else uses it. */
  const added = new Map<Digest, number>();
  let descriptor: BundleDescriptor | undefined;
  let descriptorBytes: Buffer | undefined;
  let signature: BundleSignature | undefined;
  let origin: Origin = { signed: false };
  let warning: string | undefined;
  let index: ImageIndex | undefined;
  /** Manifests as the reader parsed and validated them on their way past. */
  const parsed = new Map<Digest, ImageIndex & ImageManifest>();
  let blobs = 0;
  let addedBytes = 0;
  try {
    for await (const entry of bundleEntries(input, source)) {
      if (entry.kind === 'descriptor') {
        descriptor = entry.descriptor;
        descriptorBytes = entry.data;
      } else if (entry.kind === 'signature') {
        signature = entry.signature;
      } else if (entry.kind === 'index') {
        // Before a byte reaches the store: the bundle is the site's to take, and fits.
        origin = originOf(descriptorBytes!, signature, trust.keys);
        warning = judgeOrigin(origin, trust, source);
        await checkFreeSpace(store, storeRoot, descriptor!);
        index = entry.index;
      } else if (entry.kind === 'blob') {
        blobs++;
        if (entry.manifest) parsed.set(entry.digest, entry.manifest as ImageIndex & ImageManifest);
        if (await takeUp(store, entry.digest)) {
          await drainVerified(entry, source, onBytes); // the store's copy is good; the bundle's bytes are still checked
          continue;
        }
        // Another import may be writing the same blob: wait for it, then find the blob there.
        // The peer cache's piece hashes, in the same pass as the blob's digest.
        let pieces: PieceHasher | undefined;
        const w = await store.writer(`import-${entry.digest}`, { digest: entry.digest, size: entry.size, source }, { waitMs: SAME_BLOB_WAIT_MS, sideHash: () => (pieces = new PieceHasher()) });
        if (await takeUp(store, entry.digest)) {
          await w.discard();
          await drainVerified(entry, source, onBytes); // the store's copy is good; the bundle's bytes are still checked
          continue;
        }
        try {
          if (w.offset > 0) await w.reset(); // a bundle stream cannot resume mid-blob
          for await (const chunk of entry.stream) {
            await w.write(chunk as Buffer);
            onBytes?.((chunk as Buffer).length);
          }
          await w.commit();
        } catch (err) {
          await w.discard();
          throw err;
        }
        db.recordPieces(entry.digest, pieces!.pieceSize, pieces!.digest());
        if (w.created) {
          added.set(entry.digest, (await store.stat(entry.digest))?.mtimeMs ?? 0);
          addedBytes += entry.size;
        }
      }
    }
    if (!descriptor || !index) throw new AcpackError('BAD_BUNDLE', `${source} has no bundle.json or index.json`);
    const d = descriptor;
    const i = index;
    // Checked and recorded under the store lock: a gc cannot take a blob between the check and the links.
    const refs = await store.exclusive(async () => {
      const rows = await collectRows(store, d, i, parsed, source);
      db.record(rows);
      return rows.tags?.length ?? 0;
    });
    return { name: descriptor.name, version: descriptor.version, blobs, added: added.size, addedBytes, refs, origin, ...(warning ? { warning } : {}) };
  } catch (err) {
    await rollback(store, db, added).catch(() => {});
    if (err instanceof AcpackError) throw new AcpackError(err.code, `${err.message} (nothing was imported)`, { cause: err });
    throw err;
  } finally {
    db.close();
  }
}

/**
 * Marks a blob the store holds as in use again, under the store lock, so that neither a gc step nor
 * another import's rollback can take it between the look and the mark; false when it is not there.
 */
function takeUp(store: ContentStore, digest: Digest): Promise<boolean> {
  return store.exclusive(async () => {
    if (!(await store.has(digest))) return false;
    await store.touch(digest);
    return true;
  });
}

/** Removes the blobs this import created, unless something linked, reached or touched them since. */
async function rollback(store: ContentStore, db: IndexDb, added: Map<Digest, number>): Promise<void> {
  for (const [digest, mtimeMs] of added) {
    await store.exclusive(async () => {
      const s = await store.stat(digest);
      if (!s || s.mtimeMs !== mtimeMs || db.lastLinked(digest) !== undefined || db.reachable(digest)) return;
      await store.delete(digest);
    });
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
 * becomes a row of the repository it was reached from, with its config and layers linked there, and
 * each reference name a tag. A missing blob, a bad digest or a manifest that is not JSON fails.
 */
async function collectRows(store: ContentStore, d: BundleDescriptor, index: ImageIndex, parsed: Map<Digest, ImageIndex & ImageManifest>, source: string): Promise<Recorded> {
  const manifests = new Map<Digest, ManifestRow>();
  const repoManifests: { repo: string; digest: Digest }[] = [];
  const blobs = {
    size: (digest: Digest) => store.size(digest),
    manifest: async (digest: Digest) => {
      const known = parsed.get(digest);
      if (known) return known;
      // Not in this bundle's stream: the store's own copy, verified when it was imported.
      if (((await store.size(digest)) ?? 0) > BUNDLE_LIMITS.manifestBytes) throw new AcpackError('BAD_BUNDLE', `${source}: manifest ${shortDigest(digest)} is larger than a manifest can be`);
      try {
        const m = JSON.parse((await store.readBytes(digest)).toString('utf8')) as ImageIndex & ImageManifest;
        parsed.set(digest, m);
        return m;
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
  const manifestRefs = [...manifests.keys()].map((m) => {
    const c = childrenOf(parsed.get(m));
    return { manifest: m, children: [...c.blobs, ...c.manifests] };
  });
  const blobLinks = repoManifests.flatMap(({ repo, digest }) => childrenOf(parsed.get(digest)).blobs.map((b) => ({ repo, digest: b })));
  const tags: (TagRow & { path: string })[] = [];
  for (const entry of index.manifests ?? []) {
    const refName = entry.annotations?.[ANNOTATION_REF_NAME];
    if (!refName) continue;
    const { repo, path, tag } = splitRefName(refName);
    if (tag) tags.push({ repo, path, tag, digest: entry.digest });
  }
  return { manifests: [...manifests.values()], tags, repoManifests, blobLinks, manifestRefs };
}
