import { basename, resolve as resolvePath } from 'node:path';
import pLimit from 'p-limit';
import { formatPlatform, parsePlatform, type Platform } from '../arch/platform.js';
import { AcpackError, plural } from '../oci/errors.js';
import type { Digest } from '../oci/digest.js';
import { ANNOTATION_REF_NAME, MT, type Descriptor, type ImageIndex } from '../oci/media-types.js';
import { ContentStore } from '../oci/store.js';
import { RegistryClient } from '../oci/registry-client.js';
import { loadManifest, type BundleManifest, type ImageSpec } from '../manifests/index.js';
import { Fetcher } from './fetcher.js';
import { resolveImage, type ResolvedImage } from './images.js';
import { resolveBinary, type ResolvedBinary } from './binaries.js';
import type { BaseBlobs } from './base.js';
import { resolveChart, type ResolvedChart } from './charts.js';
import { EMPTY_CONFIG } from './artifacts.js';
import { carriesKubeadm } from './lint.js';
import { bundledArches, resolveRuntime, type ResolvedRuntime } from './site-runtime.js';
import { chartKey, readLock, type LockFile } from './lock.js';
import { CachedManifests, fromCache, requireCached } from './locked.js';
import type { Reporter } from '../ui/progress.js';

export interface ResolveOptions {
  manifestFile: string;
  /** `--arch`/`--platform`; else the manifest's platforms; else this machine's. */
  platforms?: Platform[];
  cacheDir: string;
  insecure?: string[];
  /** Refuse anything not in the lock or that moved since. */
  locked?: boolean;
  /** `acpack lock`: accept unpinned binaries and pin what they are now. */
  trustOnFirstUse?: boolean;
  /** Ignore an existing lock file (acpack lock re-resolves everything). */
  ignoreLock?: boolean;
  /** Stop after manifests, binaries and charts: image layers are not needed to lock. */
  skipLayers?: boolean;
  /**
   * What the site holds already (a delta's base): the bundle does not carry it, so it is not
   * downloaded — image layers, and binaries whose size the base says.
   */
  present?: BaseBlobs;
  /** acpack bundle: a bundle that carries kubeadm carries acinstall's runtime too (packer/site-runtime.ts). */
  runtime?: boolean;
  reporter: Reporter;
  sourceDateEpoch: number;
  concurrency?: number;
  /**
   * Checks of the content (acpack bundle's lint, packer/lint.ts): `manifest` before anything is
   * fetched, `resolved` once images, binaries and charts are resolved and before any image layer
   * downloads. A throw stops the run there.
   */
  checks?: {
    manifest?(manifest: BundleManifest, platforms: Platform[]): Promise<void>;
    resolved?(r: Pick<Resolution, 'manifest' | 'platforms' | 'store' | 'images' | 'binaries' | 'charts'>): Promise<void>;
  };
}

export interface Resolution {
  manifest: BundleManifest;
  platforms: Platform[];
  store: ContentStore;
  images: ResolvedImage[];
  binaries: ResolvedBinary[];
  charts: ResolvedChart[];
  runtime?: ResolvedRuntime;
  /** Every blob the bundle carries, manifests and indexes marked. */
  blobs: Map<Digest, { size: number; manifest: boolean }>;
  /** Image blobs still downloading, by digest (the bundle writer waits for each in turn). */
  downloads: Map<Digest, Promise<Digest>>;
  /** Resolves when every download has ended; rejects with the first failure. */
  downloaded: Promise<void>;
  fetcher: Fetcher;
}

export function hostPlatform(): Platform {
  return parsePlatform(process.arch === 'x64' ? 'linux/amd64' : `linux/${process.arch}`);
}

/** What a manifest or bundle holds, as messages say it: 2 images, 1 binary, 0 charts. */
export function contents(images: number, binaries: number, charts: number): string {
  return `${plural(images, 'image')}, ${plural(binaries, 'binary', 'binaries')}, ${plural(charts, 'chart')}`;
}

/**
 * Resolves a manifest into the content store: every image manifest (byte-for-byte), every binary
 * and chart, and starts downloading the image blobs of the wanted platforms (`downloads`), so the
 * caller can write while they arrive. Re-running reuses what the store holds.
 */
export async function resolveManifestContent(opts: ResolveOptions): Promise<Resolution> {
  const { reporter } = opts;
  const manifestFile = resolvePath(opts.manifestFile);
  const manifest = await loadManifest(manifestFile);
  const platforms = opts.platforms ?? manifest.platforms ?? [hostPlatform()];
  const lock = opts.ignoreLock ? undefined : await readLock(manifestFile);
  if (opts.locked && !lock) throw new AcpackError('NOT_LOCKED', `--locked needs ${manifestFile}.lock: run \`acpack lock -f ${opts.manifestFile}\` first`);
  await opts.checks?.manifest?.(manifest, platforms);

  const store = await ContentStore.open(opts.cacheDir);
  const client = new RegistryClient({ insecure: [...manifest.insecureRegistries, ...(opts.insecure ?? [])], tokenHosts: manifest.tokenHosts });
  // A file the cache holds is still asked for upstream, so that a dead link is said, not hidden.
  const fetcher = new Fetcher(store, client, opts.concurrency ?? 8, (n) => reporter.bytes(n), { warnStaleUrl: (m) => reporter.warn(m) });
  const limit = pLimit(opts.concurrency ?? 8);
  reporter.info(
    `${manifest.name} ${manifest.version}: ${contents(manifest.images.length, manifest.binaries.length, manifest.charts.length)} for ${platforms.map(formatPlatform).join(', ')}`,
  );
  // --locked: what the cache holds whole is built from it alone, asking nothing upstream (packer/locked.ts).
  const cache = opts.locked ? { manifests: new CachedManifests(store), fetcher: new Fetcher(store, client, 1, () => {}, { offline: true }) } : undefined;
  const fromCacheCount = { images: 0, binaries: 0, charts: 0 };

  reporter.phase('resolve images', 0);
  const cachedImages = new Map<ImageSpec, ResolvedImage | undefined>();
  if (cache) {
    await settleAll(
      manifest.images.map((spec) =>
        limit(async () => {
          const hit = await fromCache(async () => {
            const img = await resolveImage(spec, platforms, cache.manifests, store, cache.fetcher, lock!.images[spec.name]);
            for (const part of img?.parts ?? []) await requireCached(store, part.blobs.map((b) => b.digest), spec.name);
            return img;
          });
          if (hit) cachedImages.set(spec, hit.value);
        }),
      ),
    );
    await checkLockedImages(manifest, lock!, manifest.images.filter((spec) => !cachedImages.has(spec)), client, limit);
  }
  const images = (
    await settleAll(
      manifest.images.map((spec) =>
        limit(async () => {
          const img = cachedImages.has(spec) ? cachedImages.get(spec) : await resolveImage(spec, platforms, client, store, fetcher, lock?.images[spec.name]);
          if (!img) reporter.info(`skipping ${spec.name}: it is only for ${spec.platforms!.map(formatPlatform).join(', ')}`);
          else if (cachedImages.has(spec)) fromCacheCount.images++;
          return img;
        }),
      ),
    )
  ).filter((i): i is ResolvedImage => i !== undefined);

  reporter.phase('fetch binaries and charts', 0);
  for (const spec of manifest.binaries) {
    if (opts.locked && !lock!.binaries[spec.name] && Object.keys(spec.sha256).length === 0) {
      throw new AcpackError('NOT_LOCKED', `binary ${spec.name} is not in the lock file: run acpack lock`);
    }
  }
  const binaries = (
    await settleAll(
      manifest.binaries.map((spec) =>
        limit(async () => {
          const pins = lock?.binaries[spec.name] ?? {};
          const hit = cache && (await fromCache(() => resolveBinary(spec, platforms, store, cache.fetcher, pins, false, opts.present)));
          if (hit?.value) fromCacheCount.binaries++;
          return hit ? hit.value : resolveBinary(spec, platforms, store, fetcher, pins, opts.trustOnFirstUse, opts.present);
        }),
      ),
    )
  ).filter((b): b is ResolvedBinary => b !== undefined);
  const charts = await settleAll(
    manifest.charts.map((spec) =>
      limit(async () => {
        const key = spec.name && spec.version ? chartKey(spec.name, spec.version) : undefined;
        const pin = key ? lock?.charts[key] : undefined;
        const hit = cache && (await fromCache(() => resolveChart(spec, store, cache.manifests, cache.fetcher, pin, opts.sourceDateEpoch)));
        // A local chart directory has no upstream: it is packaged either way and is not counted.
        if (hit && spec.source.kind !== 'path') fromCacheCount.charts++;
        const chart = hit ? hit.value : await resolveChart(spec, store, client, fetcher, pin, opts.sourceDateEpoch);
        const locked = lock?.charts[chartKey(chart.name, chart.version)];
        if (opts.locked && locked !== chart.pin) {
          throw new AcpackError(
            'LOCK_DRIFT',
            locked
              ? `chart ${chart.name} ${chart.version} is now ${chart.pin}, the lock says ${locked}: run acpack lock if that is intended`
              : `chart ${chart.name} ${chart.version} is not in the lock file: run acpack lock`,
          );
        }
        return chart;
      }),
    ),
  );
  const cached = fromCacheCount.images + fromCacheCount.binaries + fromCacheCount.charts;
  if (cached > 0) {
    reporter.info(
      `${cached} from cache, upstream not checked (${contents(fromCacheCount.images, fromCacheCount.binaries, fromCacheCount.charts)}, as ${basename(manifestFile)}.lock pins them; \`acpack lock\` asks upstream again)`,
      { fromCache: cached, upstreamChecked: false },
    );
  }

  await opts.checks?.resolved?.({ manifest, platforms, store, images, binaries, charts });
  const runtime = opts.runtime && carriesKubeadm(manifest) ? await resolveRuntime(store, fetcher, bundledArches(platforms)) : undefined;

  const blobs = new Map<Digest, { size: number; manifest: boolean }>();
  const add = (d: Descriptor, manifest: boolean) => blobs.set(d.digest, { size: d.size, manifest: manifest || (blobs.get(d.digest)?.manifest ?? false) });
  const imageBlobs: { ref: ResolvedImage; d: Descriptor }[] = [];
  for (const img of images) {
    add(img.top, true);
    for (const part of img.parts) {
      add(part.manifest, true);
      for (const b of part.blobs) {
        add(b, false);
        imageBlobs.push({ ref: img, d: b });
      }
    }
  }
  for (const b of [...binaries, ...(runtime ? [runtime] : [])]) {
    add(b.index, true);
    for (const a of b.arches) {
      add(a.manifest, true);
      add(EMPTY_CONFIG, false);
      add(a.file, false);
    }
  }
  for (const c of charts) {
    add(c.manifest, true);
    for (const b of c.blobs) add(b, false);
  }

  const missing = new Map<Digest, { ref: ResolvedImage; d: Descriptor }>();
  if (!opts.skipLayers) for (const x of imageBlobs) if (!missing.has(x.d.digest) && !opts.present?.blobs.has(x.d.digest) && !(await store.has(x.d.digest))) missing.set(x.d.digest, x);
  // Started in digest order, the order the bundle writes them, so the writer rarely waits.
  const downloads = new Map<Digest, Promise<Digest>>();
  for (const x of [...missing.values()].sort((a, b) => (a.d.digest < b.d.digest ? -1 : 1))) {
    downloads.set(x.d.digest, fetcher.ensure({ kind: 'registry', ref: x.ref.spec.ref, digest: x.d.digest, size: x.d.size }));
  }
  const downloaded = settleAll([...downloads.values()]).then(() => undefined);
  downloaded.catch(() => {}); // the caller awaits it; this only keeps an early failure from being "unhandled"
  return { manifest, platforms, store, images, binaries, charts, runtime, blobs, downloads, downloaded, fetcher };
}

/**
 * Waits for every task, then throws the first failure: work in flight is never abandoned in the
 * background (a partial blob is left consistent for the next run to resume).
 */
async function settleAll<T>(tasks: Promise<T>[]): Promise<T[]> {
  const results = await Promise.allSettled(tasks);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
  return results.map((r) => (r as PromiseFulfilledResult<T>).value);
}

/**
 * --locked: every image must be in the lock, and the tags of those fetched from upstream (`upstream`:
 * not whole in the cache) must still point where the lock says.
 */
async function checkLockedImages(manifest: BundleManifest, lock: LockFile, upstream: ImageSpec[], client: RegistryClient, limit: ReturnType<typeof pLimit>): Promise<void> {
  const drift = manifest.images.filter((spec) => !lock.images[spec.name]).map((spec) => `${spec.name}: not in the lock file`);
  await Promise.all(
    upstream.map((spec) =>
      limit(async () => {
        const locked = lock.images[spec.name];
        if (!locked || spec.ref.digest) return;
        const now = await client.resolve(spec.ref);
        if (now !== locked) drift.push(`${spec.name}: moved from ${locked} to ${now}`);
      }),
    ),
  );
  if (drift.length > 0) {
    throw new AcpackError('LOCK_DRIFT', `the sources moved since ${manifest.file}.lock was written:\n  ${drift.sort().join('\n  ')}\nrun \`acpack lock\` to accept the new content`);
  }
}

/** index.json of the bundle: one entry per image, binary, chart and the runtime, named by its reference. */
export function bundleIndex(r: Resolution): ImageIndex {
  const entries: Descriptor[] = [];
  const named = (d: Descriptor, name: string): Descriptor => ({
    mediaType: d.mediaType,
    digest: d.digest,
    size: d.size,
    ...(d.artifactType ? { artifactType: d.artifactType } : {}),
    annotations: { [ANNOTATION_REF_NAME]: name },
  });
  for (const i of r.images) entries.push(named(i.top, i.spec.name));
  for (const b of r.binaries) entries.push(named(b.index, b.ref));
  for (const c of r.charts) entries.push(named(c.manifest, c.ref));
  if (r.runtime) entries.push(named(r.runtime.index, r.runtime.ref));
  entries.sort((a, b) => (a.annotations![ANNOTATION_REF_NAME] < b.annotations![ANNOTATION_REF_NAME] ? -1 : 1));
  return { schemaVersion: 2, mediaType: MT.ociIndex, manifests: entries };
}
