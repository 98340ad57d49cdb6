import type { Digest } from '../oci/digest.js';
import type { ContentStore } from '../oci/store.js';
import type { IndexDb } from './index-db.js';

/** An upload nobody has written to for this long is abandoned (distribution waits a week; a site day is enough). */
export const UPLOAD_MAX_AGE_MS = 24 * 3600_000;
/** Blobs used within this long are spared by a collection: a push may be about to name them in a manifest. */
export const GC_MIN_AGE_MS = 3600_000;

export interface Collected {
  blobs: number;
  bytes: number;
  uploads: number;
}

/**
 * Mark and sweep. The mark is one query over the index (what the manifests that repositories hold
 * reach) and takes no lock. Each deletion is its own short step under the store lock, and re-checks
 * first, since pushes and imports go on meanwhile: the blob is kept if a manifest now reaches it, or
 * if it was written, found (HEAD), reused or linked within GC_MIN_AGE_MS. Then abandoned uploads.
 * `dryRun` only counts.
 */
export async function collectGarbage(store: ContentStore, db: IndexDb, opts: { dryRun?: boolean; now?: number } = {}): Promise<Collected> {
  const now = () => opts.now ?? Date.now();
  const live = db.reachableBlobs();
  const out: Collected = { blobs: 0, bytes: 0, uploads: 0 };
  for (const digest of await store.list()) {
    if (live.has(digest)) continue;
    // A first look without the lock: most unreached blobs of a busy store are young, and the lock is for deletions.
    const seen = await store.stat(digest);
    if (!seen || recentlyUsed(db, digest, seen.mtimeMs, now())) continue;
    await store.exclusive(async () => {
      const s = await store.stat(digest);
      if (!s || recentlyUsed(db, digest, s.mtimeMs, now()) || db.reachable(digest)) return;
      out.blobs++;
      out.bytes += s.size;
      if (opts.dryRun) return;
      await store.delete(digest);
      db.forgetBlob(digest);
    });
  }
  out.uploads = await sweepUploads(store, { now: opts.now, dryRun: opts.dryRun });
  return out;
}

function recentlyUsed(db: IndexDb, digest: Digest, mtimeMs: number, now: number): boolean {
  const linked = db.lastLinked(digest);
  return now - mtimeMs < GC_MIN_AGE_MS || (linked !== undefined && now - linked < GC_MIN_AGE_MS);
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
