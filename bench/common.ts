import { resolve } from 'node:path';
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
