import { describe, expect, it } from 'vitest';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { zstdCompress, zstdDecompress } from '../../oci/zstd.js';

/** `mib` MiB of zeros streamed through the bundle compressor: a few KB. */
async function compressedZeros(mib: number): Promise<Buffer> {
  const z = zstdCompress();
  const chunks: Buffer[] = [];
  z.on('data', (c: Buffer) => chunks.push(c));
  const done = new Promise((r) => z.on('end', r));
  const zeros = Buffer.alloc(1 << 20);
  for (let i = 0; i < mib; i++) if (!z.write(zeros)) await new Promise((r) => z.once('drain', r));
  z.end();
  await done;
  return Buffer.concat(chunks);
}

describe('zstd decompression is driven by the reader', () => {
  it('a few KB that expand to 512 MiB produce only what the reader asks for, and all of it when it reads on', async () => {
    const bomb = await compressedZeros(512);
    expect(bomb.length).toBeLessThan(64 << 10);
    const d = zstdDecompress();
    Readable.from([bomb]).pipe(d);
    const it = d[Symbol.asyncIterator]();
    // What a read returns is what was produced ahead of it: a buffer's worth, never the whole expansion.
    const first = await it.next();
    expect((first.value as Buffer).length).toBeGreaterThan(0);
    expect((first.value as Buffer).length).toBeLessThanOrEqual(2 << 20);
    // The reader pauses: nothing more is produced than the readable side's small buffer.
    await sleep(300);
    expect(d.readableLength).toBeLessThanOrEqual(2 << 20);
    let total = (first.value as Buffer).length;
    let largest = 0;
    for (let r = await it.next(); !r.done; r = await it.next()) {
      total += (r.value as Buffer).length;
      largest = Math.max(largest, (r.value as Buffer).length, d.readableLength);
    }
    expect(largest).toBeLessThanOrEqual(2 << 20);
    expect(total).toBe(512 << 20);
  });

  it('a frame that asks for a 64 MiB window (above the 16 MiB bundles may use) is refused instead of allocated', async () => {
    // A frame header announcing windowLog 26: magic, descriptor byte 0 (no single segment), window byte.
    const frame = Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, (26 - 10) << 3, 0x01, 0x00, 0x00]);
    const d = zstdDecompress();
    Readable.from([frame]).pipe(d);
    await expect(async () => {
      for await (const _ of d);
    }).rejects.toThrow(/Frame requires too much memory/);
  });
});
