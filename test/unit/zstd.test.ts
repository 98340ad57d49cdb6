import { describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { sha256 } from '../../oci/digest.js';
import { zstdCompress, zstdDecoder, zstdDecompress } from '../../oci/zstd.js';
import { noise } from '../../demo/samples.js';
import { ROOT } from '../helpers/env.js';
import { zstdCli } from '../helpers/zstd-cli.js';

async function run(t: NodeJS.ReadWriteStream, input: Buffer[]): Promise<Buffer> {
  const out: Buffer[] = [];
  await pipeline(Readable.from(input), t, new Writable({ write: (c, _e, cb) => (out.push(c), cb()) }));
  return Buffer.concat(out);
}

// Half text, half noise: both code paths of the compressor.
const text = Buffer.from('{"layer":"sha256:0123","size":1234}\n'.repeat(50_000));
const input = Buffer.concat([text, noise('zstd-golden', 2 << 20)]);

/** Node ≥ 22.15 (or 23.8) has zstd in zlib. */
const [major, minor] = process.versions.node.split('.').map(Number);
const nodeHasZstd = major >= 24 || (major === 23 && minor >= 8) || (major === 22 && minor >= 15);

// The packer's compressor (zstd-napi): run wherever the addon loads, which a plain Node 24 does too.
describe('bundle zstd parameters', () => {
  it('give the same bytes however the input is chunked, which the decoder reads back', async () => {
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

describe(`zstd decompression (${zstdDecoder})`, () => {
  it(`uses ${nodeHasZstd ? "zlib's zstd on this Node" : 'zstd-napi: this Node has no zstd in zlib'}`, () => {
    expect(zstdDecoder).toBe(nodeHasZstd ? 'node:zlib' : 'zstd-napi');
  });

  it(nodeHasZstd ? 'never loads zstd-napi for it' : 'loads zstd-napi for it only when it decompresses', async () => {
    // A fresh process: this one may have loaded zstd-napi to compress.
    const script = [
      "import { createRequire } from 'node:module';",
      "import { Readable } from 'node:stream';",
      "const { zstdDecompress } = await import('./oci/zstd.ts');",
      'const loaded = () => Object.keys(createRequire(import.meta.url).cache).some((p) => p.includes("zstd-napi"));',
      'const before = loaded();',
      `const d = Readable.from([Buffer.from('${(await zstdCli(['-c'], Buffer.from('hello'))).toString('base64')}', 'base64')]).pipe(zstdDecompress());`,
      'let out = ""; for await (const c of d) out += c;',
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
    expect((await run(zstdDecompress(), pieces)).equals(Buffer.concat([text, input]))).toBe(true);
  });

  it('refuses a stream cut short, a flipped byte and bytes that are not zstd', async () => {
    const whole = await zstdCli(['-3', '--check', '-c'], input);
    await expect(run(zstdDecompress(), [whole.subarray(0, whole.length >> 1)])).rejects.toThrow(/middle of a frame|unexpected end of file/);
    const flipped = Buffer.from(whole);
    flipped[flipped.length - 2] ^= 0xff; // in the checksum
    await expect(run(zstdDecompress(), [flipped])).rejects.toThrow(/checksum/);
    await expect(run(zstdDecompress(), [Buffer.from('this is not zstd at all')])).rejects.toThrow(/Unknown frame descriptor/);
  });
});

const GOLDEN = 'sha256:400b81c617f98968797d81bbeb925eb9c8327b5062dd05786e482f2e69bfa880';
