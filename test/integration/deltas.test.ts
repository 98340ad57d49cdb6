import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { cp, mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { bundle } from '../../packer/index.js';
import { parsePlatformList } from '../../arch/platform.js';
import { readHead } from '../../oci/bundle-reader.js';
import { verifyBundle } from '../../oci/bundle-verify.js';
import type { BundleDescriptor } from '../../oci/bundle-format.js';
import { importBundle, IndexDb } from '../../registry/index.js';
import { ROOT, runAcinstall, runCli, silent, tempDir, withRegistry } from '../helpers/env.js';
import { buildIndexImage, buildLayer, pushImage } from '../../demo/samples.js';
import { ContentStore } from '../../oci/store.js';
import { writeManifest } from '../helpers/fixtures.js';

/**
 * Deltas: a site's inventory (acinstall inventory) carried back, a bundle of the next release that
 * carries only what the site lacks (acpack bundle --base), and its import: onto its base, and onto
 * stores that lack a base blob (refused before anything is written).
 */

let work: Awaited<ReturnType<typeof tempDir>>;
let store: string;
let inventory: string;
let delta: string;
let d: BundleDescriptor;
const tool = randomBytes(1_000_000);
const extra = randomBytes(2_000_000);
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const tool1 = { name: 'tool', version: 'v1', url: 'files/tool-{arch}', install: '/usr/bin/tool', sha256: { amd64: sha(tool) } };
const extra1 = { name: 'extra', version: 'v1', url: 'files/extra-{arch}', install: '/usr/bin/extra', sha256: { amd64: sha(extra) } };

async function make(out: string, spec: Record<string, unknown>, name: string, base?: string) {
  const m = await writeManifest(work.dir, spec, name);
  return bundle({ manifestFile: m, platforms: parsePlatformList('amd64'), cacheDir: join(work.dir, 'cache'), reporter: silent, sourceDateEpoch: 0, out, ...(base ? { base } : {}) });
}

const blobsOf = async (dir: string) => (existsSync(join(dir, 'blobs/sha256')) ? (await readdir(join(dir, 'blobs/sha256'))).sort() : []);

beforeAll(async () => {
  work = await tempDir('acpack-deltas-');
  await mkdir(join(work.dir, 'files'), { recursive: true });
  await writeFile(join(work.dir, 'files/tool-amd64'), tool);
  await writeFile(join(work.dir, 'files/extra-amd64'), extra);
  await cp(join(ROOT, 'manifests/demo/charts/hello'), join(work.dir, 'hello'), { recursive: true });
  // Release 1 on the site; release 2 adds a binary.
  await make(join(work.dir, 'r1.tar.zst'), { binaries: [tool1], charts: [{ path: 'hello' }] }, 'r1.yaml');
  store = join(work.dir, 'site');
  await importBundle(join(work.dir, 'r1.tar.zst'), store);
  inventory = join(work.dir, 'site.json');
  const inv = await runAcinstall(['inventory', '--store', store, '-o', inventory]);
  expect(inv.code, inv.stderr).toBe(0);
  delta = join(work.dir, 'r2-delta.tar.zst');
  await make(delta, { binaries: [tool1, extra1], charts: [{ path: 'hello' }] }, 'r2.yaml', inventory);
  d = (await readHead(delta)).descriptor;
}, 120_000);

afterAll(() => work?.cleanup());

describe('acinstall inventory', () => {
  it('lists the bundle imported, its tags by kind, and every blob its manifests reach', async () => {
    const inv = JSON.parse(await readFile(inventory, 'utf8'));
    expect(inv).toMatchObject({ kind: 'acpack-inventory', version: 1, bundles: [{ name: 'test', version: 'v1' }] });
    expect(inv.binaries.map((b: { ref: string }) => b.ref)).toEqual(['acpack.local/binaries/tool:v1']);
    expect(inv.charts).toHaveLength(1);
    expect(inv.images).toEqual([]);
    expect(inv.blobs.map((x: string) => x.slice(7))).toEqual(await blobsOf(store));
    expect(inv.sizes[`sha256:${sha(tool)}`]).toBe(tool.length);
    expect(Object.keys(inv.sizes).sort()).toEqual(inv.blobs);
  });
});

describe('acpack bundle --base', () => {
  it('lists every blob, carries only what the site lacks, and is within 1% of those new blobs', async () => {
    const list = d.blobs.list!;
    const r1 = (await readHead(join(work.dir, 'r1.tar.zst'))).descriptor.blobs.list!.map((b) => b.digest);
    expect(list.filter((b) => b.volume === undefined).map((b) => b.digest).sort()).toEqual([...r1].sort());
    const carried = list.filter((b) => b.volume === 1);
    expect(carried.map((b) => b.digest)).toContain(`sha256:${sha(extra)}`);
    expect(carried.map((b) => b.digest)).not.toContain(`sha256:${sha(tool)}`);
    expect(d.blobs).toMatchObject({ count: carried.length, bytes: carried.reduce((n, b) => n + b.size, 0) });
    expect(d.base).toMatchObject({ name: 'site inventory (test)', version: 'v1', digest: `sha256:${sha(await readFile(inventory))}` });
    expect((await stat(delta)).size).toBeLessThanOrEqual(d.blobs.bytes * 1.01);
    await expect(verifyBundle(delta)).resolves.toMatchObject({ blobs: carried.length });
  });

  it('does not download a binary its base holds: its size comes from the inventory, its file stays out of the build cache', async () => {
    const m = await writeManifest(work.dir, { binaries: [tool1, extra1], charts: [{ path: 'hello' }] }, 'r2-fresh.yaml');
    const cache = join(work.dir, 'cache-fresh');
    const out = join(work.dir, 'r2-fresh.tar.zst');
    await bundle({ manifestFile: m, platforms: parsePlatformList('amd64'), cacheDir: cache, reporter: silent, sourceDateEpoch: 0, out, base: inventory });
    const cached = await blobsOf(cache);
    expect(cached).toContain(sha(extra));
    expect(cached).not.toContain(sha(tool));
    // The same bundle.json as with the file at hand (its size from the inventory, not guessed).
    expect((await readHead(out)).descriptor).toEqual(d);
  });

  it('against the earlier bundle itself, it leaves out the same blobs', async () => {
    const again = join(work.dir, 'r2-from-bundle.tar.zst');
    await make(again, { binaries: [tool1, extra1], charts: [{ path: 'hello' }] }, 'r2b.yaml', join(work.dir, 'r1.tar.zst'));
    expect((await readHead(again)).descriptor.blobs.list).toEqual(d.blobs.list);
  });

  it('the CLI says what it left out', async () => {
    const m = await writeManifest(work.dir, { binaries: [tool1, extra1], charts: [{ path: 'hello' }] }, 'r2c.yaml');
    const r = await runCli(['bundle', '-f', m, '--arch', 'amd64', '--cache', join(work.dir, 'cache'), '-o', join(work.dir, 'cli-delta.tar.zst'), '--base', inventory]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/blobs: +\d+ unique, .* carried; \d+ \(.*\) left out: site inventory \(test\) v1 holds them/);
    // A base that is not there is named before anything is fetched, not a crash.
    const missing = await runCli(['bundle', '-f', m, '--arch', 'amd64', '--cache', join(work.dir, 'cache-missing'), '-o', join(work.dir, 'none.tar.zst'), '--base', join(work.dir, 'nope.json')]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/^error: --base .*nope\.json cannot be read \(no such file\)/m);
    expect(missing.stderr).not.toContain('unexpected error');
    expect(existsSync(join(work.dir, 'cache-missing'))).toBe(false);
  });
});

describe('acpack bundle --base with images', () => {
  it('does not download the layers its base holds: only the new ones reach the build cache', async () => {
    const source = await withRegistry();
    try {
      const shared = await buildLayer([{ path: 'base', content: randomBytes(300_000) }]);
      const [old, fresh] = await Promise.all([randomBytes(200_000), randomBytes(250_000)].map((content) => buildLayer([{ path: 'app', content }])));
      const v1 = buildIndexImage('delta/app', 'v1', { amd64: [shared, old] });
      const v2 = buildIndexImage('delta/app', 'v2', { amd64: [shared, fresh] });
      for (const img of [v1, v2]) await pushImage(source.registry.host, img);
      const site = join(work.dir, 'site-images');
      await make(join(work.dir, 'img1.tar.zst'), { images: [`${source.registry.host}/delta/app:v1`] }, 'img1.yaml');
      await importBundle(join(work.dir, 'img1.tar.zst'), site);
      const inv = join(work.dir, 'site-images.json');
      expect((await runAcinstall(['inventory', '--store', site, '-o', inv])).code).toBe(0);

      const cache = join(work.dir, 'cache-images-delta');
      const m = await writeManifest(work.dir, { images: [`${source.registry.host}/delta/app:v2`] }, 'img2.yaml');
      const out = join(work.dir, 'img2-delta.tar.zst');
      await bundle({ manifestFile: m, platforms: parsePlatformList('amd64'), cacheDir: cache, reporter: silent, sourceDateEpoch: 0, out, base: inv });
      const cached = new Set(await (await ContentStore.open(cache)).list());
      expect(cached.has(fresh.descriptor.digest)).toBe(true);
      expect(cached.has(shared.descriptor.digest)).toBe(false);
      const carried = (await readHead(out)).descriptor.blobs.list!.filter((b) => b.volume === 1).map((b) => b.digest);
      expect(carried).toContain(fresh.descriptor.digest);
      expect(carried).not.toContain(shared.descriptor.digest);
      expect((await importBundle(out, site)).refs).toBe(1);
    } finally {
      await source.cleanup();
    }
  });
});

describe('acinstall import of a delta', () => {
  it('onto its base: the new binary is served, the old blobs stay, nothing is held after', async () => {
    const r = await importBundle(delta, store);
    expect(r.refs).toBe(3);
    const db = new IndexDb(store);
    try {
      expect(db.allTags().map((t) => `${t.repo}:${t.tag}`)).toEqual(expect.arrayContaining(['acpack.local/binaries/extra:v1', 'acpack.local/binaries/tool:v1']));
      expect(db.leasedBlobs().size).toBe(0);
    } finally {
      db.close();
    }
    expect(await blobsOf(store)).toContain(sha(tool));
  });

  it('onto an empty store, or one that lacks a base blob: refused before anything is written, naming the base', async () => {
    const empty = join(work.dir, 'empty');
    await expect(importBundle(delta, empty)).rejects.toMatchObject({ code: 'DELTA_BASE_MISSING', message: expect.stringContaining('is a delta over site inventory (test) v1, and this store lacks') });
    expect(await blobsOf(empty)).toEqual([]);

    const lacking = join(work.dir, 'lacking');
    await importBundle(join(work.dir, 'r1.tar.zst'), lacking);
    await rm(join(lacking, 'blobs/sha256', sha(tool)), { force: true });
    const before = await blobsOf(lacking);
    await expect(importBundle(delta, lacking)).rejects.toMatchObject({ code: 'DELTA_BASE_MISSING', message: expect.stringContaining(`lacks 1 of the`) });
    expect(await blobsOf(lacking)).toEqual(before);
    const db = new IndexDb(lacking);
    try {
      expect(db.leasedBlobs().size).toBe(0);
    } finally {
      db.close();
    }
  });

  it('made against an inventory that misstates a binary\'s size: refused before anything is written, naming the blob', async () => {
    const inv = JSON.parse(await readFile(inventory, 'utf8'));
    inv.sizes[`sha256:${sha(tool)}`] += 1;
    const wrong = join(work.dir, 'site-wrong-size.json');
    await writeFile(wrong, JSON.stringify(inv));
    const m = await writeManifest(work.dir, { binaries: [tool1, extra1], charts: [{ path: 'hello' }] }, 'r2-wrong.yaml');
    const out = join(work.dir, 'r2-wrong.tar.zst');
    await bundle({ manifestFile: m, platforms: parsePlatformList('amd64'), cacheDir: join(work.dir, 'cache-wrong'), reporter: silent, sourceDateEpoch: 0, out, base: wrong });
    const site = join(work.dir, 'site-for-wrong');
    await importBundle(join(work.dir, 'r1.tar.zst'), site);
    const before = await blobsOf(site);
    await expect(importBundle(out, site)).rejects.toMatchObject({ code: 'BAD_BUNDLE', message: expect.stringContaining(`sha256:${sha(tool)}, which it leaves to its base, as ${tool.length + 1} bytes; this store's copy has ${tool.length}`) });
    expect(await blobsOf(site)).toEqual(before);
  });
});
