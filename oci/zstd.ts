import { availableParallelism } from 'node:os';
import { CompressStream, DecompressStream } from 'zstd-napi';
import type { Transform } from 'node:stream';

/**
 * The bundle's fixed zstd parameters, part of the format's determinism promise: changing them (or
 * the libzstd inside zstd-napi, which is why its version is pinned) changes every bundle's bytes.
 * zstd's multi-threaded mode gives the same output for any number of workers ≥ 1 (measured in
 * docs/zstd.md), so the worker count follows the machine; 0 would switch to single-threaded output.
 */
const BUNDLE_PARAMS = { compressionLevel: 3, checksumFlag: true } as const;

export function zstdCompress(): Transform {
  return new CompressStream({ ...BUNDLE_PARAMS, nbWorkers: Math.min(8, Math.max(1, availableParallelism())) });
}

export function zstdDecompress(): Transform {
  return new DecompressStream();
}
