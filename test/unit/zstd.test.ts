import { describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { sha256 } from '../../oci/digest.js';
import { ZstdReader, zstdDecoder } from '../../oci/zstd.js';
import { DENSE_LEVEL, FRAME_BYTES, FrameCompressor, isPacked, PACKED_LEVEL } from '../../oci/zstd-frames.js';
import { noise } from '../../demo/samples.js';
import { ROOT } from '../helpers/env.js';
import { inflate, memoryChunks } from '../helpers/zstd-read.js';
import { zstdCli } from '../helpers/zstd-cli.js';

// Half text, half noise: both code paths of the compressor.
const text = Buffer.from('{"layer":"sha256:0123","size":1234}\n'.repeat(50_000));
const input = Buffer.concat([text, noise('zstd-golden', 2 << 20)]);

/** Node ≥ 22.15 (or 23.8) has zstd in zlib. */
const [major, minor] = process.versions.node.split('.').map(Number);
const nodeHasZstd = major >= 24 || (major === 23 && minor >= 8) || (major === 22 && minor >= 15);

/** The packer's frames of `parts` (each with its level), cut at `chunk`-byte writes, and the frames' sizes. */
async function frames(parts: [Buffer, number][], chunk = 1 << 30): Promise<{ out: Buffer; sizes: number[] }> {
  const got: Buffer[] = [];
  const c = new FrameCompressor(async (f) => void got.push(Buffer.from(f))); // frames' memory is reused
  try {
    for (const [data, level] of parts) for (let i = 0; i < data.length; i += chunk) await c.write(data.subarray(i, i + chunk), level);
    await c.end();
  } finally {
    await c.close();
  }
  return { out: Buffer.concat(got), sizes: got.map((f) => f.length) };
}

// The packer's compressor (zstd-napi in worker threads): run wherever the addon loads, which a plain Node 24 does too.
describe('bundle zstd frames', () => {
  const parts: [Buffer, number][] = [
    [text, DENSE_LEVEL],
    [input, PACKED_LEVEL],
    [text.subarray(0, 1000), DENSE_LEVEL],
  ];
  const plain = Buffer.concat(parts.map(([b]) => b));

  it('give the same bytes however the input is written, which our decoder and the zstd CLI read back', async () => {
    const whole = await frames(parts);
    expect(sha256((await frames(parts, 77_777)).out)).toBe(sha256(whole.out));
    expect((await inflate([whole.out])).equals(plain)).toBe(true);
    expect((await zstdCli(['-dc'], whole.out)).equals(plain)).toBe(true);
  });

  it('decompress into memory of the caller\'s, a little at a time, and refuse no room at all rather than spin', async () => {
    const whole = await frames(parts);
    const reader = new ZstdReader(memoryChunks([whole.out]));
    try {
      await expect(reader.readInto(Buffer.alloc(0))).rejects.toThrow(RangeError);
      const out: Buffer[] = [];
      const room = Buffer.alloc(4097);
      for (let n = await reader.readInto(room); n > 0; n = await reader.readInto(room)) out.push(Buffer.from(room.subarray(0, n)));
      expect(Buffer.concat(out).equals(plain)).toBe(true);
    } finally {
      reader.close();
    }
  });

  it('end a frame where the level changes and at FRAME_BYTES, each a frame of its own', async () => {
    const big = noise('frames', FRAME_BYTES + 5000);
    const { out, sizes } = await frames([[text, DENSE_LEVEL], [big, PACKED_LEVEL], [text, DENSE_LEVEL]]);
    expect(sizes).toHaveLength(4); // text | FRAME_BYTES of noise | the rest of it | text
    let at = 0;
    const contents: number[] = [];
    for (const size of sizes) {
      contents.push(await zstdCli(['-dc'], out.subarray(at, at + size)).then((b) => b.length));
      at += size;
    }
    expect(contents).toEqual([text.length, FRAME_BYTES, 5000, text.length]);
  });

  it('spend only level 1 on bytes that are compressed already, and level 3 where it pays', async () => {
    const dense = await frames([[text, DENSE_LEVEL]]);
    const asPacked = await frames([[text, PACKED_LEVEL]]);
    expect(dense.out.length).toBeLessThan(asPacked.out.length);
    expect(isPacked(Buffer.from([0x1f, 0x8b, 8, 0]))).toBe(true);
    expect(isPacked(await zstdCli(['-c'], text))).toBe(true);
    expect(isPacked(Buffer.from('{"schemaVersion":2}'))).toBe(false);
  });

  it('give the bytes this format version was built with (a zstd-napi upgrade that changes them breaks bundle determinism)', async () => {
    expect(sha256((await frames(parts)).out)).toBe(GOLDEN);
  });
});

describe(`zstd decompression (${zstdDecoder})`, () => {
  it(`uses ${nodeHasZstd ? "zlib's zstd on this Node" : 'zstd-napi: this Node has no zstd in zlib'}`, () => {
    expect(zstdDecoder).toBe(nodeHasZstd ? 'node:zlib' : 'zstd-napi');
  });

  it(nodeHasZstd ? 'never loads zstd-napi for it' : 'loads zstd-napi for it only when it decompresses', async () => {
    // A fresh process: this one may have loaded zstd-napi to compress.
    const script = [
      "import { createRequire } from 'node:module';",
      "const { inflate } = await import('./test/helpers/zstd-read.ts');",
      'const loaded = () => Object.keys(createRequire(import.meta.url).cache).some((p) => p.includes("zstd-napi"));',
      'const before = loaded();',
      `const out = (await inflate([Buffer.from('${(await zstdCli(['-c'], Buffer.from('hello'))).toString('base64')}', 'base64')])).toString();`,
      'console.log(JSON.stringify({ before, out, after: loaded() }));',
    ].join('\n');
    const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: ROOT });
    expect(JSON.parse(stdout)).toEqual({ before: false, out: 'hello', after: !nodeHasZstd });
  });

  it('reads what the zstd CLI writes: frames one after another, with checksums, fed in small pieces', async () => {
    const frames = await Promise.all([text, input, Buffer.alloc(0)].map((b) => zstdCli(['-3', '--check', '-c'], b)));
    const all = Buffer.concat(frames);
    const pieces: Buffer[] = [];
    for (let i = 0; i < all.length; i += 4097) pieces.push(all.subarray(i, i + 4097));
    expect((await inflate(pieces)).equals(Buffer.concat([text, input]))).toBe(true);
  });

  it('refuses a stream cut short, a flipped byte and bytes that are not zstd', async () => {
    const whole = await zstdCli(['-3', '--check', '-c'], input);
    await expect(inflate([whole.subarray(0, whole.length >> 1)])).rejects.toThrow(/middle of a frame|unexpected end of file/);
    const flipped = Buffer.from(whole);
    flipped[flipped.length - 2] ^= 0xff; // in the checksum
    await expect(inflate([flipped])).rejects.toThrow(/checksum/);
    await expect(inflate([Buffer.from('this is not zstd at all')])).rejects.toThrow(/Unknown frame descriptor/);
  });
});

const GOLDEN = 'sha256:6c3eec2a8d8f728618398d8fe0e83b7726a4184f954586f21864273969059b3f';
