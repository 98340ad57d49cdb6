import { describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TarError, TarReader } from '../../oci/tar-reader.js';
import { TAR_END, tarHeader, tarPadding } from '../../oci/tar-header.js';

/**
 * The archive handed out in views of `step` bytes, each overwritten by the next (as ZstdReader's
 * are), or copied into the caller's memory, at most `step` bytes at a time; `direct` counts those.
 */
function reader(archive: Buffer, step: number, counts = { direct: 0 }): TarReader {
  const view = Buffer.alloc(step);
  let at = 0;
  return new TarReader({
    read: async () => {
      if (at >= archive.length) return undefined;
      const n = archive.copy(view, 0, at, at + step);
      at += n;
      return view.subarray(0, n);
    },
    readInto: async (dst) => {
      const n = archive.copy(dst, 0, at, Math.min(at + step, at + dst.length));
      at += n;
      if (n > 0) counts.direct++;
      return n;
    },
  });
}

/** Entries as `entries` gives them, their bodies read into memory of the caller's, `room` bytes at a time. */
async function entriesInto(r: TarReader, room: number): Promise<{ name: string; data: string }[]> {
  const out = [];
  for (let h = await r.next(); h; h = await r.next()) {
    const parts: Buffer[] = [];
    const dst = Buffer.alloc(room);
    for (let n = await r.readInto(dst); n > 0; n = await r.readInto(dst)) parts.push(Buffer.from(dst.subarray(0, n)));
    out.push({ name: h.name, data: Buffer.concat(parts).toString() });
  }
  return out;
}

async function entries(r: TarReader): Promise<{ name: string; type: string; data: string }[]> {
  const out = [];
  for (let h = await r.next(); h; h = await r.next()) {
    const parts: Buffer[] = [];
    for (let c = await r.read(); c; c = await r.read()) parts.push(Buffer.from(c));
    out.push({ name: h.name, type: h.type, data: Buffer.concat(parts).toString() });
  }
  return out;
}

const entry = (name: string, data: string) => [tarHeader(name, data.length, 0o644, 0), Buffer.from(data), tarPadding(data.length)];
const archive = Buffer.concat([...entry('oci-layout', 'a'.repeat(700)), ...entry('index.json', '{}'), TAR_END]);

describe('the tar reader', () => {
  it('reads entries whatever the size of the views it is given, headers across two of them included', async () => {
    const want = [
      { name: 'oci-layout', type: 'file', data: 'a'.repeat(700) },
      { name: 'index.json', type: 'file', data: '{}' },
    ];
    for (const step of [1 << 20, 512, 300, 7]) expect(await entries(reader(archive, step))).toEqual(want);
  });

  it('reads bodies into the caller\'s memory, from the source itself once no pulled bytes are left, and no further than the entry', async () => {
    const big = Buffer.concat([...entry('blobs/sha256/a', 'x'.repeat(5000)), ...entry('index.json', '{"y":1}'), TAR_END]);
    const want = [
      { name: 'blobs/sha256/a', data: 'x'.repeat(5000) },
      { name: 'index.json', data: '{"y":1}' },
    ];
    for (const [step, room] of [[600, 1000], [4096, 333], [7, 5000]]) {
      const counts = { direct: 0 };
      expect(await entriesInto(reader(big, step, counts), room)).toEqual(want);
      expect(counts.direct).toBeGreaterThan(0); // not every byte went through the reader's views
    }
    await expect(entriesInto(reader(big.subarray(0, 3000), 600), 1000)).rejects.toThrow(/ends \d+ bytes before the end of an entry/);
  });

  it('skips what the caller left unread of an entry', async () => {
    const r = reader(archive, 100);
    expect((await r.next())?.name).toBe('oci-layout');
    await r.read();
    expect(await r.next()).toMatchObject({ name: 'index.json', size: 2 });
  });

  it('reads what GNU tar writes: a long name split into the ustar prefix, a directory, a symlink', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'acpack-tar-'));
    try {
      const deep = `${'d'.repeat(90)}/${'e'.repeat(30)}`;
      mkdirSync(join(dir, deep), { recursive: true });
      writeFileSync(join(dir, deep, 'f'), 'hello');
      execFileSync('ln', ['-s', '/etc/passwd', join(dir, 'link')]);
      const tar = execFileSync('tar', ['--format=ustar', '-C', dir, '-cf', '-', `${deep}/f`, 'link']);
      expect(await entries(reader(tar, 4096))).toEqual([
        { name: `${deep}/f`, type: 'file', data: 'hello' },
        { name: 'link', type: 'symlink', data: '' },
      ]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses a damaged header, an archive cut inside an entry, and data after its end', async () => {
    const damaged = Buffer.from(archive);
    damaged[20] ^= 1; // in the first name, outside the checksum field
    await expect(entries(reader(damaged, 4096))).rejects.toThrow(/checksum does not match/);
    await expect(entries(reader(archive.subarray(0, 1000), 4096))).rejects.toThrow(TarError);
    await expect(entries(reader(archive.subarray(0, 1000), 4096))).rejects.toThrow(/ends .* before the end of an entry/);
    const trailing = Buffer.concat([archive, Buffer.from('more')]);
    await expect(entries(reader(trailing, 4096))).rejects.toThrow(/data after the end/);
    // Zeros after the end (GNU tar pads its records) are nothing.
    expect(await entries(reader(Buffer.concat([archive, Buffer.alloc(10240)]), 4096))).toHaveLength(2);
  });
});
