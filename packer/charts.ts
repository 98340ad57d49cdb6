import { parse as parseYaml } from 'yaml';
import { mkdir, readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { writeFileAtomic } from '../oci/atomic-file.js';
import { fileURLToPath } from 'node:url';
import { AcpackError, formatBytes } from '../oci/errors.js';
import { sha256, type Digest } from '../oci/digest.js';
import { agentFor, DEFAULT_RETRY, fetchWithRetry } from '../oci/http.js';
import { MT, type Descriptor } from '../oci/media-types.js';
import type { ContentStore } from '../oci/store.js';
import { ARTIFACT_HOST } from '../oci/bundle-format.js';
import type { ChartSpec } from '../manifests/index.js';
import type { Fetcher } from './fetcher.js';
import { putChartManifest } from './artifacts.js';
import { packageChart } from './chart-package.js';
import { resolveManifest, type ManifestSource } from './images.js';

export interface ResolvedChart {
  spec: ChartSpec;
  name: string;
  version: string;
  ref: string;
  manifest: Descriptor;
  /** config and chart .tgz */
  blobs: Descriptor[];
  /** What the lock pins: the .tgz digest (repo, path) or the manifest digest (oci). */
  pin: Digest;
}

export function chartRef(name: string, version: string): string {
  return `${ARTIFACT_HOST}/charts/${name}:${version}`;
}

interface RepoIndex {
  entries?: Record<string, { version: string; urls?: string[]; digest?: string; [k: string]: unknown }[]>;
}

/** Fields of a repo index entry that are not Chart.yaml metadata. */
const INDEX_ONLY_FIELDS = new Set(['urls', 'created', 'digest', 'removed']);

export async function resolveChart(
  spec: ChartSpec,
  store: ContentStore,
  client: ManifestSource,
  fetcher: Fetcher,
  lockPin: Digest | undefined,
  mtime: number,
): Promise<ResolvedChart> {
  const src = spec.source;
  const pinned = spec.sha256 ? (`sha256:${spec.sha256}` as Digest) : lockPin;

  if (src.kind === 'oci') {
    const name = spec.name!;
    const { manifest, blobs } = await resolveManifest(src.ref, `oci://${src.ref.host}/${src.ref.repository}:${spec.version}`, pinned, client, store);
    const chartLayer = blobs.find((b) => b.mediaType === MT.helmChart);
    if (!chartLayer) throw new AcpackError('BAD_CHART', `oci://${src.ref.host}/${src.ref.repository}:${spec.version} (${spec.where}) is not a Helm chart: it has no ${MT.helmChart} layer`);
    for (const b of blobs) await fetcher.ensure({ kind: 'registry', ref: src.ref, digest: b.digest, size: b.size });
    return { spec, name, version: spec.version!, ref: chartRef(name, spec.version!), manifest, blobs, pin: manifest.digest };
  }

  let meta: Record<string, unknown>;
  let chart: Descriptor;
  let name: string;
  let version: string;
  if (src.kind === 'path') {
    const packaged = await packageChart(src.path, mtime);
    ({ name, version, meta } = packaged);
    const digest = sha256(packaged.tgz);
    if (spec.sha256 && digest !== pinned) {
      throw new AcpackError('DIGEST_MISMATCH', `chart ${src.path} (${spec.where}) packages to ${digest}, not the pinned sha256 ${spec.sha256}`);
    }
    await store.put(packaged.tgz, { digest, source: src.path });
    chart = { mediaType: MT.helmChart, digest, size: packaged.tgz.length };
  } else {
    name = spec.name!;
    version = spec.version!;
    if (fetcher.offline) {
      // --locked from the cache alone: the chart's metadata is what the index said when it was fetched.
      const remembered = pinned && (await store.has(pinned)) ? await readChartMeta(store, src.repo, name, version, pinned) : undefined;
      if (!remembered) throw new AcpackError('NOT_CACHED', `chart ${name} ${version} from ${src.repo} is not in the cache`);
      meta = remembered;
      chart = { mediaType: MT.helmChart, digest: pinned!, size: (await store.size(pinned!))! };
    } else {
      const index = await fetchRepoIndex(src.repo);
      const entries = typeof index?.entries === 'object' && index.entries !== null ? index.entries : {};
      const versions = (Array.isArray(entries[name]) ? entries[name] : []).filter((e) => typeof e === 'object' && e !== null);
      const entry = versions.find((e) => String(e.version) === version);
      if (!entry) {
        const known = versions.map((e) => e.version).slice(0, 8);
        throw new AcpackError(
          'NOT_FOUND',
          `chart ${name} ${version} (${spec.where}) is not in ${src.repo}/index.yaml${known.length ? ` (it has ${known.join(', ')})` : name in entries ? '' : `: no chart named ${name}`}`,
        );
      }
      const rawUrl = Array.isArray(entry.urls) ? entry.urls[0] : undefined;
      if (typeof rawUrl !== 'string' || !rawUrl) throw new AcpackError('BAD_CHART', `chart ${name} ${version} in ${src.repo}/index.yaml has no download URL`);
      const what = `chart ${name} ${version} (${spec.where})`;
      const url = chartUrl(rawUrl, src.repo, what);
      const announced = entry.digest && /^[a-f0-9]{64}$/.test(entry.digest) ? (`sha256:${entry.digest}` as Digest) : undefined;
      if (pinned && announced && pinned !== announced) {
        throw new AcpackError('DIGEST_MISMATCH', `chart ${name} ${version}: ${src.repo}/index.yaml now says ${announced}, the pin says ${pinned}: the chart was re-published`);
      }
      // A chart beside a local repository's index is a file; anything else the index names must stay http(s).
      const origin = src.repo.startsWith('file:') ? undefined : `${src.repo}/index.yaml`;
      const digest = await fetcher.ensure({ kind: 'url', url, digest: pinned ?? announced, origin, what: `chart ${name} ${version}` }).catch((err) => {
        // e.g. a redirect to file:, refused by the HTTP client: say which chart and repository led there
        if (err instanceof AcpackError && err.code === 'BAD_URL') throw new AcpackError(err.code, `${what} from ${src.repo}: ${err.message}`, { cause: err });
        throw err;
      });
      chart = { mediaType: MT.helmChart, digest, size: (await store.size(digest))! };
      meta = Object.fromEntries(Object.entries(entry).filter(([k]) => !INDEX_ONLY_FIELDS.has(k)));
      await rememberChartMeta(store, src.repo, name, version, digest, meta);
    }
  }
  const { manifest, config } = await putChartManifest(store, meta, chart);
  return { spec, name, version, ref: chartRef(name, version), manifest, blobs: [config, chart], pin: chart.digest };
}

/**
 * Where a repository index says a chart is, resolved against the repository. The index is content from
 * the network (or a copy of it): it may name http and https URLs only, never a local file (file:///etc/…)
 * or another scheme. Only a repository the user's manifest names as a directory (file://…) may have its
 * charts beside the index, inside that directory.
 */
export function chartUrl(raw: string, repo: string, what: string): string {
  const where = `${repo}/index.yaml`;
  let url: URL;
  try {
    url = new URL(raw, `${repo}/`);
  } catch {
    throw new AcpackError('BAD_URL', `${what}: ${where} names "${raw}" as its download, which is not a URL`);
  }
  if (url.protocol === 'http:' || url.protocol === 'https:') return url.toString();
  const dir = new URL(`${repo}/`);
  if (url.protocol === 'file:' && dir.protocol === 'file:' && url.pathname.startsWith(dir.pathname) && !/^[a-z][a-z0-9+.-]*:/i.test(raw)) return url.toString();
  throw new AcpackError(
    'BAD_URL',
    `${what}: ${where} names ${raw} as its download; a chart repository may only point at http or https URLs${url.protocol === 'file:' ? ', never at a local file' : ''}`,
  );
}

/** Larger than any public repository's index.yaml (they split or prune well before this). */
const MAX_INDEX_BYTES = 256 << 20;

async function fetchRepoIndex(repo: string): Promise<RepoIndex> {
  const url = `${repo}/index.yaml`;
  let text: string;
  if (url.startsWith('file:')) {
    text = await readFile(fileURLToPath(url), 'utf8').catch((err) => {
      throw new AcpackError('NOT_FOUND', `cannot read ${url}: ${(err as NodeJS.ErrnoException).code}`);
    });
  } else {
    const res = await fetchWithRetry(url, { method: 'GET', dispatcher: agentFor(false) }, DEFAULT_RETRY, `GET ${url}`);
    if (!res.ok) {
      await res.discard();
      throw new AcpackError('SOURCE_ERROR', `${url}: HTTP ${res.status}: is ${repo} a Helm repository?`);
    }
    const bytes = await res.bytesUpTo(MAX_INDEX_BYTES);
    if (!bytes) throw new AcpackError('BAD_CHART', `${url} is larger than ${formatBytes(MAX_INDEX_BYTES)}: not a Helm repository index`);
    text = bytes.toString('utf8');
  }
  try {
    return parseYaml(text, { maxAliasCount: 1000 }) as RepoIndex;
  } catch (err) {
    throw new AcpackError('BAD_CHART', `${url} is not a Helm repository index: ${(err as Error).message.split('\n')[0]}`);
  }
}

/**
 * What a repository's index said of a chart (its Chart.yaml fields, which become the chart's OCI
 * config), kept beside the cache under charts/ for each chart file fetched, so that `--locked` can
 * build the chart from the cache alone, byte for byte as from the repository.
 */
function chartMetaPath(store: ContentStore, repo: string, name: string, version: string, digest: Digest): string {
  return join(store.root, 'charts', `${sha256(`${repo}\n${name}\n${version}\n${digest}`).slice(7)}.json`);
}

async function rememberChartMeta(store: ContentStore, repo: string, name: string, version: string, digest: Digest, meta: Record<string, unknown>): Promise<void> {
  const path = chartMetaPath(store, repo, name, version, digest);
  await mkdir(dirname(path), { recursive: true });
  await writeFileAtomic(path, JSON.stringify(meta));
}

async function readChartMeta(store: ContentStore, repo: string, name: string, version: string, digest: Digest): Promise<Record<string, unknown> | undefined> {
  try {
    const meta = JSON.parse(await readFile(chartMetaPath(store, repo, name, version, digest), 'utf8')) as unknown;
    return meta && typeof meta === 'object' && !Array.isArray(meta) ? (meta as Record<string, unknown>) : undefined;
  } catch {
    return undefined; // none, or damaged: the repository is asked again
  }
}
