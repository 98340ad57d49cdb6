import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { writeFile } from 'node:fs/promises';
import tar from 'tar-stream';
import { zstdCompress } from './zstd-stream.js';
import { TAR_END, tarHeader, tarPadding } from '../../oci/tar-header.js';

const run = promisify(execFile);

export interface Entry {
  name: string;
  data: Buffer;
}

/** The entries of a bundle, read with the zstd CLI and tar-stream (not with the code under test). */
export async function entriesOf(path: string): Promise<Entry[]> {
  const { stdout } = await run('zstd', ['-dc', path], { encoding: 'buffer', maxBuffer: 64 << 20 });
  const extract = tar.extract();
  extract.end(stdout);
  const out: Entry[] = [];
  for await (const e of extract) {
    const parts: Buffer[] = [];
    for await (const c of e) parts.push(c as Buffer);
    out.push({ name: e.header.name, data: Buffer.concat(parts) });
  }
  return out;
}

/** Writes `entries` as a bundle file at `path` (a tar, zstd-compressed), as a hostile or edited bundle. */
export async function writeEntries(path: string, entries: Entry[]): Promise<string> {
  const z = zstdCompress();
  const chunks: Buffer[] = [];
  z.on('data', (c: Buffer) => chunks.push(c));
  const done = new Promise((r) => z.on('end', r));
  z.end(Buffer.concat([...entries.flatMap((e) => [tarHeader(e.name, e.data.length, 0o644, 0), e.data, tarPadding(e.data.length)]), TAR_END]));
  await done;
  await writeFile(path, Buffer.concat(chunks));
  return path;
}
