import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import tar from 'tar-stream';

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
