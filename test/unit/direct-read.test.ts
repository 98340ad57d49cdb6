import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { readDirect } from '../../oci/direct-read.js';
import { tempDir } from '../helpers/env.js';

let t: Awaited<ReturnType<typeof tempDir>>;
let path: string;
const data = Buffer.alloc(9 * (1 << 20) + 777);
for (let i = 0; i + 4 <= data.length; i += 4) data.writeUInt32LE((i * 2246822519) >>> 0, i);

beforeAll(async () => {
  t = await tempDir();
  path = join(t.dir, 'blob');
  await writeFile(path, data);
});
afterAll(() => t.cleanup());

async function read(start: number, length: number): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const view of readDirect(path, start, length)) out.push(Buffer.from(view)); // views are reused
  return Buffer.concat(out);
}

describe('readDirect', () => {
  it.each([
    ['the whole file', 0, data.length],
    ['a range from an offset off any block, across stages', 5000, 6 * (1 << 20) + 3],
    ['a few bytes inside one block', 4095, 2],
    ['the tail', data.length - 100, 100],
  ])('reads %s', async (_what, start, length) => {
    expect((await read(start, length)).equals(data.subarray(start, start + length))).toBe(true);
  });

  it('stops at the end of the file, however much was asked for', async () => {
    expect((await read(data.length - 10, 1000)).equals(data.subarray(data.length - 10))).toBe(true);
    expect(await read(data.length + 4096, 10)).toHaveLength(0);
  });
});
