import type { Readable } from 'node:stream';
import { AcpackError, formatBytes } from '../oci/errors.js';
import { sha256, shortDigest, type Digest } from '../oci/digest.js';
import { createReadStream } from 'node:fs';
import { walkBundle } from '../oci/bundle-graph.js';
import { ContentStore } from '../oci/store.js';
import { bundleEntries, drainVerified } from '../oci/bundle-reader.js';
import { BUNDLE_LIMITS, manifestDigests, type BundleDescriptor } from '../oci/bundle-format.js';
import { ANNOTATION_REF_NAME, type ImageIndex, type ImageManifest } from '../oci/media-types.js';
import { childrenOf, IndexDb, type ManifestRow, type Recorded, type TagRow } from './index-db.js';
import { splitRefName } from './naming.js';
import { PIECE_SIZE } from '../p2p/pieces.js';
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
  /** A file of a volume set: its number. */
  volume?: number;
  /** A volume set still in part after this file: the volumes it waits for (its blobs are held meanwhile). */
  pending?: { volumes: number; missing: number[] };
}

/**
 * Blobs whose commit (the fsync, tens of milliseconds for a large one, and the link) runs while the
 * next blobs stream in.
 */
const COMMITS_IN_FLIGHT = 4;

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
  let indexBytes: Buffer | undefined;
  let volume: number | undefined;
  /** Every blob and part entry of this file, for a volume's lease. */
  const entries: Digest[] = [];
  /** Manifests as the reader parsed and validated them on their way past. */
  const parsed = new Map<Digest, ImageIndex & ImageManifest>();
  let blobs = 0;
  let addedBytes = 0;
  const commits = new Background(COMMITS_IN_FLIGHT);
  try {
    for await (const entry of bundleEntries(input, source)) {
      if (entry.kind === 'descriptor') {
        descriptor = entry.descriptor;
        descriptorBytes = entry.data;
      } else if (entry.kind === 'signature') {
        signature = entry.signature;
      } else if (entry.kind === 'volume') {
        volume = entry.volume;
      } else if (entry.kind === 'index') {
        // Before a byte reaches the store: the bundle is the site's to take, and fits.
        origin = originOf(descriptorBytes!, signature, trust.keys);
        warning = judgeOrigin(origin, trust, source);
        await checkFreeSpace(store, storeRoot, descriptor!, volume);
        await holdBase(store, db, descriptor!, sha256(descriptorBytes!), source);
        index = entry.index;
        indexBytes = entry.data;
      } else if (entry.kind === 'blob') {
        blobs++;
        entries.push(entry.digest);
        if (entry.manifest) parsed.set(entry.digest, entry.manifest as ImageIndex & ImageManifest);
        if (await takeUp(store, entry.digest)) {
          await drainVerified(entry, source, onBytes); // the store's copy is good; the bundle's bytes are still checked
          continue;
        }
        // Another import may be writing the same blob: wait for it, then find the blob there.
        // The peer cache's piece hashes, in the same pass as the blob's digest.
        const w = await store.writer(`import-${entry.digest}`, { digest: entry.digest, size: entry.size, source }, { waitMs: SAME_BLOB_WAIT_MS, pieceHashes: true });
        if (await takeUp(store, entry.digest)) {
          await w.discard();
          await drainVerified(entry, source, onBytes); // the store's copy is good; the bundle's bytes are still checked
          continue;
        }
        try {
          if (w.offset > 0) await w.reset(); // a bundle stream cannot resume mid-blob
          // Decompressed straight into the writer's staging memory: no copy between the two.
          // (To its size, not to a read of 0: that would take one more stage just to learn the end.
          // A cut entry is an error of the reader's.)
          while (w.offset < entry.size) {
            const n = await entry.readInto(await w.room());
            await w.wrote(n);
            onBytes?.(n);
          }
        } catch (err) {
          await w.discard();
          throw err;
        }
        await commits.add(async () => {
          try {
            await w.commit();
          } catch (err) {
            await w.discard();
            throw err;
          }
          // A part is not served: only whole blobs get piece hashes (a joined one when it is joined).
          if (!entry.part) db.recordPieces(entry.digest, PIECE_SIZE, w.pieces!);
          if (w.created) {
            added.set(entry.digest, (await store.stat(entry.digest))?.mtimeMs ?? 0);
            addedBytes += entry.size;
          }
        });
      }
    }
    await commits.settled();
    if (!descriptor || !index) throw new AcpackError('BAD_BUNDLE', `${source} has no bundle.json or index.json`);
    const d = descriptor;
    const i = index;
    const result = { name: d.name, version: d.version, blobs, added: added.size, addedBytes, origin, ...(warning ? { warning } : {}) };
    const key = sha256(descriptorBytes!);
    if (volume !== undefined) {
      // From here on this file's blobs are the pending bundle's: kept by gc, and by a rollback.
      await store.exclusive(async () => db.recordVolume({ key, name: d.name, version: d.version, volumes: d.volumes!, descriptor: descriptorBytes!, index: indexBytes! }, volume!, entries));
      await joinParts(store, db, d, source);
      const missing = await missingVolumes(store, d);
      if (missing.length) return { ...result, refs: 0, volume, pending: { volumes: d.volumes!, missing } };
      const refs = await store.exclusive(async () => {
        const rows = await collectRows(store, d, i, parsed, source);
        db.record(rows);
        db.recordBundle(key, d.name, d.version);
        db.endPending(key);
        return rows.tags?.length ?? 0;
      });
      await dropParts(store, db, d);
      return { ...result, refs, volume };
    }
    // Checked and recorded under the store lock: a gc cannot take a blob between the check and the links.
    const refs = await store.exclusive(async () => {
      const rows = await collectRows(store, d, i, parsed, source);
      db.record(rows);
      db.recordBundle(key, d.name, d.version);
      db.endPending(key); // a delta's hold on its base
      return rows.tags?.length ?? 0;
    });
    return { ...result, refs };
  } catch (err) {
    await commits.settled().catch(() => {}); // what they added is rolled back too
    // A single file lets go of its base; a volume set keeps what it holds for its next volume.
    if (descriptorBytes && (descriptor?.volumes ?? 1) <= 1) db.endPending(sha256(descriptorBytes));
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
 * A blob that is not there is not looked for again under the lock: nothing can take it, and one
 * that appears a moment later is found by the next look (or waited for, at its ingest lock).
 */
async function takeUp(store: ContentStore, digest: Digest): Promise<boolean> {
  if (!(await store.has(digest))) return false;
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
      if (!s || s.mtimeMs !== mtimeMs || db.lastLinked(digest) !== undefined || db.reachable(digest) || db.leased(digest)) return;
      await store.delete(digest);
    });
  }
}

async function checkFreeSpace(store: ContentStore, root: string, d: BundleDescriptor, volume?: number): Promise<void> {
  const free = await store.freeBytes();
  // A volume needs room for its own entries, and for the blobs joined from parts once all are in.
  let need = d.blobs.bytes;
  if (volume !== undefined) {
    need = 0;
    for (const b of d.blobs.list ?? []) {
      if (b.volume === volume) need += b.size;
      if (b.parts) need += b.size + b.parts.filter((p) => p.volume === volume).reduce((n, p) => n + p.size, 0);
    }
  }
  if (free >= need) return;
  // A re-import needs next to nothing: skip the check when the store already holds the bundle's manifests.
  const known = await Promise.all([...manifestDigests(d)].map((m) => store.has(m)));
  if (known.every(Boolean)) return;
  throw new AcpackError('DISK_FULL', `${d.name} ${d.version}${volume ? ` (volume ${volume})` : ''} needs up to ${formatBytes(need)} under ${root}, which has ${formatBytes(free)} free`);
}

/**
 * A delta carries only what its base lacked: every blob it lists and does not carry must be in the
 * store before anything is written, and is held (leased) until the import is done.
 */
async function holdBase(store: ContentStore, db: IndexDb, d: BundleDescriptor, key: string, source: string): Promise<void> {
  const base = (d.blobs.list ?? []).filter((b) => b.volume === undefined && !b.parts);
  if (base.length === 0) return;
  await store.exclusive(async () => {
    const missing: Digest[] = [];
    for (const b of base) {
      const size = await store.size(b.digest);
      if (size === undefined) missing.push(b.digest);
      // The delta's artifacts name these blobs with their sizes (a binary's from the inventory it
      // was made against): a size the store's copy does not have would fail on the nodes later.
      else if (size !== b.size) {
        throw new AcpackError('BAD_BUNDLE', `${source} lists ${b.digest}, which it leaves to its base, as ${b.size} bytes; this store's copy has ${size}: the inventory or bundle it was made against was wrong; nothing was imported`);
      }
    }
    if (missing.length) {
      const was = d.base ? `${d.base.name} ${d.base.version}` : 'its base';
      throw new AcpackError(
        'DELTA_BASE_MISSING',
        `${source} is a delta over ${was}, and this store lacks ${missing.length} of the ${base.length} blobs it does not carry (${missing.slice(0, 3).join(', ')}${missing.length > 3 ? ', …' : ''}): import ${was} first, or bundle against this store's inventory (acinstall inventory)`,
      );
    }
    for (const b of base) await store.touch(b.digest);
    db.lease(key, base.map((b) => b.digest));
  });
}

/** The volumes of a set whose blobs or parts the store still lacks (a blob whole here needs none of its parts). */
export async function missingVolumes(store: ContentStore, d: BundleDescriptor): Promise<number[]> {
  const missing = new Set<number>();
  for (const b of d.blobs.list ?? []) {
    if (await store.has(b.digest)) continue;
    if (b.volume) missing.add(b.volume);
    for (const p of b.parts ?? []) if (!(await store.has(p.digest))) missing.add(p.volume);
  }
  return [...missing].sort((a, b) => a - b);
}

/**
 * Joins every blob whose parts are all in the store (and which is not there whole yet): the parts
 * are read back in order into one write, which commits only if the whole hashes to the blob's digest.
 */
async function joinParts(store: ContentStore, db: IndexDb, d: BundleDescriptor, source: string): Promise<void> {
  for (const b of d.blobs.list ?? []) {
    if (!b.parts || (await store.has(b.digest))) continue;
    if (!(await Promise.all(b.parts.map((p) => store.has(p.digest)))).every(Boolean)) continue;
    const w = await store.writer(`join-${b.digest}`, { digest: b.digest, size: b.size, source }, { waitMs: SAME_BLOB_WAIT_MS, pieceHashes: true });
    try {
      if (w.offset > 0) await w.reset();
      for (const p of b.parts) {
        for await (const chunk of createReadStream(store.path(p.digest), { highWaterMark: 1 << 20 })) await w.write(chunk as Buffer);
      }
      await w.commit();
    } catch (err) {
      await w.discard();
      throw err;
    }
    db.recordPieces(b.digest, PIECE_SIZE, w.pieces!);
  }
}

/** Once a set is whole: its parts go, unless another pending bundle holds them or a manifest reaches them. */
async function dropParts(store: ContentStore, db: IndexDb, d: BundleDescriptor): Promise<void> {
  for (const b of d.blobs.list ?? []) {
    for (const p of b.parts ?? []) {
      await store.exclusive(async () => {
        if (!db.leased(p.digest) && !db.reachable(p.digest) && (await store.has(p.digest))) await store.delete(p.digest);
      });
    }
  }
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

/**
 * Tasks run in the background, at most `limit` at once: `add` waits for room. The first failure is
 * thrown by the next `add` and by `settled`, which waits for all of them.
 */
class Background {
  private readonly running = new Set<Promise<void>>();
  private failure: { err: unknown } | undefined;

  constructor(private readonly limit: number) {}

  async add(task: () => Promise<void>): Promise<void> {
    const p: Promise<void> = task()
      .catch((err: unknown) => void (this.failure ??= { err }))
      .finally(() => this.running.delete(p));
    this.running.add(p);
    if (this.running.size >= this.limit) await Promise.race(this.running);
    this.throwFailure();
  }

  async settled(): Promise<void> {
    await Promise.all(this.running);
    this.throwFailure();
  }

  private throwFailure(): void {
    if (this.failure) throw this.failure.err;
  }
}
