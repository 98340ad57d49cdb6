import { readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { shortDigest, type Digest } from '../oci/digest.js';
import { AcpackError } from '../oci/errors.js';
import type { ImageIndex, ImageManifest } from '../oci/media-types.js';
import type { ContentStore } from '../oci/store.js';
import type { IndexDb } from './index-db.js';

/** An upload nobody has written to for this long is abandoned (distribution waits a week; a site day is enough). */
export const UPLOAD_MAX_AGE_MS = 24 * 3600_000;
/** Blobs younger than this are spared by a collection: a push may be about to name them in a manifest. */
export const GC_MIN_AGE_MS = 3600_000;

/**
 * Every blob some manifest of some repository needs (the manifests themselves, their configs and
 * layers), each with a `repo@manifest` that uses it, for messages; one manifest read at a time, so
 * a caller looking for one blob stops at its first user.
 */
async function* references(store: ContentStore, db: IndexDb): AsyncGenerator<{ digest: Digest; by: string }> {
  for (const { repo, digest } of db.allRepoManifests()) {
    const by = `${repo}@${shortDigest(digest)}`;
    yield { digest, by };
    let m: ImageManifest & ImageIndex;
    try {
      m = JSON.parse((await store.readBytes(digest)).toString('utf8'));
    } catch {
      throw new AcpackError('STORE_DAMAGED', `manifest ${digest} of ${repo} is in the index but missing or damaged in the store: import its bundle again before deleting anything`);
    }
    for (const d of [m.config, ...(Array.isArray(m.layers) ? m.layers : [])]) if (d?.digest) yield { digest: d.digest, by };
  }
}

/** Mark, in mark-and-sweep: every blob in use, with one user of each. */
export async function referencedBlobs(store: ContentStore, db: IndexDb): Promise<Map<Digest, string>> {
  const used = new Map<Digest, string>();
  for await (const { digest, by } of references(store, db)) if (!used.has(digest)) used.set(digest, by);
  return used;
}

/**
 * DELETE of one blob. Blobs are shared by every repository here, so a blob is removed only when no
 * manifest needs it any more; one still in use is refused with the image that uses it.
 */
export async function deleteBlob(store: ContentStore, db: IndexDb, digest: Digest): Promise<'deleted' | 'unknown' | { usedBy: string }> {
  if (!(await store.has(digest))) return 'unknown';
  for await (const ref of references(store, db)) if (ref.digest === digest) return { usedBy: ref.by };
  await store.delete(digest);
  return 'deleted';
}

export interface Collected {
  blobs: number;
  bytes: number;
  uploads: number;
}

/**
 * Removes blobs no manifest needs (what deleting manifests left behind), manifests no repository
 * holds, and abandoned uploads. `dryRun` only counts.
 */
export async function collectGarbage(store: ContentStore, db: IndexDb, opts: { dryRun?: boolean; now?: number } = {}): Promise<Collected> {
  const now = opts.now ?? Date.now();
  const used = await referencedBlobs(store, db);
  const out: Collected = { blobs: 0, bytes: 0, uploads: 0 };
  for (const digest of await store.list()) {
    if (used.has(digest)) continue;
    const s = await stat(store.path(digest)).catch(() => undefined);
    if (!s || now - s.mtimeMs < GC_MIN_AGE_MS) continue;
    out.blobs++;
    out.bytes += s.size;
    if (!opts.dryRun) await store.delete(digest);
  }
  if (!opts.dryRun) db.pruneManifests();
  out.uploads = await sweepUploads(store, { now, dryRun: opts.dryRun });
  return out;
}

/** Removes uploads untouched for UPLOAD_MAX_AGE_MS; returns how many. */
export async function sweepUploads(store: ContentStore, opts: { now?: number; dryRun?: boolean } = {}): Promise<number> {
  const now = opts.now ?? Date.now();
  const ingest = join(store.root, 'ingest');
  let swept = 0;
  for (const key of await readdir(ingest).catch(() => [] as string[])) {
    const dir = join(ingest, key);
    const touched = await stat(join(dir, 'data')).then((s) => s.mtimeMs, () => stat(dir).then((s) => s.mtimeMs, () => now));
    if (now - touched < UPLOAD_MAX_AGE_MS) continue;
    swept++;
    if (!opts.dryRun) await rm(dir, { recursive: true, force: true });
  }
  return swept;
}
