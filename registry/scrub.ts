import { mkdir, readdir, rename, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { hexOf, isDigest, shortDigest, type Digest } from '../oci/digest.js';
import type { ContentStore } from '../oci/store.js';
import { isManifestType, type Descriptor } from '../oci/media-types.js';
import type { IndexDb } from './index-db.js';

export interface ScrubProblem {
  /** corrupt: bytes do not hash to the name; missing: the index or a manifest needs a blob the store lacks;
   *  damaged: a manifest that is not JSON; stray: a file in blobs/ that is no blob; dangling: a link to no blob. */
  kind: 'corrupt' | 'missing' | 'damaged' | 'stray' | 'dangling';
  what: string;
  repaired?: boolean;
}

export interface ScrubReport {
  blobs: number;
  bytes: number;
  problems: ScrubProblem[];
}

export interface ScrubOptions {
  /** Quarantine corrupt and stray files (under `quarantine/`) and drop links to blobs that are gone. */
  repair?: boolean;
  /** Bytes hashed per second at most (a scrub beside a serving registry); unlimited when absent. */
  rate?: number;
  onBytes?: (n: number) => void;
}

/**
 * Checks a store as zot's scrub does: re-hashes every blob, reads every manifest a repository holds
 * and checks what it names is there with the size it says, and checks the index against the files.
 * Reads take no lock, so it can run while the registry serves; each repair is one short step under
 * the store lock that re-checks first.
 */
export async function scrubStore(store: ContentStore, db: IndexDb, opts: ScrubOptions = {}): Promise<ScrubReport> {
  const report: ScrubReport = { blobs: 0, bytes: 0, problems: [] };
  const problem = (p: ScrubProblem) => report.problems.push(p);
  const pace = pacer(opts.rate);

  for (const name of await readdir(join(store.root, 'blobs', 'sha256'))) {
    const digest = `sha256:${name}`;
    if (!isDigest(digest)) {
      problem({ kind: 'stray', what: `blobs/sha256/${name} is not named by a sha256 digest`, repaired: opts.repair ? await quarantine(store, name) : undefined });
      continue;
    }
    const before = await stat(store.path(digest)).catch(() => undefined);
    const actual = await store.rehash(digest, async (n) => {
      report.bytes += n;
      opts.onBytes?.(n);
      await pace(n);
    });
    if (actual === undefined) continue; // deleted meanwhile (gc)
    report.blobs++;
    if (actual === digest) continue;
    // Blobs are never rewritten in place: the same inode is the same corrupt bytes (gc and a re-import may have replaced it meanwhile).
    const sameFile = async () => (await stat(store.path(digest)).catch(() => undefined))?.ino === before?.ino;
    const repaired = opts.repair ? await store.exclusive(async () => (await sameFile()) && (await quarantine(store, hexOf(digest)))) : undefined;
    problem({ kind: 'corrupt', what: `blob ${digest} holds bytes hashing to ${shortDigest(actual)}: re-import the bundle that carries it`, repaired });
  }

  const checked = new Set<Digest>();
  for (const { repo, digest } of db.allRepoManifests()) {
    const size = await store.size(digest);
    if (size === undefined) {
      problem({ kind: 'missing', what: `manifest ${digest} of ${repo} is in the index but not in the store: re-import its bundle` });
      continue;
    }
    if (checked.has(digest)) continue;
    checked.add(digest);
    let m: { config?: Descriptor; layers?: Descriptor[]; manifests?: Descriptor[]; mediaType?: string };
    try {
      m = JSON.parse((await store.readBytes(digest)).toString('utf8'));
    } catch {
      problem({ kind: 'damaged', what: `manifest ${digest} of ${repo} is not JSON` });
      continue;
    }
    const row = db.manifest(repo, digest);
    const needed = row && isManifestType(row.mediaType) ? [m.config, ...(m.layers ?? [])] : (m.manifests ?? []).filter((c) => db.manifest(repo, c?.digest));
    for (const d of needed) {
      if (!d?.digest || !isDigest(d.digest) || d.urls?.length) continue;
      const has = await store.size(d.digest);
      if (has === undefined) problem({ kind: 'missing', what: `${repo}@${shortDigest(digest)} needs blob ${d.digest}, which is not in the store: re-import its bundle` });
      else if (has !== d.size) problem({ kind: 'missing', what: `${repo}@${shortDigest(digest)} says blob ${shortDigest(d.digest)} has ${d.size} bytes; the store holds ${has}` });
    }
  }

  for (const { repo, digest } of db.allBlobLinks()) {
    if (await store.has(digest)) continue;
    const repaired = opts.repair ? await store.exclusive(async () => !(await store.has(digest)) && db.unlinkBlob(repo, digest)) : undefined;
    problem({ kind: 'dangling', what: `${repo} links blob ${digest}, which is not in the store`, repaired });
  }
  return report;
}

/** Moves a file out of blobs/ into quarantine/, where it is kept for a person to look at. */
async function quarantine(store: ContentStore, name: string): Promise<boolean> {
  const dir = join(store.root, 'quarantine');
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await rename(join(store.root, 'blobs', 'sha256', name), join(dir, `${name}.${Date.now()}`));
  return true;
}

/** Sleeps as needed to keep the bytes counted to `rate` per second. */
function pacer(rate: number | undefined): (n: number) => Promise<void> {
  if (!rate) return async () => {};
  const start = Date.now();
  let total = 0;
  return async (n) => {
    total += n;
    const due = start + (total / rate) * 1000;
    const wait = due - Date.now();
    if (wait > 5) await new Promise((r) => setTimeout(r, wait));
  };
}
