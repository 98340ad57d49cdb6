import type { Transform } from 'node:stream';
import { CompressStream } from 'zstd-napi';

/** A plain zstd stream compressor, for tests that write bundles by hand (hostile or edited ones). */
export function zstdCompress(): Transform {
  return new CompressStream({ compressionLevel: 3, checksumFlag: true });
}
