import { access, constants, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { formatPlatform, isArch } from '../arch/platform.js';
import { AcpackError, formatBytes, plural } from '../oci/errors.js';
import { BUNDLE_FORMAT, type BundleDescriptor, type BundledRuntime } from '../oci/bundle-format.js';
import { bundleJsonBytes, writeBundle, type BundleBlob } from '../oci/bundle-writer.js';
import { loadSigningKey, signDescriptor } from '../oci/bundle-signature.js';
import { writeVolumeSet } from './volume-set.js';
import { readBase, type BaseRef } from './base.js';
import { sha256, type Digest } from '../oci/digest.js';
import { bundleIndex, hostPlatform, resolveManifestContent, type Resolution, type ResolveOptions } from './pack.js';
import { chartKey, writeLock, type LockFile } from './lock.js';
import { percent, type Reporter } from '../ui/progress.js';
import { carriesKubeadm, incompleteError, lintManifest, lintResolved, type LintReport, type PendingLint } from './lint.js';
import { bundledKubeadm } from './lint-kubeadm.js';
import { bundledArches, requireExecutables, StagedExecutables, type ResolvedRuntime } from './site-runtime.js';

export interface BundleSummary {
  out: string;
  /** With a volume size: the files written (NAME.001.tar.zst, …) in place of `out`. */
  volumes?: string[];
  /** Volumes of an earlier, longer set under the same name, removed once the new set was whole. */
  removedVolumes?: string[];
  /** A delta: its base, and the blobs left out because the base holds them. */
  delta?: { base: string; leftOut: number; leftOutBytes: number };
  images: number;
  imagePlatforms: number;
  binaries: number;
  binaryFiles: number;
  charts: number;
  blobs: number;
  bytes: number;
  /** Bytes if every image × platform, binary and chart were stored on its own. */
  undeduplicatedBytes: number;
  fetchedBytes: number;
  /** acinstall's runtime in the bundle (one that lays a cluster down): its version, per arch its gzipped size. */
  runtime?: { version: string; arches: { arch: string; size: number }[] };
  /** acinstall's executables written beside the bundle, one per bundled arch. */
  executables?: string[];
  /** Why this bundle cannot lay a cluster down (written anyway: --allow-incomplete). */
  incomplete?: string[];
  /** What limits the sites it can install on (no lvscare: one master only). */
  warnings?: string[];
}

export interface BundleOptions extends ResolveOptions {
  out: string;
  /** Write a bundle that carries kubeadm but cannot lay a cluster down, with a loud warning. */
  allowIncomplete?: boolean;
  /** Write acinstall's executable for each bundled arch beside `out`, what goes on the medium with it (the CLI does). */
  executables?: boolean;
  /** The ed25519 private key (PEM file) to sign bundle.json with. */
  sign?: string;
  /** Write NAME.001.tar.zst, … of at most this many bytes each (packer/volumes.ts). */
  volumeSize?: number;
  /** A delta: leave out the blobs this site inventory (acinstall inventory) or earlier bundle holds. */
  base?: string;
}

/** `acpack bundle`: resolve into the store, then stream bundle.tar.zst out of it. */
export async function bundle(opts: BundleOptions): Promise<BundleSummary> {
  // The finished bundle is renamed onto -o: a directory there would fail that only after every download.
  if ((await stat(opts.out).catch(() => undefined))?.isDirectory()) {
    throw new AcpackError('BAD_OUTPUT', `-o ${opts.out} is a directory: name the bundle file to write, e.g. -o ${join(opts.out, 'bundle.tar.zst')}; nothing was fetched or written`);
  }
  await checkWritableDir(dirname(resolve(opts.out)), 'the output');
  const lint = bundleLint(opts);
  const checks: ResolveOptions['checks'] = {
    ...lint.checks,
    manifest: async (m, platforms) => {
      // The executables go beside the bundle, and into it as the runtime of one that lays a cluster down.
      if (opts.executables || carriesKubeadm(m)) requireExecutables(bundledArches(platforms));
      await lint.checks.manifest!(m, platforms);
    },
  };
  const signingKey = opts.sign ? await loadSigningKey(opts.sign) : undefined;
  const base = opts.base ? await readBase(opts.base) : undefined;
  const r = await resolveManifestContent({ ...opts, checks, runtime: true, ...(base ? { present: base } : {}) });
  const index = bundleIndex(r);
  const all = orderedBlobs(r);
  // A delta: the blobs its base holds are listed, not carried.
  const blobs = base ? all.filter((b) => !base.blobs.has(b.digest)) : all;
  let descriptor = bundleDescriptor(r, all, bundleJsonBytes(index), base && { ...base.ref, has: base.blobs });
  // Downloading and writing overlap: the writer takes each blob as soon as it is verified in the store,
  // in the order downloads were started, so the bytes written measure the whole job. (A volume set
  // first waits for the blobs it splits: bundle.json, first in each volume, names their parts.)
  r.fetcher.onBytes = () => {};
  opts.reporter.phase(r.downloads.size > 0 ? 'fetch and write' : 'write', descriptor.blobs.bytes);
  const writeOptions = {
    mtime: opts.sourceDateEpoch,
    onBytes: (n: number) => opts.reporter.bytes(n),
    ready: (digest: Digest) => r.downloads.get(digest),
    // Blobs this run just downloaded were hashed on the way in; blobs from an earlier run are re-hashed.
    verified: r.fetcher.verified,
    ...(signingKey ? { sign: (bytes: Buffer) => signDescriptor(bytes, signingKey) } : {}),
  };
  let volumes: string[] | undefined;
  let removedVolumes: string[] = [];
  const writing = opts.volumeSize
    ? writeVolumeSet(r, descriptor, index, blobs, opts.out, opts.volumeSize, writeOptions).then((v) => {
        volumes = v.paths;
        descriptor = v.descriptor;
        removedVolumes = v.removed;
      })
    : writeBundle(r.store, descriptor, index, blobs, opts.out, writeOptions);
  const staging = opts.executables ? StagedExecutables.stage(dirname(opts.out), bundledArches(r.platforms)) : undefined;
  const [wrote, fetched, staged] = await Promise.allSettled([writing, r.downloaded, staging]);
  const copies = staged.status === 'fulfilled' ? staged.value : undefined;
  const failed = [fetched, wrote, staged].find((x) => x.status === 'rejected');
  if (failed) {
    await copies?.discard();
    throw failed.reason;
  }
  const executables = await copies?.place();
  opts.reporter.end();
  return {
    out: opts.out,
    ...(volumes ? { volumes } : {}),
    ...(removedVolumes.length ? { removedVolumes } : {}),
    ...(base ? { delta: { base: `${base.ref.name} ${base.ref.version}`, leftOut: all.length - blobs.length, leftOutBytes: all.reduce((n, b) => n + b.size, 0) - descriptor.blobs.bytes } } : {}),
    images: r.images.length,
    imagePlatforms: r.images.reduce((n, i) => n + i.parts.length, 0),
    binaries: r.binaries.length,
    binaryFiles: r.binaries.reduce((n, b) => n + b.arches.length, 0),
    charts: r.charts.length,
    blobs: descriptor.blobs.count,
    bytes: descriptor.blobs.bytes,
    undeduplicatedBytes: undeduplicatedBytes(r),
    fetchedBytes: r.fetcher.fetchedBytes,
    ...(r.runtime ? { runtime: { version: r.runtime.version, arches: r.runtime.arches.map((a) => ({ arch: a.arch, size: a.file.size })) } } : {}),
    ...(executables ? { executables } : {}),
    incomplete: lint.found.problems,
    warnings: lint.found.warnings,
  };
}

/**
 * The lint of a bundle that carries kubeadm (packer/lint.ts), at the earliest point each check can
 * be made: what the manifest decides, before anything is fetched; kubeadm's images once references
 * and binaries are resolved (this machine's arch asked of the bundled kubeadm itself), before any
 * image layer downloads and before the bundle file is begun. A bundle that cannot lay a cluster down
 * is refused there (nothing is written at -o), or with allowIncomplete goes on with its problems
 * said as warnings and in the summary.
 */
function bundleLint(opts: BundleOptions) {
  const found: LintReport = { problems: [], warnings: [], notes: [] };
  let pending: PendingLint | undefined;
  const judge = (name: { name: string; version: string }, report: LintReport, after: string, reporter: Reporter) => {
    for (const n of report.notes) reporter.info(n);
    for (const w of report.warnings) reporter.warn(w);
    found.warnings.push(...report.warnings);
    if (report.problems.length === 0) return;
    if (!opts.allowIncomplete) throw incompleteError(name, report.problems, `nothing was written at ${opts.out}; ${after}`);
    for (const p of report.problems) reporter.warn(`INCOMPLETE (--allow-incomplete): ${p}`);
    found.problems.push(...report.problems);
  };
  const host = hostPlatform();
  const nativeArch = process.platform === 'linux' && isArch(host.architecture) ? host.architecture : undefined;
  const checks: ResolveOptions['checks'] = {
    manifest: async (m, platforms) => {
      if (!carriesKubeadm(m)) return;
      const early = await lintManifest(m, platforms, { images: 'later' });
      pending = early.pending;
      judge(m, early.report, 'nothing was fetched', opts.reporter);
    },
    resolved: async (r) => {
      if (!pending) return;
      const late = await lintResolved(pending, { charts: r.charts, nativeArch, run: bundledKubeadm(r.store, r.binaries, nativeArch!) });
      judge(r.manifest, late, `image layers were not downloaded (what was fetched stays in ${opts.cacheDir})`, opts.reporter);
    },
  };
  return { checks, found };
}

/** Fails before any download when a directory cannot take the result. */
async function checkWritableDir(dir: string, what: string): Promise<void> {
  try {
    await access(dir, constants.W_OK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new AcpackError('BAD_OUTPUT', code === 'ENOENT' ? `${what} directory ${dir} does not exist` : `${what} directory ${dir} is not writable (${code})`);
  }
}

/** Manifests and indexes first (an importer knows the whole graph before the big layers), each group by digest. */
function orderedBlobs(r: Resolution): (BundleBlob & { manifest: boolean })[] {
  const all = [...r.blobs.entries()].map(([digest, b]) => ({ digest, size: b.size, manifest: b.manifest }));
  return all.sort((a, b) => (a.manifest === b.manifest ? (a.digest < b.digest ? -1 : 1) : a.manifest ? -1 : 1));
}

/** bundle.json for the blobs in the order written and index.json's bytes; a delta lists those `base` has, and carries the rest. */
export function bundleDescriptor(r: Resolution, blobs: BundleBlob[], indexBytes: Buffer, base?: BaseRef & { has: Set<Digest> }): BundleDescriptor {
  const carried = (b: BundleBlob) => !base?.has.has(b.digest);
  let bytes = 0;
  let count = 0;
  for (const b of blobs) {
    if (!carried(b)) continue;
    bytes += b.size;
    count++;
  }
  const sum = (ds: { size: number }[]) => ds.reduce((n, d) => n + d.size, 0);
  return {
    format: BUNDLE_FORMAT,
    name: r.manifest.name,
    version: r.manifest.version,
    source: r.manifest.digest,
    platforms: r.platforms.map(formatPlatform),
    images: r.images.map((i) => ({
      ref: i.spec.name,
      digest: i.top.digest,
      mediaType: i.top.mediaType,
      platforms: i.parts.map((p) => ({ platform: p.platform, digest: p.manifest.digest, size: p.manifest.size + sum(p.blobs) })),
    })),
    binaries: r.binaries.flatMap((b) =>
      b.arches.map((a) => ({
        name: a.name,
        version: a.version,
        arch: a.arch,
        digest: a.file.digest,
        size: a.file.size,
        manifest: a.manifest.digest,
        index: b.index.digest,
        ref: b.ref,
        ...(a.install ? { install: a.install } : {}),
        ...(a.extract ? { extract: a.extract } : {}),
        mode: a.mode,
      })),
    ),
    charts: r.charts.map((c) => ({ name: c.name, version: c.version, ref: c.ref, digest: c.manifest.digest, chart: c.pin, size: c.manifest.size + sum(c.blobs) })),
    ...(r.runtime ? { runtime: runtimeEntries(r.runtime) } : {}),
    index: { digest: sha256(indexBytes), size: indexBytes.length },
    volumes: 1,
    blobs: { count, bytes, list: blobs.map((b) => ({ digest: b.digest, size: b.size, ...(carried(b) ? { volume: 1 } : {}) })) },
    ...(base ? { base: { name: base.name, version: base.version, digest: base.digest } } : {}),
  };
}

function runtimeEntries(rt: ResolvedRuntime): BundledRuntime[] {
  return rt.arches.map((a) => ({ arch: a.arch, version: rt.version, digest: a.file.digest, size: a.file.size, manifest: a.manifest.digest, index: rt.index.digest, ref: rt.ref }));
}

function undeduplicatedBytes(r: Resolution): number {
  let n = 0;
  for (const i of r.images) for (const p of i.parts) n += p.manifest.size + p.blobs.reduce((s, b) => s + b.size, 0);
  for (const b of [...r.binaries, ...(r.runtime ? [r.runtime] : [])]) for (const a of b.arches) n += a.file.size + a.manifest.size;
  for (const c of r.charts) n += c.manifest.size + c.blobs.reduce((s, b) => s + b.size, 0);
  return n;
}

export function formatSummary(s: BundleSummary): string {
  // The bundle's own indexes are not in the per-image sum: with nothing shared it is a little larger.
  const saved = Math.max(0, s.undeduplicatedBytes - s.bytes);
  return [
    s.volumes ? `wrote ${s.volumes.length} volumes: ${s.volumes.join(', ')}` : `wrote ${s.out}`,
    ...(s.removedVolumes?.length ? [`  removed:  ${s.removedVolumes.join(', ')}, left by an earlier, longer set under this name`] : []),
    `  images:   ${s.images} (${s.imagePlatforms} image × platform)`,
    `  binaries: ${s.binaries} (${plural(s.binaryFiles, 'file')})`,
    `  charts:   ${s.charts}`,
    ...(s.runtime ? [`  runtime:  acinstall ${s.runtime.version} for ${s.runtime.arches.map((a) => `${a.arch} (${formatBytes(a.size)} gzipped)`).join(', ')}`] : []),
    `  blobs:    ${s.blobs} unique, ${formatBytes(s.bytes)}${s.delta ? ` carried; ${s.delta.leftOut} (${formatBytes(s.delta.leftOutBytes)}) left out: ${s.delta.base} holds them` : ''}`,
    `  dedupe:   ${formatBytes(s.undeduplicatedBytes)} if stored per image and arch; saved ${formatBytes(saved)} (${percent(saved, s.undeduplicatedBytes) ?? 0}%)`,
    `  fetched:  ${formatBytes(s.fetchedBytes)} this run (the rest was in the cache)`,
    ...(s.executables?.length ? [`wrote ${s.executables.join(', ')}: acinstall for each arch and the launcher that picks one (run ./acinstall on site), to go on the medium with the bundle`] : []),
    ...(s.warnings ?? []).map((w) => `warning: ${w}`),
    ...(s.incomplete?.length
      ? [
          `WARNING: ${s.out} CANNOT LAY A CLUSTER DOWN as it is (written with --allow-incomplete):`,
          ...s.incomplete.map((p) => `  - ${p}`),
        ]
      : []),
  ].join('\n');
}

/** `acpack lock`: resolve everything to digests and write M.lock. */
export async function lock(opts: ResolveOptions): Promise<{ path: string; lock: LockFile }> {
  const r = await resolveManifestContent({ ...opts, trustOnFirstUse: true, ignoreLock: true, locked: false, skipLayers: true });
  const lockFile: LockFile = { images: {}, binaries: {}, charts: {} };
  for (const i of r.images) lockFile.images[i.spec.name] = i.top.digest as Digest;
  for (const b of r.binaries) {
    lockFile.binaries[b.spec.name] = Object.fromEntries(b.arches.map((a) => [a.arch, { url: a.pinUrl, sha256: a.file.digest.slice(7) }]));
  }
  for (const c of r.charts) lockFile.charts[chartKey(c.name, c.version)] = c.pin;
  const path = await writeLock(opts.manifestFile, lockFile, r.manifest.digest);
  return { path, lock: lockFile };
}
