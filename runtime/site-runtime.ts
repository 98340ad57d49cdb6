import { existsSync, readFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import type { Arch } from '../arch/platform.js';
import { AcpackError } from '../oci/errors.js';

/**
 * Where the build machine keeps what acinstall ships on: each arch's Node binary of the pinned release
 * (runtime/package-lock.json, fetched by scripts/fetch-runtime.sh) and the single executables built
 * from it (scripts/build-site.ts). Only the build machine reads this; the site has the executables.
 */
const HERE = resolve(import.meta.dirname, '..');
/** The checkout: this module runs from source (runtime/) or compiled (dist/runtime/). */
const ROOT = basename(HERE) === 'dist' ? dirname(HERE) : HERE;
const NPM_CPU: Record<Arch, string> = { amd64: 'x64', arm64: 'arm64' };

export const SITE_DIR = join(ROOT, 'dist', 'site');

/** The medium's `acinstall`: picks this machine's executable, or says in one line why none runs here. */
export const LAUNCHER = join(ROOT, 'runtime', 'acinstall.sh');

const nodeDir = (arch: Arch) => join(ROOT, 'runtime', '.nodes', NPM_CPU[arch]);

/** The pinned Node binary for `arch`, once scripts/fetch-runtime.sh has fetched it whole. */
export function siteNode(arch: Arch): string {
  const file = join(nodeDir(arch), 'node_modules', `node-linux-${NPM_CPU[arch]}`, 'bin', 'node');
  if (!existsSync(file) || !existsSync(join(nodeDir(arch), '.fetched'))) throw new AcpackError('NO_RUNTIME', `the site runtime for ${arch} is not here (${file}): run scripts/fetch-runtime.sh`);
  return file;
}

/** The integrity of the Node package `siteNode(arch)` came from (what fetch-runtime.sh recorded). */
export function siteNodeIntegrity(arch: Arch): string {
  siteNode(arch);
  return readFileSync(join(nodeDir(arch), '.fetched'), 'utf8').trim();
}

/** acinstall's single executable for `arch`, as scripts/build-site.ts writes it. */
export function siteExecutable(arch: Arch, dir = SITE_DIR): string {
  return join(dir, `acinstall-linux-${arch}`);
}

/** The registry's mmap addon built for `arch`, which that executable carries as a SEA asset. */
export function siteAddon(arch: Arch, dir = SITE_DIR): string {
  return join(dir, `map_file-linux-${arch}.node`);
}
