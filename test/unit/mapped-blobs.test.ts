import { afterEach, beforeEach, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ContentStore } from '../../oci/store.js';
import { mapFileOnDisk, mappedBlobs } from '../../registry/mapped-blobs.js';
import { sha256 } from '../../oci/digest.js';
import { tempDir } from '../helpers/env.js';

let t: Awaited<ReturnType<typeof tempDir>>;
let store: ContentStore;
beforeEach(async () => {
  t = await tempDir();
  store = await ContentStore.open(t.dir);
});
afterEach(() => t.cleanup());

it('serves each blob from one mapping with its exact bytes, and keeps no more mappings than its budget', async () => {
  const blobs = [randomBytes(300_000), randomBytes(1), randomBytes(1 << 20)];
  const digests = await Promise.all(blobs.map((b) => store.put(b)));
  const maps = mappedBlobs(store, 1_300_000)!;
  // One after the other: which mapping is the oldest (and dropped first) must not depend on timing.
  const first: Buffer[] = [];
  for (const [i, d] of digests.entries()) first.push(await maps.get(d, blobs[i].length));
  first.forEach((m, i) => expect(m.equals(blobs[i])).toBe(true));
  // Still mapped: the same memory, not a new read.
  expect(await maps.get(digests[2], blobs[2].length)).toBe(first[2]);
  // The first blob was dropped to stay within 1.3 MB; asking again maps it anew, with the same bytes.
  const again = await maps.get(digests[0], blobs[0].length);
  expect(again).not.toBe(first[0]);
  expect(again.equals(blobs[0])).toBe(true);
  // A mapping outlives its file's removal (a response being written keeps its bytes).
  await rm(store.path(digests[2]));
  expect(first[2].equals(blobs[2])).toBe(true);
});

it('maps a blob once when many requests ask for it at the same time', async () => {
  const blob = randomBytes(4096);
  const digest = await store.put(blob);
  const maps = mappedBlobs(store)!;
  const all = await Promise.all(Array.from({ length: 20 }, () => maps.get(digest, blob.length)));
  expect(new Set(all).size).toBe(1);
});

it("writes the executable's addon into the store once, whole and executable, and rewrites a damaged one", async () => {
  const addon = randomBytes(5000);
  const file = mapFileOnDisk(t.dir, addon);
  expect(file).toBe(join(t.dir, '.runtime', `map_file-${sha256(addon).slice(7)}.node`));
  expect((await readFile(file)).equals(addon)).toBe(true);
  expect((await stat(file)).mode & 0o777).toBe(0o755);
  const written = (await stat(file)).ino;
  expect(mapFileOnDisk(t.dir, addon)).toBe(file);
  expect((await stat(file)).ino, 'a whole one is left as it is').toBe(written);
  await writeFile(file, addon.subarray(0, 100));
  expect((await readFile(mapFileOnDisk(t.dir, addon))).equals(addon)).toBe(true);
  // Another arch's or release's addon sits beside it; no temporary file is left.
  const other = mapFileOnDisk(t.dir, randomBytes(10));
  expect((await readdir(join(t.dir, '.runtime'))).sort()).toEqual([file, other].map((f) => f.slice(f.lastIndexOf('/') + 1)).sort());
});
