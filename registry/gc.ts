import type { Digest } from '../oci/digest.js';
import type { ContentStore } from '../oci/store.js';
import type { HeldManifest, IndexDb } from './index-db.js';

/** An upload nobody has written to for this long is abandoned (distribution waits a week; a site day is enough). */
export const UPLOAD_MAX_AGE_MS = 24 * 3600_000;
/** Blobs used within this long are spared by a collection: a push may be about to name them in a manifest. */
export const GC_MIN_AGE_MS = 3600_000;

export interface Collected {
  /** Untagged manifests dropped from a repository because no index of it names them any more (what a deleted index left). */
  manifests: number;
  blobs: number;
  bytes: number;
  uploads: number;
  /** Blobs nothing live reaches, kept because they, or a manifest above them, were used within the grace period. */
  spared: number;
}

export interface GcOptions {
  dryRun?: boolean;
  now?: number;
  /** The grace period (default GC_MIN_AGE_MS). Shorter is safe only while nothing pushes or imports. */
  minAgeMs?: number;
  /** Pending bundles (keys) whose leases a dry run counts as dropped: what abandoning them would free. */
  abandoned?: string[];
}

/**
 * Mark and sweep, in two passes, neither holding the store lock for long:
 * 1. Manifests a repository holds that are not live (an index's untagged children once no index of
 *    that repository names them, see IndexDb.orphanedManifests) are dropped from it, each under the
 *    lock after a re-check. One used within the grace period is kept: a client pushing an index
 *    pushes its children first, and the index PUT needs them there.
 * 2. The mark (what the live manifests reach) is a query without the lock. Each deletion is its own
 *    short step under the lock, and re-checks first, since pushes and imports go on meanwhile: the
 *    blob is kept if a manifest now reaches it, or if it was written, found (HEAD), reused or linked
 *    within the grace period.
 * Then abandoned uploads. `dryRun` only counts, as if pass 1 had dropped what it would drop (and
 * the `abandoned` bundles' leases were gone).
 */
export async function collectGarbage(store: ContentStore, db: IndexDb, opts: GcOptions = {}): Promise<Collected> {
  const now = () => opts.now ?? Date.now();
  const minAge = opts.minAgeMs ?? GC_MIN_AGE_MS;
  const young = (digest: Digest, mtimeMs: number) => recentlyUsed(db, digest, mtimeMs, now(), minAge);
  const out: Collected = { manifests: 0, blobs: 0, bytes: 0, uploads: 0, spared: 0 };

  // Pass 1: what deleted indexes left in their repositories.
  const dropped: HeldManifest[] = [];
  let kept: HeldManifest[] = [];
  // Liveness runs down from the roots, so the order does not matter: a nested index's children are orphans with it.
  for (const row of db.orphanedManifests()) {
    const seen = await store.stat(row.digest);
    if (seen && young(row.digest, seen.mtimeMs)) {
      kept.push(row);
      continue;
    }
    if (opts.dryRun) {
      dropped.push(row);
      continue;
    }
    const gone = await store.exclusive(async () => {
      const s = await store.stat(row.digest);
      if ((s && young(row.digest, s.mtimeMs)) || db.manifestLive(row.repo, row.digest)) return false;
      return db.deleteManifest(row.repo, row.digest);
    });
    if (gone) dropped.push(row);
  }
  out.manifests = dropped.length;
  // After a real pass 1, the orphans left are the young ones and any a DELETE made since.
  if (!opts.dryRun) kept = db.orphanedManifests();

  // Pass 2: blobs. `live`: what live manifests reach. `held`: also what the orphans kept for their
  // age reach, and the indexes naming them (their record is what makes them orphans; it goes after them).
  const gone = opts.dryRun ? dropped : [];
  const live = db.reachableBlobs([...gone, ...kept]);
  // What a volume set imported in part holds until its last volume comes.
  for (const d of db.leasedBlobs(opts.abandoned)) live.add(d);
  const held = db.reachableBlobs(gone);
  for (const row of kept) for (const index of db.indexesNaming(row.digest)) held.add(index);
  for (const digest of await store.list()) {
    if (live.has(digest)) continue;
    if (held.has(digest)) {
      out.spared++;
      continue;
    }
    // A first look without the lock: most unreached blobs of a busy store are young, and the lock is for deletions.
    const seen = await store.stat(digest);
    if (!seen) continue;
    if (young(digest, seen.mtimeMs)) {
      out.spared++;
      continue;
    }
    if (opts.dryRun) {
      out.blobs++;
      out.bytes += seen.size;
      continue;
    }
    await store.exclusive(async () => {
      const s = await store.stat(digest);
      // Reached now: a push or an import recorded a manifest since the mark; names an orphan: an index deleted since.
      if (!s || young(digest, s.mtimeMs) || db.reachable(digest) || db.namesOrphan(digest) || db.leased(digest, opts.abandoned)) return;
      out.blobs++;
      out.bytes += s.size;
      await store.delete(digest);
      db.forgetBlob(digest);
    });
  }
  out.uploads = await sweepUploads(store, { now: opts.now, dryRun: opts.dryRun });
  return out;
}

function recentlyUsed(db: IndexDb, digest: Digest, mtimeMs: number, now: number, minAgeMs: number): boolean {
  const linked = db.lastLinked(digest);
  return now - mtimeMs < minAgeMs || (linked !== undefined && now - linked < minAgeMs);
}

/** Removes uploads untouched for UPLOAD_MAX_AGE_MS (never one a writer holds); returns how many. */
export async function sweepUploads(store: ContentStore, opts: { now?: number; dryRun?: boolean } = {}): Promise<number> {
  const now = opts.now ?? Date.now();
  let swept = 0;
  for (const { key, touchedMs } of await store.ingests()) {
    if (now - touchedMs < UPLOAD_MAX_AGE_MS) continue;
    if (opts.dryRun || (await store.dropIngest(key))) swept++;
  }
  return swept;
}
