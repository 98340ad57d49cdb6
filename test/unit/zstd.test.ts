import { describe, expect, it } from 'vitest';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Writable } from 'node:stream';
import { sha256 } from '../../oci/digest.js';
import { zstdCompress, zstdDecompress } from '../../oci/zstd.js';
import { noise } from '../../demo/samples.js';

async function run(t: NodeJS.ReadWriteStream, input: Buffer[], ): Promise<Buffer> {
  const out: Buffer[] = [];
  await pipeline(Readable.from(input), t, new Writable({ write: (c, _e, cb) => (out.push(c), cb()) }));
  return Buffer.concat(out);
}

describe('bundle zstd parameters', () => {
  // Half text, half noise: both code paths of the compressor.
  const text = Buffer.from('{"layer":"sha256:0123","size":1234}\n'.repeat(50_000));
  const input = Buffer.concat([text, noise('zstd-golden', 2 << 20)]);

  it('give the same bytes however the input is chunked', async () => {
    const whole = await run(zstdCompress(), [input]);
    const pieces: Buffer[] = [];
    for (let i = 0; i < input.length; i += 77_777) pieces.push(input.subarray(i, i + 77_777));
    expect(sha256(await run(zstdCompress(), pieces))).toBe(sha256(whole));
    expect((await run(zstdDecompress(), [whole])).equals(input)).toBe(true);
  });

  it('give the bytes this format version was built with (a zstd-napi upgrade that changes them breaks bundle determinism)', async () => {
    const out = await run(zstdCompress(), [input]);
    expect(sha256(out)).toBe(GOLDEN);
  });
});

const GOLDEN = 'sha256:400b81c617f98968797d81bbeb925eb9c8327b5062dd05786e482f2e69bfa880';
