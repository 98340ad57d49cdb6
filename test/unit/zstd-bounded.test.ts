import { describe, expect, it } from 'vitest';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { zstdDecoder, zstdDecompress } from '../../oci/zstd.js';
import { zstdCli } from '../helpers/zstd-cli.js';

/** `mib` MiB of zeros at the bundle's level: a few KB. */
const compressedZeros = (mib: number) => zstdCli(['-3', '-c'], { shell: `head -c ${mib << 20} /dev/zero` });

describe(`zstd decompression (${zstdDecoder}) is driven by the reader`, () => {
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

  it('a reader that stops stops the decompression: the input is not taken past what its output needs', async () => {
    const bomb = await compressedZeros(512);
    const d = zstdDecompress();
    // Nobody reads: what was written stays unacknowledged once the readable side is full.
    const accepted = await new Promise<boolean>((resolve) => {
      d.write(bomb, () => resolve(true));
      setTimeout(() => resolve(false), 500);
    });
    expect(accepted).toBe(false);
    expect(d.readableLength).toBeLessThanOrEqual(2 << 20);
    d.destroy();
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

  it('a real 32 MiB window (zstd --long=25) is refused too, and a 16 MiB one is read', async () => {
    const input = { shell: `head -c ${40 << 20} /dev/zero` };
    for (const [log, ok] of [[25, false], [24, true]] as const) {
      const d = zstdDecompress();
      Readable.from([await zstdCli(['-1', `--long=${log}`, '-c'], input)]).pipe(d);
      const read = (async () => {
        let n = 0;
        for await (const c of d) n += (c as Buffer).length;
        return n;
      })();
      if (ok) await expect(read).resolves.toBe(40 << 20);
      else await expect(read).rejects.toThrow(/Frame requires too much memory/);
    }
  });
});
