/**
 * Builds acinstall as it runs on site: one bundled CommonJS file (no packer), the registry's mmap
 * addon compiled for each arch against the pinned release's headers, then one single executable per
 * arch, Node's own binary of the pinned release (runtime/) with that file and its arch's addon
 * injected as its SEA blob. The same inputs (and the same compilers) give the same bytes. See
 * docs/runtime.md.
 *
 *   tsx scripts/build-site.ts [--out DIR] [--arch amd64,arm64]      (default dist/site, both)
 */
import { build } from 'esbuild';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, copyFile, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import { promisify } from 'node:util';
import { ARCHES, isArch, nodeArch, unameOf, type Arch } from '../arch/platform.js';
import { MAP_FILE_ASSET } from '../registry/mapped-blobs.js';
import { siteAddon, siteExecutable, siteNode, siteNodeIntegrity, SITE_DIR } from '../runtime/site-runtime.js';

const run = promisify(execFile);
const ROOT = resolve(import.meta.dirname, '..');
/** Postject's marker for Node's SEA blob (the same in every Node release that has SEA). */
const SEA_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';

/** Bundles installer/main.ts into one CommonJS file: SEA runs CommonJS, and nothing beside it on disk. */
export async function bundleSite(outFile: string): Promise<void> {
  const pkg = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { version: string };
  await build({
    entryPoints: [join(ROOT, 'installer', 'main.ts')],
    outfile: outFile,
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node24',
    // Addons never load on site: node:sqlite and zlib's zstd take their place (oci/sqlite.ts,
    // oci/zstd.ts); they stay reachable only for the packer, on the build machine's Node.
    external: ['better-sqlite3', 'zstd-napi', 'cpu-features', '*.node'],
    define: {
      'import.meta.url': '__acpackModuleUrl',
      'import.meta.dirname': '__dirname',
      ACPACK_VERSION: JSON.stringify(pkg.version),
    },
    banner: { js: 'var __acpackModuleUrl = require("node:url").pathToFileURL(__filename).href;' },
    legalComments: 'none',
    // Every start parses the whole file: without whitespace and with simpler syntax it is 30% smaller
    // and `acinstall --version` 50 ms faster (0.28 → 0.23 s here). Names are kept, for stack traces.
    minifyWhitespace: true,
    minifySyntax: true,
    logLevel: 'error',
  });
}

/**
 * native/map-file.c for `arch`, built against the pinned release's own headers (Node-API, so the
 * build machine's Node 20 addon in build/Release is left alone). The compiler is called directly:
 * one C file needs no node-gyp, and without debug information or paths the output is the same
 * bytes for the same compiler. Debian's x86_64-linux-gnu-gcc and aarch64-linux-gnu-gcc
 * (crossbuild-essential-arm64, from scripts/setup.sh) work on either build arch.
 */
export async function buildAddon(arch: Arch, out: string): Promise<void> {
  const headers = join(dirname(dirname(siteNode(arch))), 'include', 'node');
  const tmp = `${out}.${process.pid}`;
  await run(`${unameOf(arch)}-linux-gnu-gcc`, [
    ...['-O2', '-Wall', '-Wextra', '-fPIC', '-shared', '-fvisibility=hidden', '-s'],
    ...['-I', headers, '-o', tmp, join(ROOT, 'native', 'map-file.c')],
  ]);
  await replaceIfChanged(tmp, out);
}

/** Renames `next` over `file` unless it holds the same bytes (an unchanged file keeps its mtime); the bytes kept. */
async function replaceIfChanged(next: string, file: string): Promise<Buffer> {
  const bytes = await readFile(next);
  if (!bytes.equals(await readFile(file).catch(() => Buffer.alloc(0)))) await rename(next, file);
  else await rm(next);
  return bytes;
}

/** One executable: the arch's Node binary with the bundled file and the arch's addon injected as its SEA blob. */
async function singleExecutable(arch: Arch, script: string, addon: string, out: string): Promise<void> {
  const work = `${out}.work-${process.pid}`;
  const tmp = `${out}.${process.pid}`;
  await mkdir(work, { recursive: true });
  try {
    const config = join(work, 'sea-config.json');
    const blob = join(work, 'sea.blob');
    // No snapshot and no code cache: those are specific to the generating binary's arch, and the
    // blob is made by this machine's copy of the release for every arch. Paths relative to the work
    // directory: the blob keeps the main script's path as given, and an absolute one would make
    // builds into two directories differ.
    await writeFile(
      config,
      JSON.stringify({ main: relative(work, script), output: 'sea.blob', disableExperimentalSEAWarning: true, useSnapshot: false, useCodeCache: false, assets: { [MAP_FILE_ASSET]: relative(work, addon) } }),
    );
    await run(siteNode(nodeArch()), ['--experimental-sea-config', 'sea-config.json'], { cwd: work });
    await copyFile(siteNode(arch), tmp);
    await run(process.execPath, [join(ROOT, 'node_modules', 'postject', 'dist', 'cli.js'), tmp, 'NODE_SEA_BLOB', blob, '--sentinel-fuse', SEA_FUSE]);
    await chmod(tmp, 0o755);
    // Renamed into place: a running copy keeps its inode, and a reader never sees half a file.
    await rename(tmp, out);
  } finally {
    await rm(work, { recursive: true, force: true });
    await rm(tmp, { force: true });
  }
}

function parseArchList(list: string): Arch[] {
  const arches = list.split(',');
  for (const a of arches) if (!isArch(a)) throw new Error(`--arch: ${a} is not one of ${ARCHES.join(', ')}`);
  return arches as Arch[];
}


/**
 * Builds what is out of date in `outDir`: the bundled file and the addons when the sources give
 * others, and each executable that does not carry them (the injection is the slow part: half a
 * minute each).
 */
export async function buildSite(outDir: string, arches: readonly Arch[] = ARCHES): Promise<Partial<Record<Arch, string>>> {
  await mkdir(outDir, { recursive: true });
  const script = join(outDir, 'acinstall.cjs');
  // Names of this process's own: test runs started together each check, and may each build.
  const next = `${script}.${process.pid}`;
  await bundleSite(next);
  const bundled = await replaceIfChanged(next, script);
  // Each executable names what it was made of, the bundled file, the addon, the Node package and
  // this script: an older one (or a copied one) is remade.
  const sha = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');
  const bundledHash = sha(bundled);
  const made: Partial<Record<Arch, string>> = {};
  for (const arch of arches) {
    made[arch] = siteExecutable(arch, outDir);
    const addon = siteAddon(arch, outDir);
    await buildAddon(arch, addon);
    const stamp = `${made[arch]}.source`;
    const source = `${bundledHash} ${sha(await readFile(addon))} ${siteNodeIntegrity(arch)} ${sha(await readFile(import.meta.filename))}`;
    if ((await readFile(stamp, 'utf8').catch(() => '')) === source && existsSync(made[arch])) continue;
    await rm(`${made[arch]}.gz`, { force: true }); // acpack's gzipped copy of the old one
    await singleExecutable(arch, script, addon, made[arch]);
    await writeFile(stamp, source);
  }
  return made;
}

if (import.meta.filename === process.argv[1]) {
  const i = process.argv.indexOf('--out');
  const out = resolve(i > 0 ? process.argv[i + 1] : SITE_DIR);
  const a = process.argv.indexOf('--arch');
  const arches = a > 0 ? parseArchList(process.argv[a + 1]) : ARCHES;
  for (const [arch, file] of Object.entries(await buildSite(out, arches))) process.stdout.write(`${arch}: ${file}\n`);
}
