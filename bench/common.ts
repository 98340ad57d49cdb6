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
