import { chmodSync, existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { hexOf, isDigest, type Digest } from '../oci/digest.js';
import { AcpackError } from '../oci/errors.js';
import { MT } from '../oci/media-types.js';
import { Database, type Statement } from '../oci/sqlite.js';
import type { NameQuery } from './naming.js';

export interface ManifestRow {
  digest: Digest;
  mediaType: string;
  size: number;
}

export interface TagRow {
  repo: string;
  tag: string;
  digest: Digest;
}

/** What one import or push adds to the index, recorded all or nothing. */
export interface Recorded {
  manifests?: ManifestRow[];
  tags?: (TagRow & { path: string })[];
  repoManifests?: { repo: string; digest: Digest }[];
  /** Blobs (configs, layers, files) a repository may serve. */
  blobLinks?: { repo: string; digest: Digest }[];
  /** What each manifest refers to: its config and layers, or an index's children. */
  manifestRefs?: { manifest: Digest; children: Digest[] }[];
}

/** A manifest as one repository holds it. */
export interface HeldManifest {
  repo: string;
  digest: Digest;
}

/**
 * SQL: whether the repository row `h` (of repo_manifests) is a root of a collection: it is tagged
 * there, or no index names it (a manifest pushed by digest on its own). An index's untagged child is
 * not a root: it lives only through an index its repository still holds, so that deleting the index
 * leaves it to gc rather than kept forever by the row its push needed.
 */
const ROOT_ROW = `(EXISTS (SELECT 1 FROM tags t WHERE t.repo = h.repo AND t.digest = h.digest)
  OR NOT EXISTS (SELECT 1 FROM manifest_refs p JOIN manifests pm ON pm.digest = p.manifest
                 WHERE p.child = h.digest AND pm.media_type IN ('${MT.ociIndex}', '${MT.dockerList}')))`;

/** The schema this code writes; older stores are migrated in place when opened. */
const SCHEMA_VERSION = 4;

/**
 * The registry's SQLite index: repositories, tags, the manifests each repository holds, the blobs
 * linked to each repository (a blob is served only under a repository it is linked to, as in
 * distribution's linked blob store), and what each manifest refers to (so reachability is a query,
 * not a walk of every manifest's JSON). Blobs themselves live only in the content store.
 */
export class IndexDb {
  private readonly db: Database;
  private readonly q: Record<
    'repoExists' | 'reposByPath' | 'untaggedReposByPath' | 'tag' | 'manifest' | 'tags' | 'allRepos' | 'blobLinked' | 'lastLinked' | 'reachable' | 'manifestLive' | 'heldChildren',
    Statement
  >;

  constructor(private readonly storeRoot: string) {
    const file = join(storeRoot, 'index.db');
    // Another process may be writing the index (an import beside a running registry): wait for it.
    this.db = Database.open(file, { busyTimeoutMs: 5000 });
    this.db.exec('PRAGMA journal_mode = WAL');
    this.db.exec('PRAGMA synchronous = NORMAL');
    // Explicit modes: the index must not be writable by others, whatever the umask.
    for (const f of [file, `${file}-wal`, `${file}-shm`]) if (existsSync(f) && statSync(f).mode & 0o022) chmodSync(f, 0o644);
    try {
      this.migrate();
    } catch (err) {
      this.db.close();
      throw err;
    }
    // Prepared once: a registry asks these on every request.
    this.q = {
      repoExists: this.db.prepare('SELECT 1 FROM repo_manifests WHERE repo = ? UNION ALL SELECT 1 FROM blob_links WHERE repo = ? LIMIT 1'),
      reposByPath: this.db.prepare('SELECT DISTINCT repo FROM tags WHERE path = ? ORDER BY repo'),
      // A scan, asked only when no tag knows the path (images pushed by digest alone, blobs before their manifest).
      untaggedReposByPath: this.db.prepare(
        "SELECT repo FROM repo_manifests WHERE substr(repo, instr(repo, '/') + 1) = ? UNION SELECT repo FROM blob_links WHERE substr(repo, instr(repo, '/') + 1) = ? ORDER BY repo",
      ),
      tag: this.db.prepare('SELECT digest FROM tags WHERE repo = ? AND tag = ?'),
      manifest: this.db.prepare(
        'SELECT m.digest, m.media_type AS mediaType, m.size FROM manifests m JOIN repo_manifests r ON r.digest = m.digest WHERE r.repo = ? AND m.digest = ?',
      ),
      tags: this.db.prepare('SELECT tag FROM tags WHERE repo = ? AND tag > ? ORDER BY tag LIMIT ?'),
      allRepos: this.db.prepare('SELECT repo FROM repo_manifests UNION SELECT repo FROM blob_links ORDER BY repo'),
      blobLinked: this.db.prepare('SELECT 1 FROM blob_links WHERE repo = ? AND digest = ?'),
      lastLinked: this.db.prepare('SELECT max(linked_ms) AS at FROM blob_links WHERE digest = ?'),
      // Upward from one blob: is some manifest that a repository holds above it?
      reachable: this.db.prepare(`
        WITH RECURSIVE up(d) AS (SELECT ? UNION SELECT r.manifest FROM manifest_refs r JOIN up ON r.child = up.d)
        SELECT 1 FROM up JOIN repo_manifests m ON m.digest = up.d LIMIT 1`),
      // Whether @repo's row of @digest is live: a root, or a child of a live index of @repo. Only the
      // manifests above @digest can make it live, so the walk down is kept within them.
      manifestLive: this.db.prepare(`
        WITH RECURSIVE up(d) AS (SELECT @digest UNION SELECT r.manifest FROM manifest_refs r JOIN up ON r.child = up.d),
        live(d) AS (
          SELECT h.digest FROM repo_manifests h JOIN up ON up.d = h.digest WHERE h.repo = @repo AND ${ROOT_ROW}
          UNION SELECT r.child FROM live JOIN manifest_refs r ON r.manifest = live.d JOIN up ON up.d = r.child
                JOIN repo_manifests h ON h.repo = @repo AND h.digest = r.child)
        SELECT 1 FROM live WHERE d = @digest LIMIT 1`),
      heldChildren: this.db.prepare('SELECT h.repo, h.digest FROM manifest_refs r JOIN repo_manifests h ON h.digest = r.child WHERE r.manifest = ?'),
    };
  }

  close(): void {
    this.db.close();
  }

  /**
   * Brings an index written by older code to this schema, in one transaction (a second process
   * opening the store at the same moment waits, then finds it done). Version 1 had no blob links
   * and no manifest references: both are rebuilt from the manifests in the store. Version 2 had no
   * piece hashes: they are computed when first asked for. Version 3 had no pending bundles (volume
   * sets imported in part), leases, nor the list of bundles imported.
   */
  private migrate(): void {
    const version = () => (this.db.prepare('PRAGMA user_version').get() as { user_version: number }).user_version;
    if (version() === SCHEMA_VERSION) return;
    this.db.transaction(() => {
      const from = version();
      if (from === SCHEMA_VERSION) return;
      if (from > SCHEMA_VERSION) throw new AcpackError('STORE_TOO_NEW', `${join(this.storeRoot, 'index.db')} has schema ${from}, newer than this acinstall reads (${SCHEMA_VERSION}): use the acinstall that wrote it`);
      this.db.exec(`
        CREATE TABLE IF NOT EXISTS manifests (digest TEXT PRIMARY KEY, media_type TEXT NOT NULL, size INTEGER NOT NULL);
        CREATE TABLE IF NOT EXISTS tags (repo TEXT NOT NULL, path TEXT NOT NULL, tag TEXT NOT NULL, digest TEXT NOT NULL, PRIMARY KEY (repo, tag));
        CREATE INDEX IF NOT EXISTS tags_path ON tags(path);
        CREATE TABLE IF NOT EXISTS referrers (repo TEXT NOT NULL, subject TEXT NOT NULL, digest TEXT NOT NULL, descriptor TEXT NOT NULL, PRIMARY KEY (repo, subject, digest));
        CREATE TABLE IF NOT EXISTS repo_manifests (repo TEXT NOT NULL, digest TEXT NOT NULL, PRIMARY KEY (repo, digest));
        CREATE INDEX IF NOT EXISTS repo_manifests_digest ON repo_manifests(digest);
        CREATE TABLE IF NOT EXISTS blob_links (repo TEXT NOT NULL, digest TEXT NOT NULL, linked_ms INTEGER NOT NULL, PRIMARY KEY (repo, digest));
        CREATE INDEX IF NOT EXISTS blob_links_digest ON blob_links(digest);
        CREATE TABLE IF NOT EXISTS manifest_refs (manifest TEXT NOT NULL, child TEXT NOT NULL, PRIMARY KEY (manifest, child));
        CREATE INDEX IF NOT EXISTS manifest_refs_child ON manifest_refs(child);
        CREATE TABLE IF NOT EXISTS pieces (digest TEXT PRIMARY KEY, piece_size INTEGER NOT NULL, hashes BLOB NOT NULL);
        CREATE TABLE IF NOT EXISTS pending_bundles (key TEXT PRIMARY KEY, name TEXT NOT NULL, version TEXT NOT NULL, volumes INTEGER NOT NULL, descriptor BLOB NOT NULL, index_json BLOB NOT NULL, since_ms INTEGER NOT NULL);
        CREATE TABLE IF NOT EXISTS pending_volumes (key TEXT NOT NULL, volume INTEGER NOT NULL, PRIMARY KEY (key, volume));
        CREATE TABLE IF NOT EXISTS leases (key TEXT NOT NULL, digest TEXT NOT NULL, PRIMARY KEY (key, digest));
        CREATE INDEX IF NOT EXISTS leases_digest ON leases(digest);
        CREATE TABLE IF NOT EXISTS bundles (key TEXT PRIMARY KEY, name TEXT NOT NULL, version TEXT NOT NULL, imported_ms INTEGER NOT NULL);
      `);
      if (from < 2) this.rebuildLinks();
      this.db.exec(`PRAGMA user_version = ${SCHEMA_VERSION}`);
    }, 'immediate');
  }

  /** Links and references of every manifest the index holds, read from the store's own files. */
  private rebuildLinks(): void {
    const rows = this.db.prepare('SELECT repo, digest FROM repo_manifests').all() as { repo: string; digest: Digest }[];
    const parsed = new Map<Digest, Digest[]>();
    const now = Date.now();
    const link = this.db.prepare('INSERT OR IGNORE INTO blob_links (repo, digest, linked_ms) VALUES (?, ?, ?)');
    const ref = this.db.prepare('INSERT OR IGNORE INTO manifest_refs (manifest, child) VALUES (?, ?)');
    for (const { repo, digest } of rows) {
      if (!parsed.has(digest)) {
        const children = isDigest(digest) ? childrenOf(this.readManifest(digest)) : { blobs: [], manifests: [] };
        parsed.set(digest, children.blobs);
        for (const c of [...children.blobs, ...children.manifests]) ref.run(digest, c);
      }
      for (const b of parsed.get(digest)!) link.run(repo, b, now);
    }
  }

  private readManifest(digest: Digest): unknown {
    try {
      return JSON.parse(readFileSync(join(this.storeRoot, 'blobs', 'sha256', hexOf(digest)), 'utf8'));
    } catch {
      return undefined; // missing or damaged: `acinstall verify --store` reports it
    }
  }

  /** Records one import's or push's rows, all or nothing. */
  record(r: Recorded, now = Date.now()): void {
    const putManifest = this.db.prepare('INSERT OR REPLACE INTO manifests (digest, media_type, size) VALUES (?, ?, ?)');
    const putTag = this.db.prepare('INSERT OR REPLACE INTO tags (repo, path, tag, digest) VALUES (?, ?, ?, ?)');
    const putRepoManifest = this.db.prepare('INSERT OR IGNORE INTO repo_manifests (repo, digest) VALUES (?, ?)');
    const putLink = this.db.prepare('INSERT OR REPLACE INTO blob_links (repo, digest, linked_ms) VALUES (?, ?, ?)');
    const putRef = this.db.prepare('INSERT OR IGNORE INTO manifest_refs (manifest, child) VALUES (?, ?)');
    this.db.transaction(() => {
      for (const m of r.manifests ?? []) putManifest.run(m.digest, m.mediaType, m.size);
      for (const m of r.manifestRefs ?? []) for (const c of m.children) putRef.run(m.manifest, c);
      for (const t of r.tags ?? []) putTag.run(t.repo, t.path, t.tag, t.digest);
      for (const x of r.repoManifests ?? []) putRepoManifest.run(x.repo, x.digest);
      for (const l of r.blobLinks ?? []) putLink.run(l.repo, l.digest, now);
    });
  }

  /** Records that `descriptor` (a pushed manifest) refers to `subject`, for the referrers API. */
  putReferrer(repo: string, subject: string, descriptor: { digest: string } & Record<string, unknown>): void {
    this.db.prepare('INSERT OR REPLACE INTO referrers (repo, subject, digest, descriptor) VALUES (?, ?, ?, ?)').run(repo, subject, descriptor.digest, JSON.stringify(descriptor));
  }

  /** Descriptors of the manifests that refer to `subject`, oldest digest order. */
  referrers(repo: string, subject: string): Record<string, unknown>[] {
    return (this.db.prepare('SELECT descriptor FROM referrers WHERE repo = ? AND subject = ? ORDER BY digest').all(repo, subject) as { descriptor: string }[]).map((r) => JSON.parse(r.descriptor));
  }

  /** Removes a manifest from a repository, with the tags that point at it; false when it was not there. */
  deleteManifest(repo: string, digest: string): boolean {
    return this.db.transaction(() => {
      this.db.prepare('DELETE FROM tags WHERE repo = ? AND digest = ?').run(repo, digest);
      this.db.prepare('DELETE FROM referrers WHERE repo = ? AND digest = ?').run(repo, digest);
      return this.db.prepare('DELETE FROM repo_manifests WHERE repo = ? AND digest = ?').run(repo, digest).changes > 0;
    });
  }

  deleteTag(repo: string, tag: string): boolean {
    return this.db.prepare('DELETE FROM tags WHERE repo = ? AND tag = ?').run(repo, tag).changes > 0;
  }

  /** Whether `repo` may serve blob `digest`. */
  blobLinked(repo: string, digest: string): boolean {
    return this.q.blobLinked.get(repo, digest) !== undefined;
  }

  /** Removes a blob's link from one repository; false when it had none. */
  unlinkBlob(repo: string, digest: string): boolean {
    return this.db.prepare('DELETE FROM blob_links WHERE repo = ? AND digest = ?').run(repo, digest).changes > 0;
  }

  /** When the blob was last linked to any repository (ms), or undefined. */
  lastLinked(digest: Digest): number | undefined {
    return (this.q.lastLinked.get(digest) as { at: number | null }).at ?? undefined;
  }

  /**
   * A volume of a set imported, its bundle not yet whole: the bundle (by `key`, the sha256 of its
   * bundle.json) is pending, and the blobs and parts it brought are leased to it, so that gc keeps
   * them until the last volume comes, on whatever day.
   */
  recordVolume(p: { key: string; name: string; version: string; volumes: number; descriptor: Buffer; index: Buffer }, volume: number, digests: Digest[]): void {
    this.db.transaction(() => {
      this.db
        .prepare('INSERT OR IGNORE INTO pending_bundles (key, name, version, volumes, descriptor, index_json, since_ms) VALUES (?, ?, ?, ?, ?, ?, ?)')
        .run(p.key, p.name, p.version, p.volumes, p.descriptor, p.index, Date.now());
      this.db.prepare('INSERT OR IGNORE INTO pending_volumes (key, volume) VALUES (?, ?)').run(p.key, volume);
      const lease = this.db.prepare('INSERT OR IGNORE INTO leases (key, digest) VALUES (?, ?)');
      for (const d of digests) lease.run(p.key, d);
    }, 'immediate');
  }

  /** Blobs held for `key` only while an import runs (a delta's base, checked present). */
  lease(key: string, digests: Digest[]): void {
    this.db.transaction(() => {
      const lease = this.db.prepare('INSERT OR IGNORE INTO leases (key, digest) VALUES (?, ?)');
      for (const d of digests) lease.run(key, d);
    }, 'immediate');
  }

  /** A bundle imported whole (by the sha256 of its bundle.json), for `acinstall inventory`. */
  recordBundle(key: string, name: string, version: string): void {
    this.db.prepare('INSERT OR REPLACE INTO bundles (key, name, version, imported_ms) VALUES (?, ?, ?, ?)').run(key, name, version, Date.now());
  }

  bundles(): { key: string; name: string; version: string; importedMs: number }[] {
    return this.db.prepare('SELECT key, name, version, imported_ms AS importedMs FROM bundles ORDER BY imported_ms').all() as { key: string; name: string; version: string; importedMs: number }[];
  }

  /** Every tag: repository (host/path), tag, digest. */
  allTags(): { repo: string; tag: string; digest: Digest }[] {
    return this.db.prepare('SELECT repo, tag, digest FROM tags ORDER BY repo, tag').all() as { repo: string; tag: string; digest: Digest }[];
  }

  /** The bundles whose volume sets are in part here, with the volumes imported. */
  pendingBundles(): { key: string; name: string; version: string; volumes: number; imported: number[]; sinceMs: number }[] {
    const rows = this.db.prepare('SELECT key, name, version, volumes, since_ms AS sinceMs FROM pending_bundles ORDER BY since_ms').all() as { key: string; name: string; version: string; volumes: number; sinceMs: number }[];
    const volumes = this.db.prepare('SELECT volume FROM pending_volumes WHERE key = ? ORDER BY volume');
    return rows.map((r) => ({ ...r, imported: (volumes.all(r.key) as { volume: number }[]).map((v) => v.volume) }));
  }

  /** A bundle whole at last (or given up): its pending record and its leases go. */
  endPending(key: string): void {
    this.db.transaction(() => {
      for (const table of ['pending_bundles', 'pending_volumes', 'leases']) this.db.prepare(`DELETE FROM ${table} WHERE key = ?`).run(key);
    }, 'immediate');
  }

  /** Whether a pending bundle (other than those in `except`) holds this blob: gc and rollbacks spare it. */
  leased(digest: Digest, except: string[] = []): boolean {
    return (this.db.prepare('SELECT key FROM leases WHERE digest = ?').all(digest) as { key: string }[]).some((r) => !except.includes(r.key));
  }

  leasedBlobs(except: string[] = []): Set<Digest> {
    const rows = this.db.prepare('SELECT key, digest FROM leases').all() as { key: string; digest: Digest }[];
    return new Set(rows.filter((r) => !except.includes(r.key)).map((r) => r.digest));
  }

  /** Whether a manifest that some repository holds reaches `digest` (it is that manifest, or below it). */
  reachable(digest: Digest): boolean {
    return this.q.reachable.get(digest) !== undefined;
  }

  /**
   * Every blob the manifests repositories hold reach (the manifests themselves, their configs,
   * layers and children), leaving out the rows in `except` as starting points.
   */
  reachableBlobs(except: HeldManifest[] = []): Set<Digest> {
    const skip = new Set(except.map((r) => `${r.repo} ${r.digest}`));
    // One read transaction: the roots and the walk from them see the same index.
    return this.db.transaction(() => {
      const roots = new Set(this.allRepoManifests().filter((r) => !skip.has(`${r.repo} ${r.digest}`)).map((r) => r.digest));
      const rows = this.db
        .prepare(
          `WITH RECURSIVE live(d) AS (SELECT value FROM json_each(?) UNION SELECT r.child FROM manifest_refs r JOIN live ON r.manifest = live.d)
           SELECT d FROM live`,
        )
        .all(JSON.stringify([...roots])) as { d: Digest }[];
      return new Set(rows.map((r) => r.d));
    });
  }

  /**
   * Manifests repositories hold that are no longer live: untagged children of an index that no
   * index of their repository still names (see ROOT_ROW), typically what a deleted index left.
   */
  orphanedManifests(): HeldManifest[] {
    return this.db
      .prepare(
        `WITH RECURSIVE live(repo, d) AS (
           SELECT h.repo, h.digest FROM repo_manifests h WHERE ${ROOT_ROW}
           UNION SELECT h.repo, h.digest FROM live JOIN manifest_refs r ON r.manifest = live.d
                 JOIN repo_manifests h ON h.repo = live.repo AND h.digest = r.child)
         SELECT repo, digest FROM repo_manifests EXCEPT SELECT repo, d FROM live ORDER BY 1, 2`,
      )
      .all() as HeldManifest[];
  }

  /** Whether `repo`'s row of manifest `digest` is live (a root, or below a live index of `repo`); false when `repo` does not hold it. */
  manifestLive(repo: string, digest: Digest): boolean {
    return this.q.manifestLive.get({ repo, digest }) !== undefined;
  }

  /** Whether blob `digest` is a manifest naming one that a repository holds but is not live: its record is what tells gc so. */
  namesOrphan(digest: Digest): boolean {
    return (this.q.heldChildren.all(digest) as HeldManifest[]).some((c) => !this.manifestLive(c.repo, c.digest));
  }

  /** The indexes the index records name `digest` in. */
  indexesNaming(digest: Digest): Digest[] {
    return (
      this.db
        .prepare(`SELECT r.manifest AS d FROM manifest_refs r JOIN manifests m ON m.digest = r.manifest WHERE r.child = ? AND m.media_type IN ('${MT.ociIndex}', '${MT.dockerList}')`)
        .all(digest) as { d: Digest }[]
    ).map((r) => r.d);
  }

  /** Keeps a blob's piece hashes (the peer cache's, see p2p/pieces.ts): a function of its bytes, so never stale. */
  recordPieces(digest: Digest, pieceSize: number, hashes: Uint8Array): void {
    this.db.prepare('INSERT OR REPLACE INTO pieces (digest, piece_size, hashes) VALUES (?, ?, ?)').run(digest, pieceSize, hashes);
  }

  pieces(digest: Digest): { pieceSize: number; hashes: Buffer } | undefined {
    const row = this.db.prepare('SELECT piece_size AS pieceSize, hashes FROM pieces WHERE digest = ?').get(digest) as { pieceSize: number; hashes: Uint8Array } | undefined;
    return row && { pieceSize: row.pieceSize, hashes: Buffer.from(row.hashes) };
  }

  /** Forgets everything about a blob that was deleted from the store: its links, its piece hashes, and its rows as a manifest no repository holds. */
  forgetBlob(digest: Digest): void {
    this.db.transaction(() => {
      this.db.prepare('DELETE FROM blob_links WHERE digest = ?').run(digest);
      this.db.prepare('DELETE FROM pieces WHERE digest = ?').run(digest);
      this.db.prepare('DELETE FROM manifest_refs WHERE manifest = ? AND manifest NOT IN (SELECT digest FROM repo_manifests)').run(digest);
      this.db.prepare('DELETE FROM manifests WHERE digest = ? AND digest NOT IN (SELECT digest FROM repo_manifests)').run(digest);
    });
  }

  /** The repositories a name query can mean (one for exact, possibly several for a bare path). */
  repos(q: NameQuery): string[] {
    if (q.kind === 'exact') return this.q.repoExists.get(q.repo, q.repo) ? [q.repo] : [];
    const tagged = this.q.reposByPath.all(q.path) as { repo: string }[];
    return (tagged.length > 0 ? tagged : (this.q.untaggedReposByPath.all(q.path, q.path) as { repo: string }[])).map((r) => r.repo);
  }

  tag(repo: string, tag: string): Digest | undefined {
    return (this.q.tag.get(repo, tag) as { digest: Digest } | undefined)?.digest;
  }

  /** A manifest of this repository, by digest. */
  manifest(repo: string, digest: string): ManifestRow | undefined {
    return this.q.manifest.get(repo, digest) as ManifestRow | undefined;
  }

  /** Every manifest row the index knows, held by a repository or not. */
  allManifests(): ManifestRow[] {
    return this.db.prepare('SELECT digest, media_type AS mediaType, size FROM manifests ORDER BY digest').all() as ManifestRow[];
  }

  /** Tags of a repository in lexical order, after `last`, at most `n`. */
  tags(repo: string, n: number, last?: string): string[] {
    return (this.q.tags.all(repo, last ?? '', n) as { tag: string }[]).map((r) => r.tag);
  }

  /** Every manifest of every repository. */
  allRepoManifests(): { repo: string; digest: Digest }[] {
    return this.db.prepare('SELECT repo, digest FROM repo_manifests ORDER BY repo, digest').all() as { repo: string; digest: Digest }[];
  }

  /** Every blob link. */
  allBlobLinks(): { repo: string; digest: Digest }[] {
    return this.db.prepare('SELECT repo, digest FROM blob_links ORDER BY repo, digest').all() as { repo: string; digest: Digest }[];
  }

  /** Every repository, sorted. */
  allRepos(): string[] {
    return (this.q.allRepos.all() as { repo: string }[]).map((r) => r.repo);
  }
}

/** The digests a manifest or index names: its config and layers (blobs), or its children (manifests). */
export function childrenOf(m: unknown): { blobs: Digest[]; manifests: Digest[] } {
  const out = { blobs: [] as Digest[], manifests: [] as Digest[] };
  if (typeof m !== 'object' || m === null) return out;
  const { config, layers, manifests } = m as { config?: { digest?: unknown }; layers?: unknown; manifests?: unknown };
  const add = (list: Digest[], d: unknown) => {
    const digest = (d as { digest?: unknown } | null)?.digest;
    if (typeof digest === 'string' && isDigest(digest) && !list.includes(digest)) list.push(digest);
  };
  add(out.blobs, config);
  if (Array.isArray(layers)) for (const l of layers) add(out.blobs, l);
  if (Array.isArray(manifests)) for (const c of manifests) add(out.manifests, c);
  return out;
}
