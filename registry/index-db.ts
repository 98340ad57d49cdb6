import Database from 'better-sqlite3';
import { join } from 'node:path';
import type { Digest } from '../oci/digest.js';
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

/**
 * The registry's SQLite index: which repositories and tags exist and which manifests (with their
 * media types) the store holds. Blobs themselves live only in the content store.
 */
export class IndexDb {
  private readonly db: Database.Database;
  private readonly q: Record<'repoExists' | 'reposByPath' | 'untaggedReposByPath' | 'tag' | 'manifest' | 'tags' | 'allRepos', Database.Statement>;

  constructor(storeRoot: string) {
    this.db = new Database(join(storeRoot, 'index.db'));
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = NORMAL');
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS manifests (
        digest TEXT PRIMARY KEY,
        media_type TEXT NOT NULL,
        size INTEGER NOT NULL
      );
      CREATE TABLE IF NOT EXISTS tags (
        repo TEXT NOT NULL,
        path TEXT NOT NULL,
        tag TEXT NOT NULL,
        digest TEXT NOT NULL,
        PRIMARY KEY (repo, tag)
      );
      CREATE INDEX IF NOT EXISTS tags_path ON tags(path);
      CREATE TABLE IF NOT EXISTS referrers (
        repo TEXT NOT NULL,
        subject TEXT NOT NULL,
        digest TEXT NOT NULL,
        descriptor TEXT NOT NULL,
        PRIMARY KEY (repo, subject, digest)
      );
      CREATE TABLE IF NOT EXISTS repo_manifests (
        repo TEXT NOT NULL,
        digest TEXT NOT NULL,
        PRIMARY KEY (repo, digest)
      );
    `);
    // Prepared once: a registry asks these on every request.
    this.q = {
      repoExists: this.db.prepare('SELECT 1 FROM repo_manifests WHERE repo = ? LIMIT 1'),
      reposByPath: this.db.prepare('SELECT DISTINCT repo FROM tags WHERE path = ? ORDER BY repo'),
      // A scan, asked only when no tag knows the path (images pushed by digest alone).
      untaggedReposByPath: this.db.prepare("SELECT DISTINCT repo FROM repo_manifests WHERE substr(repo, instr(repo, '/') + 1) = ? ORDER BY repo"),
      tag: this.db.prepare('SELECT digest FROM tags WHERE repo = ? AND tag = ?'),
      manifest: this.db.prepare(
        'SELECT m.digest, m.media_type AS mediaType, m.size FROM manifests m JOIN repo_manifests r ON r.digest = m.digest WHERE r.repo = ? AND m.digest = ?',
      ),
      tags: this.db.prepare('SELECT tag FROM tags WHERE repo = ? AND tag > ? ORDER BY tag LIMIT ?'),
      allRepos: this.db.prepare('SELECT DISTINCT repo FROM repo_manifests ORDER BY repo'),
    };
  }

  close(): void {
    this.db.close();
  }

  /** Records one import's references and manifests, all or nothing. */
  record(manifests: ManifestRow[], tags: (TagRow & { path: string })[], repoManifests: { repo: string; digest: Digest }[]): void {
    const putManifest = this.db.prepare('INSERT OR REPLACE INTO manifests (digest, media_type, size) VALUES (?, ?, ?)');
    const putTag = this.db.prepare('INSERT OR REPLACE INTO tags (repo, path, tag, digest) VALUES (?, ?, ?, ?)');
    const putRepoManifest = this.db.prepare('INSERT OR IGNORE INTO repo_manifests (repo, digest) VALUES (?, ?)');
    this.db.transaction(() => {
      for (const m of manifests) putManifest.run(m.digest, m.mediaType, m.size);
      for (const t of tags) putTag.run(t.repo, t.path, t.tag, t.digest);
      for (const r of repoManifests) putRepoManifest.run(r.repo, r.digest);
    })();
  }

  /** A pushed manifest: its row, its repository, and the tag it was pushed under. */
  putManifest(repo: string, path: string, m: ManifestRow, tag?: string): void {
    this.record([m], tag ? [{ repo, path, tag, digest: m.digest }] : [], [{ repo, digest: m.digest }]);
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
    })();
  }

  deleteTag(repo: string, tag: string): boolean {
    return this.db.prepare('DELETE FROM tags WHERE repo = ? AND tag = ?').run(repo, tag).changes > 0;
  }

  /** The repositories a name query can mean (one for exact, possibly several for a bare path). */
  repos(q: NameQuery): string[] {
    if (q.kind === 'exact') return this.q.repoExists.get(q.repo) ? [q.repo] : [];
    const tagged = this.q.reposByPath.all(q.path) as { repo: string }[];
    return (tagged.length > 0 ? tagged : (this.q.untaggedReposByPath.all(q.path) as { repo: string }[])).map((r) => r.repo);
  }

  tag(repo: string, tag: string): Digest | undefined {
    return (this.q.tag.get(repo, tag) as { digest: Digest } | undefined)?.digest;
  }

  /** A manifest of this repository, by digest. */
  manifest(repo: string, digest: string): ManifestRow | undefined {
    return this.q.manifest.get(repo, digest) as ManifestRow | undefined;
  }

  /** Tags of a repository in lexical order, after `last`, at most `n`. */
  tags(repo: string, n: number, last?: string): string[] {
    return (this.q.tags.all(repo, last ?? '', n) as { tag: string }[]).map((r) => r.tag);
  }

  /** Every manifest of every repository. */
  allRepoManifests(): { repo: string; digest: Digest }[] {
    return this.db.prepare('SELECT repo, digest FROM repo_manifests ORDER BY repo, digest').all() as { repo: string; digest: Digest }[];
  }

  /** Forgets manifests no repository holds any more (after deletes). */
  pruneManifests(): void {
    this.db.prepare('DELETE FROM manifests WHERE digest NOT IN (SELECT digest FROM repo_manifests)').run();
  }

  /** Every repository, sorted. */
  allRepos(): string[] {
    return (this.q.allRepos.all() as { repo: string }[]).map((r) => r.repo);
  }
}
