import { parse as parseYaml } from 'yaml';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { AcpackError } from '../oci/errors.js';
import { sha256, type Digest } from '../oci/digest.js';
import { agentFor, DEFAULT_RETRY, fetchWithRetry } from '../oci/http.js';
import { MT, type Descriptor } from '../oci/media-types.js';
import type { ContentStore } from '../oci/store.js';
import type { RegistryClient } from '../oci/registry-client.js';
import { ARTIFACT_HOST } from '../oci/bundle-format.js';
import type { ChartSpec } from '../manifests/index.js';
import type { Fetcher } from './fetcher.js';
import { putChartManifest } from './artifacts.js';
import { packageChart } from './chart-package.js';
import { resolveManifest } from './images.js';

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
  client: RegistryClient,
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
    const index = await fetchRepoIndex(src.repo);
    const entry = index.entries?.[name]?.find((e) => String(e.version) === version);
    if (!entry) {
      const known = (index.entries?.[name] ?? []).map((e) => e.version).slice(0, 8);
      throw new AcpackError(
        'NOT_FOUND',
        `chart ${name} ${version} (${spec.where}) is not in ${src.repo}/index.yaml${known.length ? ` (it has ${known.join(', ')})` : name in (index.entries ?? {}) ? '' : `: no chart named ${name}`}`,
      );
    }
    const rawUrl = entry.urls?.[0];
    if (!rawUrl) throw new AcpackError('BAD_CHART', `chart ${name} ${version} in ${src.repo}/index.yaml has no download URL`);
    const url = new URL(rawUrl, `${src.repo}/`).toString();
    const announced = entry.digest && /^[a-f0-9]{64}$/.test(entry.digest) ? (`sha256:${entry.digest}` as Digest) : undefined;
    if (pinned && announced && pinned !== announced) {
      throw new AcpackError('DIGEST_MISMATCH', `chart ${name} ${version}: ${src.repo}/index.yaml now says ${announced}, the pin says ${pinned}: the chart was re-published`);
    }
    const digest = await fetcher.ensure({ kind: 'url', url, digest: pinned ?? announced });
    chart = { mediaType: MT.helmChart, digest, size: (await store.size(digest))! };
    meta = Object.fromEntries(Object.entries(entry).filter(([k]) => !INDEX_ONLY_FIELDS.has(k)));
  }
  const { manifest, config } = await putChartManifest(store, meta, chart);
  return { spec, name, version, ref: chartRef(name, version), manifest, blobs: [config, chart], pin: chart.digest };
}

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
    text = await res.text();
  }
  try {
    return parseYaml(text, { maxAliasCount: 1000 }) as RepoIndex;
  } catch (err) {
    throw new AcpackError('BAD_CHART', `${url} is not a Helm repository index: ${(err as Error).message.split('\n')[0]}`);
  }
}
