import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes, createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { cp, mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { bundle } from '../../packer/index.js';
import { formatSummary } from '../../packer/bundle.js';
import { parsePlatformList } from '../../arch/platform.js';
import { readHead } from '../../oci/bundle-reader.js';
import { verifyBundle } from '../../oci/bundle-verify.js';
import { ContentStore } from '../../oci/store.js';
import type { BundleDescriptor } from '../../oci/bundle-format.js';
import { collectGarbage, importBundle, IndexDb } from '../../registry/index.js';
import { parseVolumeSize } from '../../packer/volumes.js';
import { entriesOf, writeEntries } from '../helpers/bundle-entries.js';
import { ROOT, runAcinstall, runCli, silent, tempDir } from '../helpers/env.js';
import { writeManifest } from '../helpers/fixtures.js';

/**
 * A bundle over volumes (acpack bundle --volume-size): a 3 MB binary that no volume of 1.2 MB holds
 * whole, a small one and a chart. Each volume verifies alone and imports alone; a set imported in
 * part holds its blobs through gc until the last volume comes, in any order.
 */

const VOLUME = 1_200_000;
let work: Awaited<ReturnType<typeof tempDir>>;
let manifest: string;
let volumes: string[];
let d: BundleDescriptor;
let big: Buffer;

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function makeBundle(out: string, version = 'v1'): Promise<string[]> {
  const m = version === 'v1' ? manifest : await writeManifest(work.dir, { binaries: [{ name: 'tool', version, url: 'files/tool-{arch}', install: '/usr/bin/tool', sha256: { amd64: sha(big) } }] }, `m-${version}.yaml`);
  const summary = await bundle({ manifestFile: m, platforms: parsePlatformList('amd64'), cacheDir: join(work.dir, 'cache'), reporter: silent, sourceDateEpoch: 0, out, volumeSize: VOLUME });
  return summary.volumes!;
}

beforeAll(async () => {
  work = await tempDir('acpack-volumes-');
  big = randomBytes(3_000_000);
  const small = randomBytes(200_000);
  await mkdir(join(work.dir, 'files'), { recursive: true });
  await writeFile(join(work.dir, 'files/tool-amd64'), big);
  await writeFile(join(work.dir, 'files/small-amd64'), small);
  await cp(join(ROOT, 'manifests/demo/charts/hello'), join(work.dir, 'hello'), { recursive: true });
  manifest = await writeManifest(work.dir, {
    binaries: [
      { name: 'tool', version: 'v1', url: 'files/tool-{arch}', install: '/usr/bin/tool', sha256: { amd64: sha(big) } },
      { name: 'small', version: 'v1', url: 'files/small-{arch}', install: '/usr/bin/small', sha256: { amd64: sha(small) } },
    ],
    charts: [{ path: 'hello' }],
  });
  volumes = await makeBundle(join(work.dir, 'set.tar.zst'));
  d = (await readHead(volumes[0])).descriptor;
}, 120_000);

afterAll(() => work?.cleanup());

const toolDigest = () => `sha256:${sha(big)}`;
const storeBlobs = async (dir: string) => (existsSync(join(dir, 'blobs/sha256')) ? (await readdir(join(dir, 'blobs/sha256'))).map((h) => `sha256:${h}`).sort() : []);
/** What bundle.json puts in volume `v`: whole blobs and parts. */
const entriesIn = (v: number) =>
  (d.blobs.list ?? [])
    .flatMap((b) => (b.parts ? b.parts.filter((p) => p.volume === v).map((p) => p.digest) : b.volume === v ? [b.digest] : []))
    .sort();

describe('acpack bundle --volume-size', () => {
  it('parses decimal sizes and the media presets', () => {
    expect(parseVolumeSize('4.7G')).toBe(4_700_000_000);
    expect(parseVolumeSize('650M')).toBe(650_000_000);
    expect(parseVolumeSize('fat32')).toBe(2 ** 32 - 1);
    expect(parseVolumeSize('dvd')).toBeLessThan(4_707_319_808);
    expect(() => parseVolumeSize('4.7 gigs')).toThrow(/is not a size/);
    expect(() => parseVolumeSize('10K')).toThrow(/a volume must hold at least/);
  });

  it('writes NAME.001.tar.zst, … each within the size, the 3 MB blob in parts, every file with the same bundle.json', async () => {
    expect(volumes.map((v) => v.slice(work.dir.length + 1))).toEqual(Array.from({ length: volumes.length }, (_, i) => `set.00${i + 1}.tar.zst`));
    expect(volumes.length).toBeGreaterThanOrEqual(3);
    expect(existsSync(join(work.dir, 'set.tar.zst'))).toBe(false);
    for (const v of volumes) expect((await stat(v)).size).toBeLessThanOrEqual(VOLUME);
    const tool = d.blobs.list!.find((b) => b.digest === toolDigest())!;
    expect(tool.volume).toBeUndefined();
    expect(tool.parts!.length).toBeGreaterThanOrEqual(3);
    expect(tool.parts!.reduce((n, p) => n + p.size, 0)).toBe(big.length);
    // The parts, read back from the volumes' tar entries (not by the code under test), make the blob.
    const all = (await Promise.all(volumes.map(entriesOf))).flat();
    const joined = Buffer.concat(tool.parts!.map((p) => all.find((e) => e.name === `blobs/sha256/${p.digest.slice(7)}`)!.data));
    expect(joined.equals(big)).toBe(true);
    for (const [i, v] of volumes.entries()) {
      const head = await readHead(v);
      expect(head.descriptorBytes.equals((await readHead(volumes[0])).descriptorBytes)).toBe(true);
      expect(head.volume).toBe(i + 1);
    }
    // Deterministic: the same manifest and sources give the same files.
    const again = await makeBundle(join(work.dir, 'again.tar.zst'));
    for (const [i, v] of volumes.entries()) expect(sha(await readFile(again[i]))).toBe(sha(await readFile(v)));
  });

  it('inspect of any volume shows the whole set and which volumes hold what', async () => {
    const r = await runCli(['inspect', volumes[1]]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`in ${volumes.length} volumes; this file is volume 2`);
    const tool = d.blobs.list!.find((b) => b.digest === toolDigest())!;
    const binary = d.binaries.find((b) => b.name === 'tool')!;
    const manifests = d.blobs.list!.filter((b) => b.digest === binary.manifest || b.digest === binary.index).map((b) => b.volume!);
    const holding = [...new Set([...tool.parts!.map((p) => p.volume), ...manifests])].sort((a, b) => a - b).join('+');
    expect(r.stdout).toMatch(new RegExp(`^tool +v1 +amd64 +3\\.00 MB +/usr/bin/tool +${holding.replace(/\+/g, '\\+')}$`, 'm'));
  });

  it('each volume verifies alone; a flipped byte in volume 2 is found by verifying volume 2 alone', async () => {
    for (const [i, v] of volumes.entries()) await expect(verifyBundle(v)).resolves.toMatchObject({ volume: i + 1 });
    const entries = await entriesOf(volumes[1]);
    const at = entries.findIndex((e) => e.name.startsWith('blobs/'));
    const flipped = Buffer.from(entries[at].data);
    flipped[1000] ^= 1;
    entries[at] = { name: entries[at].name, data: flipped };
    const bad = await writeEntries(join(work.dir, 'bad.002.tar.zst'), entries);
    await expect(verifyBundle(bad)).rejects.toMatchObject({ code: 'DIGEST_MISMATCH', message: expect.stringContaining(`blob ${entries[at].name.replace('blobs/sha256/', 'sha256:')} is corrupt`) });
    const store = join(work.dir, 'store-flipped');
    await expect(importBundle(bad, store)).rejects.toMatchObject({ code: 'DIGEST_MISMATCH' });
    expect(await storeBlobs(store)).toEqual([]);
  });
});

describe('acinstall import of a volume set', () => {
  it('each volume imported alone into an empty store holds exactly its entries, pending, naming the volumes it waits for', async () => {
    for (const [i, v] of volumes.entries()) {
      const store = join(work.dir, `store-alone-${i + 1}`);
      const r = await importBundle(v, store);
      const missing = volumes.map((_, j) => j + 1).filter((j) => j !== i + 1);
      expect(r).toMatchObject({ volume: i + 1, refs: 0, pending: { volumes: volumes.length, missing } });
      expect(await storeBlobs(store)).toEqual(entriesIn(i + 1));
      const db = new IndexDb(store);
      try {
        expect(db.pendingBundles()).toMatchObject([{ name: 'test', version: 'v1', volumes: volumes.length, imported: [i + 1] }]);
      } finally {
        db.close();
      }
    }
  });

  it('in reverse order with gc (no grace) between them: the leases keep every blob, the last volume makes the bundle whole and drops the parts', async () => {
    const store = join(work.dir, 'store-reverse');
    const gc = async () => {
      const db = new IndexDb(store);
      try {
        return await collectGarbage(await ContentStore.open(store), db, { minAgeMs: 0 });
      } finally {
        db.close();
      }
    };
    for (const v of [...volumes].reverse().slice(0, -1)) {
      await importBundle(v, store);
      const before = await storeBlobs(store);
      expect((await gc()).blobs).toBe(0);
      expect(await storeBlobs(store)).toEqual(before);
    }
    const last = await importBundle(volumes[0], store);
    expect(last.pending).toBeUndefined();
    expect(last.refs).toBe(3);
    // Every blob whole, the parts gone: the store holds exactly the bundle's blobs.
    expect(await storeBlobs(store)).toEqual(d.blobs.list!.map((b) => b.digest).sort());
    expect(sha(await readFile(join(store, 'blobs/sha256', toolDigest().slice(7))))).toBe(sha(big));
    const db = new IndexDb(store);
    try {
      expect(db.pendingBundles()).toEqual([]);
      expect(db.leasedBlobs().size).toBe(0);
    } finally {
      db.close();
    }
    expect((await gc()).blobs).toBe(0);
  });

  it('the CLI takes the volumes in any order on one line, names a missing one, and refuses a foreign one before importing anything', async () => {
    const store = join(work.dir, 'store-cli');
    const some = await runAcinstall(['import', volumes[2], volumes[0], '--store', store]);
    expect(some.code, some.stderr).toBe(0);
    const missing = volumes.map((_, j) => j + 1).filter((j) => j !== 1 && j !== 3);
    expect(some.stdout).toContain(`test v1 is pending: 2 of ${volumes.length} volumes in, waiting for volume${missing.length > 1 ? 's' : ''} ${missing.join(', ')}`);

    const gc = await runAcinstall(['gc', '--store', store, '--grace', '0']);
    expect(gc.code, gc.stderr).toBe(0);
    expect(gc.stdout).toMatch(new RegExp(`^removed 0 blobs .*\\n[\\s\\S]*kept for test v1, a volume set imported in part \\(volumes 1, 3 of ${volumes.length}, since .*\\): import the rest to complete it, or give it up with --abandon test:v1`, 'm'));
    // status names it too, though nothing was installed from this store.
    const status = await runAcinstall(['status', '--store', store]);
    expect(status.code, status.stderr).toBe(0);
    expect(status.stdout).toContain(`pending: test v1, a volume set imported in part (volumes 1, 3 of ${volumes.length}, since `);

    const other = await makeBundle(join(work.dir, 'other.tar.zst'), 'v2');
    const mixed = await runAcinstall(['import', volumes[1], other[0], '--store', store]);
    expect(mixed.code).toBe(1);
    expect(mixed.stderr).toMatch(/other\.001\.tar\.zst is test v1 \(volume 1 of \d+\), not a volume of the bundle .*set\.002\.tar\.zst is from \(test v1 \(volume 2 of \d+\)\): import each bundle on its own; nothing was imported/);

    // from with a volume while others are missing: named before anything is touched.
    const from = await runAcinstall(['from', volumes[1], '-m', '127.0.0.1', '-p', 'not-used', '--store', store]);
    expect(from.code).toBe(1);
    expect(from.stderr).toMatch(new RegExp(`set\\.002\\.tar\\.zst is volume 2 of ${volumes.length} of test v1, and the store \\(.*\\) lacks volume.* ${missing.filter((v) => v !== 2).join(', ')}: import them first`));
    expect(existsSync(join(store, 'journal.db'))).toBe(false);

    const rest = await runAcinstall(['import', ...volumes.filter((_, j) => j !== 0 && j !== 2), '--store', store]);
    expect(rest.code, rest.stderr).toBe(0);
    expect(rest.stdout).toMatch(/imported volume \d+ of test v1: 3 references/);
    expect(rest.stdout).not.toContain('pending');
  });

  it('a set written where an earlier, longer set of the same name lies removes the volumes past its last, and says so', async () => {
    const out = join(work.dir, 'again.tar.zst');
    const first = await makeBundle(out);
    const past = [first.length + 1, first.length + 12].map((n) => join(work.dir, `again.${String(n).padStart(3, '0')}.tar.zst`));
    for (const p of past) await writeFile(p, 'an earlier set');
    const others = ['again.notes.tar.zst', 'again.001.tar.zst.bak', 'againx.099.tar.zst'].map((n) => join(work.dir, n));
    for (const p of others) await writeFile(p, 'not a volume of this set');
    const summary = await bundle({ manifestFile: manifest, platforms: parsePlatformList('amd64'), cacheDir: join(work.dir, 'cache'), reporter: silent, sourceDateEpoch: 0, out, volumeSize: VOLUME });
    expect(summary.volumes).toEqual(first);
    expect(summary.removedVolumes).toEqual(past);
    expect(formatSummary(summary)).toContain(`removed:  ${past.join(', ')}, left by an earlier, longer set under this name`);
    for (const p of past) expect(existsSync(p)).toBe(false);
    for (const p of [...first, ...others]) expect(existsSync(p)).toBe(true);
  });

  it('gives up a set that will never be completed with gc --abandon: a dry run first, then what only it held goes', async () => {
    const store = join(work.dir, 'store-abandon');
    expect((await runAcinstall(['import', volumes[0], '--store', store])).code).toBe(0);
    const blobs = async () => (await (await ContentStore.open(store)).list()).length;
    const held = await blobs();
    expect(held).toBeGreaterThan(0);

    const wrong = await runAcinstall(['gc', '--store', store, '--grace', '0', '--abandon', 'test:v9']);
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toContain('no volume set imported in part is test:v9 (there are: test:v1); nothing was removed');

    const dry = await runAcinstall(['gc', '--store', store, '--grace', '0', '--abandon', 'test', '--dry-run']);
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toMatch(new RegExp(`^would abandon test v1 \\(volumes 1 of ${volumes.length} were in\\): its blobs are held no longer\\nwould remove ${held} blobs`));
    expect(await blobs()).toBe(held);
    expect((await runAcinstall(['status', '--store', store])).stdout).toContain('pending: test v1');

    const gone = await runAcinstall(['gc', '--store', store, '--grace', '0', '--abandon', 'test:v1']);
    expect(gone.code, gone.stderr).toBe(0);
    expect(gone.stdout).toMatch(new RegExp(`^abandoned test v1 .*\\nremoved ${held} blobs`));
    expect(await blobs()).toBe(0);
    const status = await runAcinstall(['status', '--store', store]);
    expect(status.code).toBe(1);
    expect(status.stderr).toContain('no install has run');
  });

  it('tells two sets of one name and version apart by the digest of their bundle.json', async () => {
    const store = join(work.dir, 'store-twins');
    const twin = await makeBundle(join(work.dir, 'twin.tar.zst'), 'v2'); // also "test v1", other contents
    for (const v of [volumes[0], twin[0]]) expect((await runAcinstall(['import', v, '--store', store])).code).toBe(0);
    const key = async (path: string) => `sha256:${sha((await readHead(path)).descriptorBytes).slice(0, 12)}`;
    const [ours, theirs] = [await key(volumes[0]), await key(twin[0])];

    const status = await runAcinstall(['status', '--store', store]);
    expect(status.stdout).toContain(`(or acinstall gc --abandon ${ours})`);
    expect(status.stdout).toContain(`(or acinstall gc --abandon ${theirs})`);
    const both = await runAcinstall(['gc', '--store', store, '--grace', '0', '--abandon', 'test:v1']);
    expect(both.code).toBe(1);
    expect(both.stderr).toContain(`--abandon test:v1 names 2 volume sets imported in part (test:v1 as ${ours}, test:v1 as ${theirs}): give one of those; nothing was removed`);

    const one = await runAcinstall(['gc', '--store', store, '--grace', '0', '--abandon', theirs]);
    expect(one.code, one.stderr).toBe(0);
    expect(one.stdout).toMatch(/^abandoned test v1 /);
    // The other set is kept, and named by NAME:VERSION again now that it is the only one.
    expect(one.stdout).toContain('or give it up with --abandon test:v1');
    const after = await runAcinstall(['status', '--store', store]);
    expect(after.stdout.match(/^pending: /gm)).toHaveLength(1);
    // What volume 1 of the kept set brought is all still there.
    const kept = await storeBlobs(store);
    for (const b of entriesIn(1)) expect(kept).toContain(b);
  });
});
