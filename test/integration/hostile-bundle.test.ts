import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { cp, mkdir, open, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { bundle } from '../../packer/index.js';
import { parsePlatformList } from '../../arch/platform.js';
import { bundleEntries } from '../../oci/bundle-reader.js';
import { verifyBundle } from '../../oci/bundle-verify.js';
import { zstdCompress } from '../helpers/zstd-stream.js';
import { entriesOf, type Entry } from '../helpers/bundle-entries.js';
import { TAR_END, tarHeader, tarPadding } from '../../oci/tar-header.js';
import { importBundle } from '../../registry/index.js';
import { ACINSTALL, ROOT, silent, tempDir } from '../helpers/env.js';
import { writeManifest } from '../helpers/fixtures.js';

/**
 * Bundles written by an attacker: zstd bombs, entries whose sizes differ from what the bundle declares,
 * blobs nothing declares, duplicates, malformed or deeply nested metadata. Each is refused with
 * BAD_BUNDLE (a message, no stack trace) by acpack inspect/verify and acinstall import, quickly and in
 * bounded memory. Needs no registry: the base bundle holds a local binary and a local chart.
 */

const GiB = 1 << 30;
/** The CLIs run under this address-space limit: node with tsx needs ~2 GiB of it, a 4 GiB bomb cannot fit. */
const AS_LIMIT = 3 * GiB;

let work: Awaited<ReturnType<typeof tempDir>>;
/** The base bundle's entries, in order (as format 1, and as written: format 2), and what its bundle.json says. */
let base: Entry[];
let v2: Entry[];
let desc: { binaries: { digest: string; manifest: string; index: string; size: number }[]; charts: { digest: string; chart: string }[]; blobs: { count: number; bytes: number } };
let basePath: string;


beforeAll(async () => {
  work = await tempDir('acpack-hostile-');
  const tool = Buffer.from('a small tool for amd64\n');
  await mkdir(join(work.dir, 'files'), { recursive: true });
  await writeFile(join(work.dir, 'files/tool-amd64'), tool);
  await cp(join(ROOT, 'manifests/demo/charts/hello'), join(work.dir, 'hello'), { recursive: true });
  const m = await writeManifest(work.dir, {
    binaries: [{ name: 'tool', version: 'v1', url: 'files/tool-{arch}', install: '/usr/bin/tool', sha256: { amd64: hex(tool) } }],
    charts: [{ path: 'hello' }],
  });
  basePath = join(work.dir, 'base.tar.zst');
  await bundle({ manifestFile: m, platforms: parsePlatformList('amd64'), cacheDir: join(work.dir, 'cache'), reporter: silent, sourceDateEpoch: 0, out: basePath });
  v2 = await entriesOf(basePath);
  // The attacks below are on format 1, which lists no blobs and names no index.json digest: each
  // is caught by the checks at tar headers rather than by a list. Format 2's own are further down.
  base = asV1(v2);
  desc = JSON.parse(get(base, 'bundle.json').toString());
});

/** The same bundle as format 1 wrote it: no blob list, no index digest, no volume count. */
function asV1(entries: Entry[]): Entry[] {
  return withDescriptor(entries, (d) => {
    d.format = 1;
    delete d.index;
    delete d.volumes;
    delete d.blobs.list;
  });
}

afterAll(() => work?.cleanup());

function hex(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

const blobName = (digest: string) => `blobs/sha256/${digest.replace(/^sha256:/, '')}`;

function get(entries: Entry[], name: string): Buffer {
  const e = entries.find((x) => x.name === name);
  if (!e) throw new Error(`no entry ${name}`);
  return e.data;
}

/** The base entries with bundle.json edited (and its totals adjusted by `extra` blobs). */
function withDescriptor(entries: Entry[], edit: (d: any) => void): Entry[] {
  return entries.map((e) => {
    if (e.name !== 'bundle.json') return e;
    const d = JSON.parse(e.data.toString());
    edit(d);
    return { name: e.name, data: Buffer.from(JSON.stringify(d, null, 2)) };
  });
}

function replace(entries: Entry[], name: string, data: Buffer): Entry[] {
  return entries.map((e) => (e.name === name ? { name, data } : e));
}

/** What a tar is made of: bytes, or a run of zeros (GiB) compressed once and repeated as zstd frames. */
type Segment = Buffer | { zeroGiB: number };

let zeroFrame: Promise<Buffer> | undefined;
/** 1 GiB of zeros streamed through the bundle compressor: ~34 KB. Frames concatenate into one zstd stream. */
function zeroGiBFrame(): Promise<Buffer> {
  zeroFrame ??= (async () => {
    const z = zstdCompress();
    const chunks: Buffer[] = [];
    z.on('data', (c: Buffer) => chunks.push(c));
    const done = new Promise((r) => z.on('end', r));
    const zeros = Buffer.alloc(1 << 20);
    for (let i = 0; i < 1024; i++) if (!z.write(zeros)) await new Promise((r) => z.once('drain', r));
    z.end();
    await done;
    return Buffer.concat(chunks);
  })();
  return zeroFrame;
}

async function compress(data: Buffer): Promise<Buffer> {
  const z = zstdCompress();
  const chunks: Buffer[] = [];
  z.on('data', (c: Buffer) => chunks.push(c));
  const done = new Promise((r) => z.on('end', r));
  z.end(data);
  await done;
  return Buffer.concat(chunks);
}

function tarOf(entries: Entry[]): Buffer[] {
  return entries.flatMap((e) => [tarHeader(e.name, e.data.length, 0o644, 0), e.data, tarPadding(e.data.length)]);
}

async function write(name: string, segments: Segment[]): Promise<string> {
  const path = join(work.dir, name);
  const fh = await open(path, 'w');
  try {
    let pending: Buffer[] = [];
    const flush = async () => {
      if (pending.length) await fh.write(await compress(Buffer.concat(pending)));
      pending = [];
    };
    for (const s of segments) {
      if (Buffer.isBuffer(s)) {
        pending.push(s);
        continue;
      }
      await flush();
      const frame = await zeroGiBFrame();
      for (let i = 0; i < s.zeroGiB; i++) await fh.write(frame);
    }
    await flush();
  } finally {
    await fh.close();
  }
  return path;
}

const craft = (name: string, entries: Entry[]) => write(name, [...tarOf(entries), TAR_END]);

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs `acpack` from source or `acinstall`'s executable as a user would, under an address-space limit. */
function runLimited(cli: 'acpack' | 'acinstall', args: string[]): Promise<Run> {
  const command = cli === 'acpack' ? [process.execPath, '--import', 'tsx', join(ROOT, 'packer/main.ts')] : [ACINSTALL];
  const child = spawn('prlimit', [`--as=${AS_LIMIT}`, '--', ...command, ...args], {
    cwd: ROOT,
    // Without the wasm trap handler node reserves no 10 GB guard regions, so an address-space limit can hold.
    env: { ...process.env, NODE_OPTIONS: '--disable-wasm-trap-handler' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), 90_000);
  return new Promise((resolve) => {
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** A clean refusal: exit 1, one `error:` line saying why (after any progress lines), no stack trace, no "unexpected error". */
function expectRefused(r: Run, why: RegExp): void {
  expect(r.signal, r.stderr).toBeNull();
  expect(r.code, r.stderr).toBe(1);
  expect(r.stderr.match(/^error: /gm)).toHaveLength(1);
  expect(r.stderr).toMatch(/^error: .* is not a valid acpack bundle: /m);
  expect(r.stderr).toMatch(why);
  expect(r.stderr).not.toMatch(/\n\s+at |unexpected error|FATAL|out of memory/i);
}

async function listing(store: string): Promise<{ blobs: string[]; ingest: string[] }> {
  const ls = async (d: string) => (existsSync(join(store, d)) ? (await readdir(join(store, d))).sort() : []);
  return { blobs: await ls('blobs/sha256'), ingest: await ls('ingest') };
}

// Where each refusal happens is in its message (at a header, past the declared bytes); how long the
// CLIs take to start is the machine's business, so these have room on a busy one.
describe('zstd bombs: refused in bounded memory, where the message says, by every command that reads a bundle', { timeout: 180_000 }, () => {
  it('bundle.json whose tar header claims 4 GiB (a 140 KB file): inspect, verify and import refuse it at the header', async () => {
    const layout = get(base, 'oci-layout');
    const bomb = await write('meta-bomb.tar.zst', [...tarOf([{ name: 'oci-layout', data: layout }]), tarHeader('bundle.json', 4 * GiB, 0o644, 0), { zeroGiB: 4 }, TAR_END]);
    const store = join(work.dir, 'store-meta-bomb');
    for (const r of [await runLimited('acpack', ['inspect', bomb]), await runLimited('acpack', ['verify', bomb]), await runLimited('acinstall', ['import', bomb, '--store', store])]) {
      expectRefused(r, /entry "bundle\.json" is 4\.29 GB, far more than metadata can be/);
    }
    expect(await listing(store)).toEqual({ blobs: [], ingest: [] });
  });

  it('a blob whose tar header claims 4 GiB where bundle.json and its manifest say 23 bytes: refused at its header; inspect reads only what it needs', async () => {
    const file = blobName(desc.binaries[0].digest);
    const at = base.findIndex((e) => e.name === file);
    const bomb = await write('blob-bomb.tar.zst', [...tarOf(base.slice(0, at)), tarHeader(file, 4 * GiB, 0o644, 0), { zeroGiB: 4 }, ...tarOf(base.slice(at + 1)), TAR_END]);
    const store = join(work.dir, 'store-blob-bomb');
    for (const r of [await runLimited('acpack', ['verify', bomb]), await runLimited('acinstall', ['import', bomb, '--store', store])]) {
      expectRefused(r, new RegExp(`blob ${desc.binaries[0].digest} is 4294967296 bytes \\(4\\.29 GB\\) in the bundle, but bundle\\.json \\(binary tool v1 for amd64\\) says 23 bytes`));
    }
    expect(await listing(store)).toEqual({ blobs: [], ingest: [] });
    // inspect stops after bundle.json: decompression never runs ahead into the bomb.
    const inspect = await runLimited('acpack', ['inspect', bomb]);
    expect(inspect.code, inspect.stderr).toBe(0);
    expect(inspect.stdout).toMatch(/^test v1 \(bundle format 1\)/);
  });

  it('4 GiB of zeros after the end of the tar (tar readers skip zero blocks): refused once past what bundle.json accounts for', async () => {
    const bomb = await write('tail-bomb.tar.zst', [...tarOf(base), TAR_END, { zeroGiB: 4 }]);
    const store = join(work.dir, 'store-tail-bomb');
    for (const r of [await runLimited('acpack', ['verify', bomb]), await runLimited('acinstall', ['import', bomb, '--store', store])]) {
      expectRefused(r, /it decompresses to more than the .* its bundle\.json accounts for/);
    }
    expect(await listing(store)).toEqual({ blobs: [], ingest: [] });
  });

  it('a bundle.json of 60 MB of nested brackets (3 KB compressed; JSON.parse would take ~3 GB) is refused unparsed', async () => {
    const levels = 30_000_000;
    const deep = Buffer.alloc(2 * levels, '[');
    deep.fill(']', levels);
    const path = await craft('deep-60mb.tar.zst', replace(base, 'bundle.json', deep));
    const r = await runLimited('acpack', ['inspect', path]);
    expectRefused(r, /entry "bundle\.json" is 60\.0 MB, far more than metadata can be/);
  });
});

describe('every blob entry is checked at its tar header against what the bundle declares', () => {
  /** Blob digests a reader passed on before it threw, and what it threw. */
  async function readUntilRefused(path: string): Promise<{ passed: string[]; error: unknown }> {
    const passed: string[] = [];
    try {
      for await (const e of bundleEntries(path)) {
        if (e.kind !== 'blob') continue;
        passed.push(e.digest);
        for await (const _ of e.chunks);
      }
    } catch (error) {
      return { passed, error };
    }
    return { passed, error: undefined };
  }

  it("a layer one byte longer than its manifest declares is refused before a byte of it is passed on, by verify and by import", async () => {
    const tgz = blobName(desc.charts[0].chart);
    const longer = Buffer.concat([get(base, tgz), Buffer.from([0])]);
    const path = await craft('longer-layer.tar.zst', replace(withDescriptor(base, (d) => (d.blobs.bytes += 1)), tgz, longer));
    const why = new RegExp(`blob ${desc.charts[0].chart} is ${longer.length} bytes in the bundle, but manifest ${desc.charts[0].digest.slice(0, 19)}… says ${longer.length - 1} bytes`);
    const { passed, error } = await readUntilRefused(path);
    expect(error).toMatchObject({ code: 'BAD_BUNDLE', message: expect.stringMatching(why) });
    expect(passed).not.toContain(desc.charts[0].chart);
    await expect(verifyBundle(path)).rejects.toMatchObject({ code: 'BAD_BUNDLE', message: expect.stringMatching(why) });
    const store = join(work.dir, 'store-longer');
    await expect(importBundle(path, store)).rejects.toMatchObject({ code: 'BAD_BUNDLE', message: expect.stringMatching(why) });
    expect(await listing(store)).toEqual({ blobs: [], ingest: [] });
  });

  it('a manifest read before its index is checked against the size the index declares when the index comes', async () => {
    // Rewrite the binary's index so that it says its (per-arch) manifest has one byte more; put the index last.
    const oldIndex = desc.binaries[0].index;
    const index = JSON.parse(get(base, blobName(oldIndex)).toString());
    index.manifests[0].size += 1;
    const data = Buffer.from(JSON.stringify(index));
    const newIndex = `sha256:${hex(data)}`;
    const top = JSON.parse(get(base, 'index.json').toString());
    for (const m of top.manifests) if (m.digest === oldIndex) Object.assign(m, { digest: newIndex, size: data.length });
    let entries = withDescriptor(base, (d) => {
      d.binaries[0].index = newIndex;
      d.blobs.bytes += data.length - get(base, blobName(oldIndex)).length;
    });
    entries = replace(entries, 'index.json', Buffer.from(JSON.stringify(top)));
    entries = [...entries.filter((e) => e.name !== blobName(oldIndex)), { name: blobName(newIndex), data }];
    const path = await craft('child-first.tar.zst', entries);
    const manifest = desc.binaries[0].manifest;
    const size = get(base, blobName(manifest)).length;
    const why = `index ${newIndex.slice(0, 19)}… says blob ${manifest} has ${size + 1} bytes, its entry in the bundle had ${size} bytes`;
    await expect(verifyBundle(path)).rejects.toMatchObject({ code: 'BAD_BUNDLE', message: expect.stringContaining(why) });
  });

  it('a blob nothing declares (with honest bytes and totals) is refused, by verify and by import', async () => {
    const stray = randomBytes(1000);
    const entries = [...withDescriptor(base, (d) => ((d.blobs.count += 1), (d.blobs.bytes += stray.length))), { name: `blobs/sha256/${hex(stray)}`, data: stray }];
    const path = await craft('undeclared.tar.zst', entries);
    const why = `blob sha256:${hex(stray)} (1000 bytes) is in the bundle, but nothing in bundle.json, index.json or its manifests declares it`;
    await expect(verifyBundle(path)).rejects.toMatchObject({ code: 'BAD_BUNDLE', message: expect.stringContaining(why) });
    const store = join(work.dir, 'store-undeclared');
    await expect(importBundle(path, store)).rejects.toMatchObject({ code: 'BAD_BUNDLE', message: expect.stringContaining(why) });
    expect(await listing(store)).toEqual({ blobs: [], ingest: [] });
  });

  it('a blob entry that appears twice is refused, by verify and by import', async () => {
    const file = blobName(desc.binaries[0].digest);
    const path = await craft('duplicate.tar.zst', [...base, { name: file, data: get(base, file) }]);
    const why = `blob ${desc.binaries[0].digest} appears twice`;
    await expect(verifyBundle(path)).rejects.toMatchObject({ code: 'BAD_BUNDLE', message: expect.stringContaining(why) });
    const store = join(work.dir, 'store-duplicate');
    await expect(importBundle(path, store)).rejects.toMatchObject({ code: 'BAD_BUNDLE', message: expect.stringContaining(why) });
    expect(await listing(store)).toEqual({ blobs: [], ingest: [] });
  });

  it.each([
    // The manifests already declare one blob more than that, or the last entry is one too many: either is refused.
    ['one blob fewer counted', (d: any) => (d.blobs.count -= 1), /(more blobs than|one blob more than) the \d+ bundle\.json counts/],
    ['one byte fewer counted', (d: any) => (d.blobs.bytes -= 1), /goes past the \d+ bytes of blobs bundle\.json counts/],
  ])('totals in bundle.json are never exceeded: %s', async (what, edit, why) => {
    const path = await craft(`totals-${what.replace(/\W/g, '')}.tar.zst`, withDescriptor(base, edit));
    await expect(verifyBundle(path)).rejects.toMatchObject({ code: 'BAD_BUNDLE', message: expect.stringMatching(why) });
    await expect(importBundle(path, join(work.dir, `store-totals-${what.replace(/\W/g, '')}`))).rejects.toMatchObject({ code: 'BAD_BUNDLE' });
  });

  it('a manifest larger than 4 MiB is refused at its header', async () => {
    const big = Buffer.alloc(5 << 20, ' ');
    const digest = `sha256:${hex(big)}`;
    const ref = 'acpack.local/charts/huge:1';
    let entries = withDescriptor(base, (d) => {
      d.charts.push({ ...d.charts[0], name: 'huge', ref, digest });
      d.blobs.count += 1;
      d.blobs.bytes += big.length;
    });
    const index = JSON.parse(get(base, 'index.json').toString());
    index.manifests.push({ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest, size: big.length, annotations: { 'org.opencontainers.image.ref.name': ref } });
    entries = replace(entries, 'index.json', Buffer.from(JSON.stringify(index)));
    const path = await craft('huge-manifest.tar.zst', [...entries.slice(0, 3), { name: blobName(digest), data: big }, ...entries.slice(3)]);
    await expect(verifyBundle(path)).rejects.toMatchObject({ code: 'BAD_BUNDLE', message: expect.stringContaining(`manifest ${digest} is 5242880 bytes (5.24 MB), more than a manifest can be`) });
  });
});

describe('malformed bundle.json and index.json are BAD_BUNDLE with a message, never a TypeError', () => {
  const deep = (levels: number) => `${'['.repeat(levels)}${']'.repeat(levels)}`;
  /** The base bundle with `entry` replaced by `edit` of it (an object, or text as it stands): verify and import both refuse it, saying `why`. */
  async function expectRefusedEdit(entry: 'bundle.json' | 'index.json', what: string, edit: (parsed: any) => unknown, why: RegExp): Promise<void> {
    const edited = edit(JSON.parse(get(base, entry).toString()));
    const data = Buffer.from(typeof edited === 'string' ? edited : JSON.stringify(edited));
    const name = `${entry.replace('.', '-')}-${what.replace(/\W/g, '')}`;
    const path = await craft(`${name}.tar.zst`, replace(base, entry, data));
    await expect(verifyBundle(path)).rejects.toMatchObject({ code: 'BAD_BUNDLE', message: expect.stringMatching(why) });
    await expect(importBundle(path, join(work.dir, `store-${name}`))).rejects.toMatchObject({ code: 'BAD_BUNDLE', message: expect.stringMatching(why) });
  }

  it.each([
    ['not an object', () => '[]', /bundle\.json is not a JSON object/],
    ['a format that is an object', () => ({ format: { v: 2 } }), /bundle\.json says format \{"v":2\}; this acpack reads formats 1 and 2/],
    ['binaries not a list', (d: any) => ((d.binaries = 'tool'), d), /bundle\.json binaries must be array/],
    ['a size that is a string', (d: any) => ((d.binaries[0].size = '23'), d), /bundle\.json binaries\[0\]\.size must be integer/],
    ['a null image', (d: any) => ((d.images = [null]), d), /bundle\.json images\[0\] must be object/],
    ['no blobs totals', (d: any) => (delete d.blobs, d), /bundle\.json has no blobs/],
    ['a negative count', (d: any) => ((d.blobs.count = -1), d), /bundle\.json blobs\.count must be >= 0/],
    ['a bad digest', (d: any) => ((d.charts[0].digest = 'sha256:../../etc/passwd'), d), /charts\[0\]\.digest is not a sha256 digest/],
    ['nested 100,000 deep (200 KB)', (d: any) => `{"format":1,"platforms":${deep(100_000)}}`, /bundle\.json nests deeper than 64 levels/],
    ['nested 7 million deep (14 MB, under the size cap)', () => deep(7_000_000), /bundle\.json nests deeper than 64 levels/],
    ['two million values', () => `[${'0,'.repeat(2_000_000)}0]`, /bundle\.json holds more than 1000000 values/],
  ])('bundle.json: %s', (what, edit, why) => expectRefusedEdit('bundle.json', what, edit, why));

  it.each([
    ['no manifests', () => ({ schemaVersion: 2 }), /index\.json has no manifests/],
    ['manifests not a list', (i: any) => ((i.manifests = {}), i), /index\.json manifests must be array/],
    ['an entry without a media type', (i: any) => (delete i.manifests[0].mediaType, i), /index\.json manifests\[0\] has no mediaType/],
    ['a size that is negative', (i: any) => ((i.manifests[0].size = -5), i), /index\.json manifests\[0\]\.size must be >= 0/],
    ['annotations that are not strings', (i: any) => ((i.manifests[0].annotations = { 'org.opencontainers.image.ref.name': ['x'] }), i), /index\.json manifests\[0\]\.annotations\.org\.opencontainers\.image\.ref\.name must be string/],
    ['nested 100,000 deep', () => `{"schemaVersion":2,"manifests":${deep(100_000)}}`, /index\.json nests deeper than 64 levels/],
  ])('index.json: %s', (what, edit, why) => expectRefusedEdit('index.json', what, edit, why));

  it('the CLIs print such a refusal as one line, without a stack trace', async () => {
    const path = await craft('cli-malformed.tar.zst', withDescriptor(base, (d) => (d.platforms = { a: { b: 1 } })));
    for (const r of [await runLimited('acpack', ['inspect', path]), await runLimited('acpack', ['verify', path]), await runLimited('acinstall', ['import', path, '--store', join(work.dir, 'store-cli-malformed')])]) {
      expectRefused(r, /bundle\.json platforms must be array/);
    }
  });
});

describe('format 2: bundle.json lists every blob and names index.json, and index.json names what bundle.json does', () => {
  const v2desc = () => JSON.parse(get(v2, 'bundle.json').toString());

  /** verify and import both refuse `entries`, saying `why`; the store is left empty. */
  async function expectBoth(name: string, entries: Entry[], why: RegExp): Promise<void> {
    const path = await craft(`${name}.tar.zst`, entries);
    await expect(verifyBundle(path)).rejects.toMatchObject({ code: 'BAD_BUNDLE', message: expect.stringMatching(why) });
    const store = join(work.dir, `store-${name}`);
    await expect(importBundle(path, store)).rejects.toMatchObject({ code: 'BAD_BUNDLE', message: expect.stringMatching(why) });
    expect(await listing(store)).toEqual({ blobs: [], ingest: [] });
  }

  it('the bundle as written is format 2 and reads back whole', async () => {
    const d = v2desc();
    expect(d).toMatchObject({ format: 2, volumes: 1, index: { digest: `sha256:${hex(get(v2, 'index.json'))}`, size: get(v2, 'index.json').length } });
    const blobEntries = v2.filter((e) => e.name.startsWith('blobs/'));
    expect(d.blobs.list).toEqual(blobEntries.map((e) => ({ digest: `sha256:${e.name.slice(13)}`, size: e.data.length, volume: 1 })));
    await expect(verifyBundle(await craft('v2-as-written.tar.zst', v2))).resolves.toMatchObject({ blobs: blobEntries.length });
  });

  it('a blob swapped for another of the same size (honest totals) is refused at its header: bundle.json does not list it', async () => {
    const tgz = blobName(v2desc().charts[0].chart);
    const stray = randomBytes(get(v2, tgz).length);
    const entries = v2.map((e) => (e.name === tgz ? { name: blobName(`sha256:${hex(stray)}`), data: stray } : e));
    await expectBoth('v2-swapped', entries, new RegExp(`blob sha256:${hex(stray)} \\(\\d+ bytes\\) is in the bundle, but bundle\\.json does not list it`));
  });

  it('a dropped blob is refused at the end of the stream, and import keeps none of what it read', async () => {
    const tgz = blobName(v2desc().charts[0].chart);
    await expectBoth('v2-dropped', v2.filter((e) => e.name !== tgz), /bundle\.json promises \d+ blobs \/ .*, the bundle holds \d+ \//);
  });

  it('a changed reference name in index.json is refused: format 2 by the digest bundle.json gives index.json, format 1 by the names', async () => {
    const renamed = (entries: Entry[]) => {
      const index = JSON.parse(get(entries, 'index.json').toString());
      const entry = index.manifests.find((m: any) => m.digest === desc.charts[0].digest);
      entry.annotations['org.opencontainers.image.ref.name'] = 'docker.io/library/busybox:latest';
      return replace(entries, 'index.json', Buffer.from(JSON.stringify(index)));
    };
    await expectBoth('v2-renamed', renamed(v2), /index\.json \(.*\) is not the one bundle\.json names .*: it was changed after the bundle was written/);
    await expectBoth('v1-renamed', renamed(base), /index\.json names docker\.io\/library\/busybox:latest, which bundle\.json does not/);
  });

  it('format 1: an index.json entry pointing a name at another digest, or a name bundle.json has and index.json lacks, is refused', async () => {
    const index = JSON.parse(get(base, 'index.json').toString());
    const chart = index.manifests.find((m: any) => m.digest === desc.charts[0].digest);
    const binary = index.manifests.find((m: any) => m.digest === desc.binaries[0].index);
    const moved = { ...index, manifests: index.manifests.map((m: any) => (m === chart ? { ...binary, annotations: chart.annotations } : m)) };
    await expectBoth('v1-moved', replace(base, 'index.json', Buffer.from(JSON.stringify(moved))), /index\.json says .* is sha256:[a-f0-9]{12}…, bundle\.json says/);
    const fewer = { ...index, manifests: index.manifests.filter((m: any) => m !== chart) };
    await expectBoth('v1-fewer', replace(base, 'index.json', Buffer.from(JSON.stringify(fewer))), /bundle\.json names .*, which index\.json does not/);
  });

  it('a list that disagrees with its own totals, or names a blob twice, is refused before any blob', async () => {
    await expectBoth('v2-totals', withDescriptor(v2, (d) => (d.blobs.count += 1)), /bundle\.json lists \d+ blobs of \d+ bytes but counts/);
    await expectBoth('v2-twice', withDescriptor(v2, (d) => d.blobs.list.push(d.blobs.list[0])), /bundle\.json lists blob sha256:[a-f0-9]{64} twice/);
  });
});
