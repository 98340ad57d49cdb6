import { spawn } from 'node:child_process';
import { constants, existsSync } from 'node:fs';
import { chmod, copyFile, open, readFile, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { isArch, type Arch, type Platform } from '../arch/platform.js';
import { AcpackError } from '../oci/errors.js';
import { hashFile } from '../oci/digest.js';
import { ARTIFACT_HOST } from '../oci/bundle-format.js';
import { partialBundles } from '../oci/bundle-writer.js';
import { MT, type Descriptor } from '../oci/media-types.js';
import type { ContentStore } from '../oci/store.js';
import { LAUNCHER, siteExecutable, siteNode } from '../runtime/site-runtime.js';
import { ownVersion } from '../ui/program.js';
import { putBinaryIndex, putBinaryManifest } from './artifacts.js';
import type { Fetcher } from './fetcher.js';

// What acinstall runs on at the site, as acpack bundle hands it over: its single executable per arch
// beside the bundle (what goes on the medium with it), and, in a bundle that lays a cluster down,
// the same executable gzipped as an artifact, so that the site registry can hand it to a node.

const NAME = 'acinstall';

export interface ResolvedRuntime {
  /** acpack's version and the Node release: `0.1.0+node24.22.3`. */
  version: string;
  ref: string;
  index: Descriptor;
  arches: { arch: Arch; file: Descriptor; manifest: Descriptor }[];
}

/** The arches a bundle is for, each once: those a node of its cluster can have. */
export function bundledArches(platforms: Platform[]): Arch[] {
  return [...new Set(platforms.filter((p) => p.os === 'linux' && isArch(p.architecture)).map((p) => p.architecture as Arch))];
}

/** Refuses, before anything is fetched, to go on without an executable the bundle needs. */
export function requireExecutables(arches: Arch[]): void {
  for (const arch of arches) {
    const file = siteExecutable(arch);
    if (!existsSync(file)) throw new AcpackError('NO_RUNTIME', `acinstall's executable for ${arch} is not built (${file}): run \`npm run build\` first; nothing was fetched or written`);
  }
}

/** `0.1.0+node24.22.3`: which acinstall, on which Node release (the one its executable was built from). */
async function runtimeVersion(arches: Arch[]): Promise<string> {
  const releases = new Set<string>();
  for (const arch of arches) {
    const pkg = join(dirname(dirname(siteNode(arch))), 'package.json');
    releases.add((JSON.parse(await readFile(pkg, 'utf8')) as { version: string }).version);
  }
  if (releases.size !== 1) throw new AcpackError('NO_RUNTIME', `the site runtimes in runtime/.nodes are of different Node releases (${[...releases].join(', ')}): run scripts/fetch-runtime.sh and npm run build`);
  return `${ownVersion()}+node${[...releases][0]}`;
}

/** Tags cannot hold `+`: Helm's convention, `_` in its place. */
export function runtimeRef(version: string): string {
  return `${ARTIFACT_HOST}/runtime/${NAME}:${version.replaceAll('+', '_')}`;
}

/**
 * The executable gzipped, cached beside it (remade when older than the executable: the injection of
 * a new build replaces it). GNU gzip rather than Node's zlib: Node bundles Chromium's zlib, whose
 * output is not canonical zlib's and changes with the Node release, while `gzip -9 -n` (no name, no
 * time) gives the same bytes on any build machine, and a bundle is byte-identical for the same inputs.
 */
export async function gzippedExecutable(arch: Arch): Promise<string> {
  const exe = siteExecutable(arch);
  const gz = `${exe}.gz`;
  const [e, g] = await Promise.all([stat(exe), stat(gz).catch(() => undefined)]);
  if (g && g.mtimeMs >= e.mtimeMs) return gz;
  // A name of this process's own: bundles started together may each make it, and the last rename wins.
  const tmp = `${gz}.${process.pid}`;
  partialBundles.add(tmp);
  try {
    await gzip(exe, tmp);
    await rename(tmp, gz);
  } finally {
    await rm(tmp, { force: true });
    partialBundles.delete(tmp);
  }
  return gz;
}

async function gzip(from: string, to: string): Promise<void> {
  const out = await open(to, 'w', 0o644);
  try {
    const child = spawn('gzip', ['-9', '-n', '-c', from], { stdio: ['ignore', out.fd, 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
    const code = await new Promise<number | null>((resolve, reject) => child.on('error', reject).on('close', resolve));
    if (code !== 0) throw new AcpackError('NO_RUNTIME', `gzip -9 of ${from} failed (exit ${code}): ${stderr.trim()}`);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new AcpackError('NO_RUNTIME', 'gzip is not installed on this machine: acpack compresses acinstall\'s runtime with it');
    throw err;
  } finally {
    await out.close();
  }
}

/**
 * acinstall's runtime for `arches` as one binary artifact (an index over per-arch manifests, each
 * with the gzipped executable as its layer), stored the way the manifest's binaries are.
 */
export async function resolveRuntime(store: ContentStore, fetcher: Fetcher, arches: Arch[]): Promise<ResolvedRuntime> {
  const version = await runtimeVersion(arches);
  const gzipped = await Promise.all(arches.map(gzippedExecutable));
  const perArch: ResolvedRuntime['arches'] = [];
  for (const [i, arch] of arches.entries()) {
    const { digest, size } = await hashFile(gzipped[i]);
    await fetcher.ensure({ kind: 'url', url: pathToFileURL(gzipped[i]).href, digest, size, what: `acinstall's runtime for ${arch}` });
    const file = { mediaType: MT.binaryFileGzip, digest, size };
    perArch.push({ arch, file, manifest: await putBinaryManifest(store, { name: NAME, version, arch, file, fileName: basename(gzipped[i]), mode: '0755' }) });
  }
  const index = await putBinaryIndex(store, NAME, version, perArch.map((a) => a.manifest));
  return { version, ref: runtimeRef(version), index, arches: perArch };
}

/**
 * acinstall's executables copied beside the bundle with the `acinstall` launcher that picks one of
 * them, mode 0755 and flushed to disk, under temp names
 * until `place` renames them all: staged while the bundle is written and placed once it is, so a
 * failed or interrupted run leaves none, whole or half (the CLI's interrupt removes partialBundles).
 */
export class StagedExecutables {
  private constructor(private readonly files: { from: string; to: string; tmp: string }[]) {}

  static async stage(dir: string, arches: Arch[]): Promise<StagedExecutables> {
    const sources = [...arches.map((arch) => ({ from: siteExecutable(arch), name: basename(siteExecutable(arch)) })), { from: LAUNCHER, name: 'acinstall' }];
    const staged = new StagedExecutables(sources.map(({ from, name }) => ({ from, to: join(dir, name), tmp: `${join(dir, name)}.partial-${process.pid}` })));
    for (const f of staged.files) partialBundles.add(f.tmp);
    try {
      for (const f of staged.files) {
        // A clone where the file system has them (btrfs, XFS): the medium gets its own copy either way.
        await copyFile(f.from, f.tmp, constants.COPYFILE_FICLONE);
        await chmod(f.tmp, 0o755);
        const fh = await open(f.tmp, 'r+');
        try {
          await fh.sync();
        } finally {
          await fh.close();
        }
      }
    } catch (err) {
      await staged.discard();
      if ((err as NodeJS.ErrnoException).code === 'ENOSPC') throw new AcpackError('DISK_FULL', `no space left in ${dir} for acinstall's executables; nothing was written`, { cause: err });
      throw err;
    }
    return staged;
  }

  /** Renames each into place; returns the files written. */
  async place(): Promise<string[]> {
    for (const f of this.files) {
      await rename(f.tmp, f.to);
      partialBundles.delete(f.tmp);
    }
    return this.files.map((f) => f.to);
  }

  async discard(): Promise<void> {
    for (const f of this.files) {
      await rm(f.tmp, { force: true });
      partialBundles.delete(f.tmp);
    }
  }
}
