import { describe, expect, it } from 'vitest';
import { ZstdReader, zstdDecoder } from '../../oci/zstd.js';
import { zstdCli } from '../helpers/zstd-cli.js';
import { inflate, memoryChunks } from '../helpers/zstd-read.js';

/** `mib` MiB of zeros at the bundle's level: a few KB. */
const compressedZeros = (mib: number) => zstdCli(['-3', '-c'], { shell: `head -c ${mib << 20} /dev/zero` });

describe(`zstd decompression (${zstdDecoder}) is driven by the reader`, () => {
  it('a few KB that expand to 512 MiB come out a buffer at a time, the same buffer each time, and all of it', async () => {
    const bomb = await compressedZeros(512);
    expect(bomb.length).toBeLessThan(64 << 10);
    const reader = new ZstdReader(memoryChunks([bomb]));
    try {
      const first = (await reader.read())!;
      expect(first.length).toBeGreaterThan(0);
      expect(first.length).toBeLessThanOrEqual(1 << 20);
      let total = first.length;
      let largest = 0;
      const memory = new Set<ArrayBufferLike>([first.buffer]);
      const rss = process.memoryUsage().rss;
      for (let c = await reader.read(); c; c = await reader.read()) {
        total += c.length;
        largest = Math.max(largest, c.length);
        memory.add(c.buffer);
      }
      expect(largest).toBeLessThanOrEqual(1 << 20);
      expect(memory.size).toBe(1);
      expect(total).toBe(512 << 20);
      expect(process.memoryUsage().rss - rss).toBeLessThan(64 << 20);
    } finally {
      reader.close();
    }
  });

  it('a reader that stops stops the decompression: the input is taken only as its output needs it', async () => {
    const frames = await Promise.all([1, 2, 3, 4].map(() => compressedZeros(64)));
    const chunks = memoryChunks(frames);
    const reader = new ZstdReader(chunks);
    try {
      expect((await reader.read())!.length).toBeGreaterThan(0);
      expect(chunks.taken).toBe(1);
      // 64 MiB later the first frame is used up, and only then is the second taken.
      for (let n = 0; n < 64; n++) await reader.read();
      expect(chunks.taken).toBe(2);
    } finally {
      reader.close();
    }
  });

  it('a frame that asks for a 64 MiB window (above the 16 MiB bundles may use) is refused instead of allocated', async () => {
    // A frame header announcing windowLog 26: magic, descriptor byte 0 (no single segment), window byte.
    const frame = Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, (26 - 10) << 3, 0x01, 0x00, 0x00]);
    await expect(inflate([frame])).rejects.toThrow(/Frame requires too much memory/);
  });

  it('a real 32 MiB window (zstd --long=25) is refused too, and a 16 MiB one is read', async () => {
    const input = { shell: `head -c ${40 << 20} /dev/zero` };
    for (const [log, ok] of [[25, false], [24, true]] as const) {
      const read = inflate([await zstdCli(['-1', `--long=${log}`, '-c'], input)]).then((b) => b.length);
      if (ok) await expect(read).resolves.toBe(40 << 20);
      else await expect(read).rejects.toThrow(/Frame requires too much memory/);
    }
  });
});
