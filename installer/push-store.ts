import { createReadStream } from 'node:fs';
import { AcpackError, formatBytes } from '../oci/errors.js';
import { sha256, shortDigest, type Digest } from '../oci/digest.js';
import { ContentStore } from '../oci/store.js';
import { RegistryClient, manifestMediaType } from '../oci/registry-client.js';
import { parseReference, type Reference } from '../oci/reference.js';
import { isIndexType, type Descriptor, type ImageIndex, type ImageManifest } from '../oci/media-types.js';
import { IndexDb } from '../registry/index.js';

/**
 * `acinstall push --to REGISTRY`: what the store holds, into a registry a site already runs
 * (Harbor, distribution, zot), digests preserved. Every tag goes to the registry under its path
 * (`registry.k8s.io/pause:3.5` → `REGISTRY[/PREFIX]/pause:3.5`; binaries and charts, named under
 * acpack.local/, as `binaries/NAME` and `charts/NAME`), blobs first, then manifests bottom up.
 * What the registry has is skipped (a HEAD each), so a cut run resumes; a blob pushed to one
 * repository is mounted into the next that needs it.
 *
 * A bundle may hold only some platforms of a multi-arch index, and a registry refuses an index
 * whose children it lacks. Such an index is pushed narrowed to the platforms held: its children
 * keep their digests, the tag gets a new index (and a new digest), which the summary names.
 */

export interface PushOptions {
  store: string;
  /** host[:port] of the registry. */
  to: string;
  prefix?: string;
  /** Reach it over plain HTTP or with an unverified certificate (loopback always may). */
  insecure?: boolean;
  log?: (line: string) => void;
}

export interface PushSummary {
  tags: number;
  uploaded: number;
  uploadedBytes: number;
  mounted: number;
  skipped: number;
  manifests: number;
  /** Indexes pushed narrowed to the platforms the store holds. */
  narrowed: { ref: string; upstream: Digest; pushed: Digest; kept: number; of: number }[];
}

/** Where each tag goes: its repository path under the target, without the upstream host. */
function targetRepository(sourceRepo: string, prefix: string | undefined): string {
  const path = sourceRepo.slice(sourceRepo.indexOf('/') + 1);
  return prefix ? `${prefix.replace(/^\/+|\/+$/g, '')}/${path}` : path;
}

export async function pushStore(o: PushOptions): Promise<PushSummary> {
  const target = parseReference(`${o.to}/x`).host;
  const store = await ContentStore.open(o.store);
  const db = new IndexDb(o.store);
  const tags = db.allTags();
  db.close();
  if (tags.length === 0) throw new AcpackError('NOTHING_TO_PUSH', `the store ${o.store} holds no tagged image, binary or chart: import a bundle first`);
  // Two upstreams with the same path would land on one repository: refuse rather than mix them.
  const from = new Map<string, string>();
  for (const t of tags) {
    const repo = targetRepository(t.repo, o.prefix);
    const before = from.get(repo);
    if (before && before !== t.repo) throw new AcpackError('PUSH_CONFLICT', `${before} and ${t.repo} would both be pushed to ${target}/${repo}: push them apart with --prefix, one store at a time, or rename one upstream`);
    from.set(repo, t.repo);
  }

  const client = new RegistryClient({ insecure: o.insecure ? [target] : [] });
  const summary: PushSummary = { tags: 0, uploaded: 0, uploadedBytes: 0, mounted: 0, skipped: 0, manifests: 0, narrowed: [] };
  /** Blobs this run put in some repository: mounted, not uploaded, into the next. */
  const placed = new Map<Digest, string>();
  const log = o.log ?? (() => {});

  const ensureBlob = async (ref: Reference, d: Descriptor) => {
    if (placed.get(d.digest) === ref.repository || (await client.hasBlob(ref, d.digest))) {
      summary.skipped++;
      placed.set(d.digest, ref.repository);
      return;
    }
    if (!(await store.has(d.digest))) throw new AcpackError('MISSING_BLOB', `blob ${d.digest} of ${ref.repository} is not in the store ${o.store}: run acinstall verify --store ${o.store}`);
    const how = await client.pushBlob(ref, d.digest, d.size, () => createReadStream(store.path(d.digest)), placed.get(d.digest));
    if (how === 'mounted') summary.mounted++;
    else {
      summary.uploaded++;
      summary.uploadedBytes += d.size;
    }
    placed.set(d.digest, ref.repository);
  };

  /** Pushes a manifest and what it names; under `tag` when given, else by digest. Returns the digest pushed. */
  const pushTree = async (ref: Reference, digest: Digest, tag?: string): Promise<Digest> => {
    if (!(await store.has(digest))) throw new AcpackError('MISSING_BLOB', `manifest ${digest} of ${ref.repository} is not in the store ${o.store}: run acinstall verify --store ${o.store}`);
    const bytes = await store.readBytes(digest);
    const mediaType = manifestMediaType(bytes, null, `${ref.repository}@${digest}`);
    const m = JSON.parse(bytes.toString('utf8')) as ImageIndex & ImageManifest;
    let body = bytes;
    let pushed = digest;
    if (isIndexType(mediaType)) {
      const held: Descriptor[] = [];
      for (const child of m.manifests ?? []) if (await store.has(child.digest)) held.push(child);
      for (const child of held) await pushTree(ref, child.digest);
      if (held.length < (m.manifests ?? []).length) {
        body = Buffer.from(JSON.stringify({ ...m, manifests: held }));
        pushed = sha256(body);
        summary.narrowed.push({ ref: `${ref.host}/${ref.repository}:${tag ?? digest}`, upstream: digest, pushed, kept: held.length, of: (m.manifests ?? []).length });
      }
    } else {
      if (m.config) await ensureBlob(ref, m.config);
      for (const layer of m.layers ?? []) if (!layer.urls?.length) await ensureBlob(ref, layer);
    }
    const reference = tag ?? pushed;
    if ((await client.hasManifest(ref, reference)) === pushed) return pushed;
    await client.putManifest(ref, reference, body, mediaType);
    summary.manifests++;
    return pushed;
  };

  for (const t of tags) {
    const repository = targetRepository(t.repo, o.prefix);
    const ref: Reference = { host: target, repository, tag: t.tag };
    const pushed = await pushTree(ref, t.digest, t.tag);
    summary.tags++;
    log(`${t.repo}:${t.tag} → ${target}/${repository}:${t.tag}${pushed === t.digest ? '' : ` (narrowed to the platforms held: ${shortDigest(pushed)}, upstream ${shortDigest(t.digest)})`}`);
  }
  return summary;
}

export function formatPushSummary(s: PushSummary, to: string): string {
  return [
    `pushed ${s.tags} tags to ${to}: ${s.uploaded} blobs uploaded (${formatBytes(s.uploadedBytes)}), ${s.mounted} mounted, ${s.skipped} already there; ${s.manifests} manifests`,
    ...s.narrowed.map((n) => `note: ${n.ref} is an index of ${n.kept} of its ${n.of} platforms (the ones the bundle holds): pushed as ${n.pushed}, not upstream's ${n.upstream}; its platforms' manifests keep their digests`),
  ].join('\n');
}
