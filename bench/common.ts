import { writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { stringify } from 'yaml';
import { parsePlatformList } from '../arch/platform.js';
import { bundle, createReporter } from '../packer/index.js';
import { randomFillSync } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import type { Layer } from '../demo/samples.js';
import { MT } from '../oci/media-types.js';
import { sha256 } from '../oci/digest.js';

/** A layer of random bytes in stored (level 0) gzip: valid, and as incompressible as real layers. */
export function randomLayer(bytes: number): Layer {
  const raw = Buffer.allocUnsafe(bytes);
  randomFillSync(raw);
  const data = gzipSync(raw, { level: 0 });
  return { descriptor: { mediaType: MT.ociLayerGzip, digest: sha256(data), size: data.length }, data, diffId: sha256(raw) };
}

/** The repository root, for running the built CLIs. */
export const ROOT = resolve(import.meta.dirname, '..');

/** A numeric `--name N` option of a benchmark's command line. */
export function numberOption(name: string, fallback: number): number {
  const args = process.argv.slice(2);
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : fallback;
}

/** Bundles a benchmark's images and binaries (a manifest written in `work`) into `work`/b.tar.zst; returns its path. */
export async function benchBundle(work: string, name: string, spec: { images: string[]; binaries: unknown[] }, platforms: string, allowIncomplete = false): Promise<string> {
  const manifestFile = join(work, 'm.yaml');
  await writeFile(manifestFile, stringify({ apiVersion: 'acpack/v1', kind: 'Bundle', metadata: { name, version: 'v1' }, spec }));
  const out = join(work, 'b.tar.zst');
  await bundle({ manifestFile, platforms: parsePlatformList(platforms), cacheDir: join(work, 'cache'), reporter: createReporter('silent'), sourceDateEpoch: 0, out, allowIncomplete });
  return out;
}
