import { CompressStream, DecompressStream } from 'zstd-napi';
import type { Transform } from 'node:stream';

/**
 * The bundle's fixed zstd parameters. They are part of the format's determinism promise:
 * changing them changes every bundle's bytes. zstd's multi-threaded mode gives the same output
 * whatever the number of workers (≥ 1), so the worker count may follow the machine.
 */
const BUNDLE_PARAMS = { compressionLevel: 3, checksumFlag: true, nbWorkers: 2 } as const;

export function zstdCompress(): Transform {
  return new CompressStream(BUNDLE_PARAMS);
}

export function zstdDecompress(): Transform {
  return new DecompressStream();
}
