import type { Readable } from 'node:stream';
import { lazyValidator } from './json-schema.js';
import { manifestShapeProblem, schemaProblem } from './manifest-shape.js';
import { AcpackError, formatBytes } from './errors.js';
import { digestOfHash, isDigest, newHash, sha256, shortDigest, type Digest } from './digest.js';
import {
  BLOB_PREFIX,
  BUNDLE_JSON_ENTRY,
  BUNDLE_LIMITS,
  BUNDLE_SIG_ENTRY,
  bundleJsonSchema,
  INDEX_ENTRY,
  indexJsonSchema,
  manifestDigests,
  OCI_LAYOUT_ENTRY,
  READ_FORMATS,
  VOLUME_ENTRY,
  type BundleDescriptor,
} from './bundle-format.js';
import { parseSignature, type BundleSignature } from './bundle-signature.js';
import type { Descriptor, ImageIndex, ImageManifest } from './media-types.js';
import { ZstdReader } from './zstd.js';
import { fileChunks, streamChunks } from './chunks.js';
import { TarError, TarReader } from './tar-reader.js';

export type BundleEntry =
  | { kind: 'layout'; data: Buffer }
  | { kind: 'descriptor'; data: Buffer; descriptor: BundleDescriptor }
  | { kind: 'signature'; data: Buffer; signature: BundleSignature }
  | { kind: 'index'; data: Buffer; index: ImageIndex }
  /** Which file of a volume set this is (format 2 with `volumes` > 1). */
  | { kind: 'volume'; volume: number }
  /**
   * `chunks` are the blob's bytes, each a view of memory the reader uses again for the next one:
   * copy what must outlive it. Or `readInto` decompresses them straight into memory of the caller's
   * (not empty), returning how many, 0 at the end; one of the two per entry. `manifest` is set for
   * the manifests and indexes bundle.json and index.json name: parsed and checked. `part`: the
   * entry is part `index` of the blob `of` (a blob larger than a volume).
   */
  | { kind: 'blob'; digest: Digest; size: number; chunks: AsyncIterable<Buffer>; readInto: (dst: Buffer) => Promise<number>; manifest?: ImageManifest | ImageIndex; part?: { of: Digest; index: number } };

const ORDER = [OCI_LAYOUT_ENTRY, BUNDLE_JSON_ENTRY, BUNDLE_SIG_ENTRY, VOLUME_ENTRY, INDEX_ENTRY];
const METADATA_CAP: Record<string, number> = {
  [OCI_LAYOUT_ENTRY]: BUNDLE_LIMITS.smallEntryBytes,
  [BUNDLE_JSON_ENTRY]: BUNDLE_LIMITS.metadataBytes,
  [BUNDLE_SIG_ENTRY]: BUNDLE_LIMITS.smallEntryBytes,
  [VOLUME_ENTRY]: 16,
  [INDEX_ENTRY]: BUNDLE_LIMITS.metadataBytes,
};
/** What the tar stream may hold besides the blobs bundle.json counts: metadata, headers, the end blocks. */
const METADATA_ALLOWANCE = Object.values(METADATA_CAP).reduce((n, c) => n + c + 1024, 0) + (1 << 20);

type Bad = (why: string) => AcpackError;

/**
 * Streams the entries of a bundle.tar.zst in order. A blob's chunks must be consumed before the next
 * entry is asked for (what is left unread is skipped); breaking out of the loop stops reading.
 * Whoever wrote the bundle, reading it costs bounded memory and time: decompression runs only as
 * fast as entries are consumed, into the same buffer over and over, metadata and manifests are read
 * into memory only up to BUNDLE_LIMITS, and each blob entry is checked at its tar header, before a
 * byte of it is passed on, against what the bundle declares: bundle.json (the binaries' and
 * runtimes' sizes, the manifests it lists, the blob count and bytes), index.json, and every manifest
 * and index read so far (their children's sizes; one read before its parent is checked when the
 * parent comes). Anything else (a blob nothing declares, another size, a duplicate, malformed or
 * oversized metadata, unknown names, links, out-of-order entries) is refused with BAD_BUNDLE.
 */
export async function* bundleEntries(input: Readable | string, label = typeof input === 'string' ? input : 'the bundle'): AsyncGenerator<BundleEntry> {
  const bad: Bad = (why) => new AcpackError('BAD_BUNDLE', `${label} is not a valid acpack bundle: ${why}`);
  const zstd = new ZstdReader(typeof input === 'string' ? fileChunks(input) : streamChunks(input));
  // Past the end of the tar, or in padding, zeros can hide gigabytes of decompressed nothing: the stream
  // may not be longer than what bundle.json declares.
  let inflated = 0;
  let budget = METADATA_ALLOWANCE;
  const counted = (n: number) => {
    inflated += n;
    if (inflated > budget) throw bad(`it decompresses to more than the ${formatBytes(budget)} its bundle.json accounts for`);
    return n;
  };
  const decoded = <T>(step: Promise<T>) => step.catch((err: Error): never => {
    throw decodeError(err, label);
  });
  const tar = new TarReader({
    read: async () => {
      const chunk = await decoded(zstd.read());
      counted(chunk?.length ?? 0);
      return chunk;
    },
    readInto: async (dst) => counted(await decoded(zstd.readInto(dst))),
  });
  const damaged = (err: unknown): never => {
    if (!(err instanceof TarError)) throw err;
    throw bad(`its tar stream is damaged or cut short (${err.message})`);
  };
  const nextHeader = () => tar.next().catch(damaged);
  const body = async function* (): AsyncGenerator<Buffer> {
    for (let c = await tar.read().catch(damaged); c; c = await tar.read().catch(damaged)) yield c;
  };
  const bodyInto = (dst: Buffer) => tar.readInto(dst).catch(damaged);
  const readEntry = async (size: number): Promise<Buffer> => {
    const data = Buffer.allocUnsafe(size);
    let at = 0;
    for await (const c of body()) at += c.copy(data, at);
    return data;
  };

  let lastMeta = -1;
  let ledger: Ledger | undefined;
  let sawIndex = false;
  try {
    for (let header = await nextHeader(); header; header = await nextHeader()) {
      const { name, type, size } = header;
      if (type !== 'file') throw bad(`entry "${name}" is a ${type}, only plain files belong in a bundle`);
      if (name.startsWith(BLOB_PREFIX)) {
        const digest = `sha256:${name.slice(BLOB_PREFIX.length)}`;
        if (!isDigest(digest)) throw bad(`entry "${name}" is not named by a sha256 digest`);
        if (!ledger || !sawIndex) throw bad(`blob ${name} comes before ${ledger ? 'index.json' : 'bundle.json'}`);
        if (ledger.admit(digest, size)) {
          const data = await readEntry(size);
          const manifest = ledger.readManifest(digest, data);
          yield { kind: 'blob', digest, size, chunks: once(data), readInto: copier(data), manifest };
        } else {
          const part = ledger.partOf(digest);
          yield { kind: 'blob', digest, size, chunks: body(), readInto: bodyInto, ...(part ? { part } : {}) };
        }
        continue;
      }
      const at = ORDER.indexOf(name);
      if (at < 0) throw bad(`unexpected entry "${name}"`);
      if (at <= lastMeta || ledger?.blobs) throw bad(`entry "${name}" is out of order`);
      if (size > METADATA_CAP[name]) throw bad(`entry "${name}" is ${formatBytes(size)}, far more than metadata can be`);
      lastMeta = at;
      const data = await readEntry(size);
      if (name === OCI_LAYOUT_ENTRY) yield { kind: 'layout', data };
      else if (name === BUNDLE_SIG_ENTRY) {
        if (!ledger) throw bad('bundle.json.sig comes before bundle.json');
        const signature = parseSignature(data);
        if (typeof signature === 'string') throw bad(signature);
        yield { kind: 'signature', data, signature };
      }
      else if (name === BUNDLE_JSON_ENTRY) {
        const descriptor = parseDescriptor(data, bad);
        ledger = new Ledger(descriptor, label, bad);
        budget = METADATA_ALLOWANCE + descriptor.blobs.bytes + descriptor.blobs.count * 1024;
        yield { kind: 'descriptor', data, descriptor };
      } else if (name === VOLUME_ENTRY) {
        if (!ledger) throw bad('the volume entry comes before bundle.json');
        yield { kind: 'volume', volume: ledger.setVolume(data) };
      } else {
        if (!ledger) throw bad('index.json comes before bundle.json');
        ledger.checkIndexBytes(data);
        const index = parseIndex(data, bad);
        ledger.addIndex(index);
        sawIndex = true;
        yield { kind: 'index', data, index };
      }
    }
    if (!sawIndex) throw bad(`it ends before ${ledger ? 'index.json' : 'bundle.json'}`);
    ledger!.finish();
  } finally {
    zstd.close();
  }
}

/**
 * Reads a blob entry to its end, checking that its bytes hash to its name (a manifest the reader
 * parsed was checked already); `onBytes` hears each chunk. Returns the bytes read.
 */
export async function drainVerified(entry: Extract<BundleEntry, { kind: 'blob' }>, label: string, onBytes?: (n: number) => void): Promise<number> {
  const hash = entry.manifest ? undefined : newHash();
  let seen = 0;
  for await (const chunk of entry.chunks) {
    hash?.update(chunk);
    seen += chunk.length;
    onBytes?.(chunk.length);
  }
  const actual = hash ? digestOfHash(hash) : entry.digest;
  if (actual !== entry.digest || seen !== entry.size) {
    throw new AcpackError('DIGEST_MISMATCH', `${label}: blob ${entry.digest} is corrupt: its ${seen} bytes hash to ${shortDigest(actual)}`);
  }
  return seen;
}

/** Reads just the metadata entries (readHead): cheap whatever the bundle's size. */
export async function readDescriptor(path: string): Promise<BundleDescriptor> {
  return (await readHead(path)).descriptor;
}

export interface BundleHead {
  descriptor: BundleDescriptor;
  /** bundle.json's bytes, what a signature covers. */
  descriptorBytes: Buffer;
  signature?: BundleSignature;
  /** Which file of a volume set this is. */
  volume?: number;
}

/**
 * Reads the metadata entries, bundle.json and its signature, and stops once index.json is read and
 * checked against bundle.json, before any blob.
 */
export async function readHead(path: string): Promise<BundleHead> {
  let head: BundleHead | undefined;
  for await (const entry of bundleEntries(path)) {
    if (entry.kind === 'descriptor') head = { descriptor: entry.descriptor, descriptorBytes: entry.data };
    else if (entry.kind === 'signature') head!.signature = entry.signature;
    else if (entry.kind === 'volume') head!.volume = entry.volume;
    else if (entry.kind !== 'layout') break;
  }
  if (!head) throw new AcpackError('BAD_BUNDLE', `${path} has no bundle.json`);
  return head;
}

async function* once(data: Buffer): AsyncGenerator<Buffer> {
  yield data;
}

/** `readInto` over bytes already read. */
function copier(data: Buffer): (dst: Buffer) => Promise<number> {
  let at = 0;
  return async (dst) => {
    const n = data.copy(dst, 0, at);
    at += n;
    return n;
  };
}

/** Sizes as messages show them: exact, with the rounded figure when it is large. */
function bytes(n: number): string {
  return n < 1_000_000 ? `${n} bytes` : `${n} bytes (${formatBytes(n)})`;
}

/**
 * What the bundle declares, and what has passed: refuses each blob entry at its header unless it was
 * declared with that size, is a manifest bundle.json or index.json names (at most manifestBytes), was
 * not seen before, and stays within bundle.json's count and bytes.
 */
class Ledger {
  /** Declared blob sizes, and who declared them (a shared label per declaring manifest). */
  private readonly declared = new Map<Digest, { size: number; by: string }>();
  /** Manifests and indexes the bundle names: read into memory, checked, their children declared. */
  private readonly manifests: Set<Digest>;
  private readonly seen = new Map<Digest, number>();
  blobs = 0;
  private bytes = 0;

  /** Format 2: the entries this file may hold, by bundle.json's list (whole blobs and parts of its volume), which alone says what may be there. */
  private listed: Map<Digest, number> | undefined;
  /** Format 2: the parts of split blobs this file holds, by their digest. */
  private parts = new Map<Digest, { of: Digest; index: number }>();
  /** This file's number in a volume set (1 for a single file), and what it holds in all. */
  private volume = 1;
  private hasVolumeEntry = false;
  private expect: { count: number; bytes: number };

  constructor(
    private readonly d: BundleDescriptor,
    private readonly label: string,
    private readonly bad: Bad,
  ) {
    this.manifests = manifestDigests(d);
    this.expect = { count: d.blobs.count, bytes: d.blobs.bytes };
    if (d.format === 2 && d.blobs.list) {
      for (const b of d.blobs.list) {
        this.declared.set(b.digest, { size: b.size, by: 'bundle.json' });
        for (const p of b.parts ?? []) this.declared.set(p.digest, { size: p.size, by: 'bundle.json' });
      }
      for (const m of this.manifests) if (!this.declared.has(m)) throw this.bad(`bundle.json names manifest ${m} but does not list it among its blobs`);
      this.expectVolume(1);
    }
    for (const b of d.binaries) this.declare(b.digest, b.size, `bundle.json (binary ${b.name} ${b.version} for ${b.arch})`);
    for (const r of d.runtime ?? []) this.declare(r.digest, r.size, `bundle.json (acinstall's runtime ${r.version} for ${r.arch})`);
  }

  /** The volume entry of a file of a volume set: from here on, only that volume's blobs and parts may come. */
  setVolume(data: Buffer): number {
    const text = data.toString('ascii').trim();
    const n = Number(text);
    if (!/^\d+$/.test(text) || n < 1 || n > (this.d.volumes ?? 1)) throw this.bad(`its volume entry says "${text.slice(0, 16)}", not a volume of the ${this.d.volumes ?? 1} bundle.json counts`);
    this.expectVolume(n);
    this.hasVolumeEntry = true;
    return n;
  }

  private expectVolume(n: number): void {
    this.volume = n;
    this.listed = new Map();
    this.parts = new Map();
    let bytes = 0;
    for (const b of this.d.blobs.list ?? []) {
      if (b.volume === n) {
        this.listed.set(b.digest, b.size);
        bytes += b.size;
      }
      b.parts?.forEach((p, index) => {
        if (p.volume !== n) return;
        this.listed!.set(p.digest, p.size);
        this.parts.set(p.digest, { of: b.digest, index });
        bytes += p.size;
      });
    }
    this.expect = { count: this.listed.size, bytes };
  }

  /** The blob a part entry belongs to, for a part; undefined for a whole blob. */
  partOf(digest: Digest): { of: Digest; index: number } | undefined {
    return this.parts.get(digest);
  }

  /** Format 2: index.json is the one bundle.json names by digest (so a signature over bundle.json covers it). */
  checkIndexBytes(data: Buffer): void {
    if ((this.d.volumes ?? 1) > 1 && !this.hasVolumeEntry) throw this.bad('it is a volume of a set, and index.json comes before its volume entry');
    const want = this.d.index;
    if (this.d.format !== 2 || !want) return;
    const actual = sha256(data);
    if (actual !== want.digest || data.length !== want.size) {
      throw this.bad(`index.json (${bytes(data.length)}, ${shortDigest(actual)}) is not the one bundle.json names (${bytes(want.size)}, ${shortDigest(want.digest)}): it was changed after the bundle was written`);
    }
  }

  addIndex(index: ImageIndex): void {
    checkIndexNames(this.d, index, this.bad);
    for (const m of index.manifests) {
      this.manifests.add(m.digest);
      this.declare(m.digest, m.size, `index.json (${m.annotations?.['org.opencontainers.image.ref.name'] ?? shortDigest(m.digest)})`);
    }
    const all = this.d.blobs.list?.length ?? this.d.blobs.count;
    if (this.manifests.size > all) {
      throw this.bad(`bundle.json and index.json name ${this.manifests.size} manifests, but bundle.json counts ${all} blobs in all`);
    }
  }

  /** Checks a blob entry's header; true when it is a manifest to be read and parsed. */
  admit(digest: Digest, size: number): boolean {
    const name = `blob ${digest}`;
    if (this.seen.has(digest)) throw this.bad(`${name} appears twice`);
    const declared = this.declared.get(digest);
    const manifest = this.manifests.has(digest);
    if (declared && declared.size !== size) throw this.bad(`${name} is ${bytes(size)} in the bundle, but ${declared.by} says ${bytes(declared.size)}`);
    if (this.listed && !this.listed.has(digest)) {
      const elsewhere = this.d.blobs.list?.find((b) => b.digest === digest || b.parts?.some((p) => p.digest === digest));
      if (elsewhere && (this.d.volumes ?? 1) > 1) throw this.bad(`${name} is in volume ${this.volume}, but bundle.json puts it in another volume`);
      throw this.bad(`${name} (${bytes(size)}) is in the bundle, but bundle.json does not list it`);
    }
    const listedSize = this.listed?.get(digest);
    if (listedSize !== undefined && listedSize !== size) throw this.bad(`${name} is ${bytes(size)} in the bundle, but bundle.json says ${bytes(listedSize)}`);
    if (!declared && !manifest) throw this.bad(`${name} (${bytes(size)}) is in the bundle, but nothing in bundle.json, index.json or its manifests declares it`);
    if (manifest && size > BUNDLE_LIMITS.manifestBytes) {
      throw this.bad(`manifest ${digest} is ${bytes(size)}, more than a manifest can be (${formatBytes(BUNDLE_LIMITS.manifestBytes)})`);
    }
    if (this.blobs + 1 > this.expect.count) throw this.bad(`it holds more blobs than the ${this.expect.count} bundle.json counts (${name} is one too many)`);
    if (this.bytes + size > this.expect.bytes) {
      throw this.bad(`${name} (${bytes(size)}) goes past the ${bytes(this.expect.bytes)} of blobs bundle.json counts`);
    }
    this.seen.set(digest, size);
    this.blobs++;
    this.bytes += size;
    return manifest;
  }

  /** Checks a manifest's bytes (digest, bounds, shape) and declares its children. */
  readManifest(digest: Digest, data: Buffer): ImageManifest | ImageIndex {
    const actual = sha256(data);
    if (actual !== digest) throw new AcpackError('DIGEST_MISMATCH', `${this.label}: blob ${digest} is corrupt: its ${data.length} bytes hash to ${shortDigest(actual)}`);
    const what = `manifest ${shortDigest(digest)}`;
    const m = parseJson(data, what, this.bad) as Partial<ImageManifest & ImageIndex>;
    const shape = manifestShapeProblem(m, Array.isArray(m?.manifests));
    if (shape) throw this.bad(`${what} ${shape}`);
    if (Array.isArray(m.manifests)) {
      const by = `index ${shortDigest(digest)}`;
      // Only the children bundle.json lists were bundled (the requested platforms); the others are not here.
      for (const child of m.manifests) if (this.manifests.has(child.digest)) this.declare(child.digest, child.size, by);
      return m as ImageIndex;
    }
    const by = `manifest ${shortDigest(digest)}`;
    for (const blob of [m.config!, ...m.layers!]) this.declare(blob.digest, blob.size, by);
    return m as ImageManifest;
  }

  /** At the end of the tar: the totals bundle.json promises are all there. */
  finish(): void {
    if (this.blobs !== this.expect.count || this.bytes !== this.expect.bytes) {
      const where = (this.d.volumes ?? 1) > 1 ? ` for volume ${this.volume}` : '';
      throw this.bad(`bundle.json promises ${this.expect.count} blobs / ${bytes(this.expect.bytes)}${where}, the bundle holds ${this.blobs} / ${bytes(this.bytes)}`);
    }
  }

  private declare(digest: Digest, size: number, by: string): void {
    const before = this.declared.get(digest);
    if (before) {
      if (before.size !== size) throw this.bad(`${by} says blob ${digest} has ${bytes(size)}, ${before.by} says ${bytes(before.size)}`);
      return;
    }
    const seen = this.seen.get(digest);
    if (seen !== undefined && seen !== size) throw this.bad(`${by} says blob ${digest} has ${bytes(size)}, its entry in the bundle had ${bytes(seen)}`);
    // Format 2 lists every blob: one it does not list is missing, which the walk of index.json names.
    if (this.listed) return;
    // Every blob declared must be in the bundle, so there cannot be more of them than bundle.json counts.
    if (this.declared.size >= this.d.blobs.count) throw this.bad(`${by} declares one blob more than the ${this.d.blobs.count} bundle.json counts in all`);
    this.declared.set(digest, { size, by });
  }
}

const validateDescriptor = lazyValidator<BundleDescriptor>(bundleJsonSchema);
const validateIndex = lazyValidator<ImageIndex>(indexJsonSchema);

function parseDescriptor(data: Buffer, bad: Bad): BundleDescriptor {
  const d = parseJson(data, BUNDLE_JSON_ENTRY, bad) as Partial<BundleDescriptor> | null;
  if (typeof d !== 'object' || d === null || Array.isArray(d)) throw bad('bundle.json is not a JSON object');
  if (!READ_FORMATS.includes(d.format as number)) {
    throw bad(d.format === undefined ? 'bundle.json has no format' : `bundle.json says format ${preview(d.format)}; this acpack reads formats ${READ_FORMATS.join(' and ')}`);
  }
  if (!validateDescriptor(d)) throw bad(`bundle.json ${schemaProblem(validateDescriptor.errors)}`);
  if (d.format === 2) checkBlobList(d, bad);
  // A node is handed the runtime of its arch: two of them would leave which one to chance.
  const arches = (d.runtime ?? []).map((r) => r.arch);
  const twice = arches.find((a, i) => arches.indexOf(a) !== i);
  if (twice !== undefined) throw bad(`bundle.json lists acinstall's runtime for ${preview(twice)} twice`);
  return d;
}

/**
 * Format 2's own fields: index.json named, every blob listed once, each in a volume the bundle has,
 * in parts that add up to it, or (a delta, which names its base) not carried, and the totals of
 * those carried.
 */
function checkBlobList(d: BundleDescriptor, bad: Bad): void {
  if (!d.index) throw bad('bundle.json (format 2) has no index');
  if (!d.blobs.list) throw bad('bundle.json (format 2) has no blobs.list');
  if (d.volumes === undefined) throw bad('bundle.json (format 2) has no volumes');
  const volumes = d.volumes;
  const inVolume = (v: number, what: string) => {
    if (v > volumes) throw bad(`bundle.json puts ${what} in volume ${v} of ${volumes}`);
  };
  const seen = new Set<Digest>();
  let bytes = 0;
  let carried = 0;
  for (const b of d.blobs.list) {
    if (seen.has(b.digest)) throw bad(`bundle.json lists blob ${b.digest} twice`);
    seen.add(b.digest);
    if (b.parts) {
      if (b.volume !== undefined || b.parts.length < 2) throw bad(`bundle.json lists blob ${b.digest} in parts and whole, or in fewer than two parts`);
      let sum = 0;
      for (const p of b.parts) {
        if (seen.has(p.digest)) throw bad(`bundle.json lists blob ${p.digest} twice`);
        seen.add(p.digest);
        inVolume(p.volume, `a part of blob ${b.digest}`);
        sum += p.size;
      }
      if (sum !== b.size) throw bad(`the parts of blob ${b.digest} add up to ${sum} bytes, not its ${b.size}`);
    } else if (b.volume === undefined) {
      if (!d.base) throw bad(`bundle.json lists blob ${b.digest} as not carried, but names no base bundle that would have it`);
      continue; // the site's store has it (import checks): not among what the bundle carries
    } else inVolume(b.volume, `blob ${b.digest}`);
    bytes += b.size;
    carried++;
  }
  if (carried !== d.blobs.count || bytes !== d.blobs.bytes) {
    throw bad(`bundle.json lists ${carried} blobs of ${bytes} bytes but counts ${d.blobs.count} of ${d.blobs.bytes}`);
  }
}

/**
 * index.json names exactly what bundle.json says, each reference once with its digest: the images,
 * the binaries' and the runtime's indexes, the charts. The tags a site serves come from index.json;
 * one that bundle.json does not name would be a tag nobody signed or inspected.
 */
function checkIndexNames(d: BundleDescriptor, index: ImageIndex, bad: Bad): void {
  const want = new Map<string, Digest>();
  const expect = (ref: string, digest: Digest) => {
    const before = want.get(ref);
    if (before !== undefined && before !== digest) throw bad(`bundle.json names ${ref} twice, as ${shortDigest(before)} and ${shortDigest(digest)}`);
    want.set(ref, digest);
  };
  for (const i of d.images) expect(i.ref, i.digest);
  for (const b of d.binaries) expect(b.ref, b.index);
  for (const c of d.charts) expect(c.ref, c.digest);
  for (const r of d.runtime ?? []) expect(r.ref, r.index);
  const found = new Set<string>();
  for (const m of index.manifests) {
    const ref = m.annotations?.['org.opencontainers.image.ref.name'];
    if (ref === undefined) throw bad(`index.json has an entry (${shortDigest(m.digest)}) with no reference name`);
    if (found.has(ref)) throw bad(`index.json names ${ref} twice`);
    found.add(ref);
    const digest = want.get(ref);
    if (digest === undefined) throw bad(`index.json names ${ref}, which bundle.json does not`);
    if (digest !== m.digest) throw bad(`index.json says ${ref} is ${shortDigest(m.digest)}, bundle.json says ${shortDigest(digest)}`);
  }
  for (const ref of want.keys()) if (!found.has(ref)) throw bad(`bundle.json names ${ref}, which index.json does not`);
}

function parseIndex(data: Buffer, bad: Bad): ImageIndex {
  const index = parseJson(data, INDEX_ENTRY, bad);
  if (!validateIndex(index)) throw bad(`index.json ${schemaProblem(validateIndex.errors)}`);
  return index;
}

/** JSON.parse after a scan of the nesting and the number of values, which JSON.parse would pay for in memory. */
function parseJson(data: Buffer, what: string, bad: Bad): unknown {
  const problem = jsonBounds(data);
  if (problem) throw bad(`${what} ${problem}`);
  try {
    return JSON.parse(data.toString('utf8'));
  } catch {
    throw bad(`${what} is not JSON`);
  }
}

/**
 * Why JSON text is too costly to parse, or undefined. A few MB of `[[[[…` nested millions deep take
 * JSON.parse gigabytes; millions of `{},` take hundreds of MB. Strings are skipped (with escapes).
 */
function jsonBounds(data: Uint8Array, maxDepth: number = BUNDLE_LIMITS.jsonDepth, maxValues: number = BUNDLE_LIMITS.jsonValues): string | undefined {
  let depth = 0;
  let values = 0;
  for (let i = 0; i < data.length; i++) {
    const c = data[i];
    if (c === 0x22) {
      // a string: skip to its closing quote
      for (i++; i < data.length && data[i] !== 0x22; i++) if (data[i] === 0x5c) i++;
    } else if (c === 0x7b || c === 0x5b) {
      if (++depth > maxDepth) return `nests deeper than ${maxDepth} levels`;
      if (++values > maxValues) return `holds more than ${maxValues} values`;
    } else if (c === 0x7d || c === 0x5d) {
      depth--;
    } else if (c === 0x2c) {
      if (++values > maxValues) return `holds more than ${maxValues} values`;
    }
  }
  return undefined;
}

function preview(v: unknown): string {
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 40 ? `${s.slice(0, 40)}…` : s;
}

function decodeError(err: Error, label: string): Error {
  if (err instanceof AcpackError) return err;
  if ((err as NodeJS.ErrnoException).code === 'ENOENT') return new AcpackError('NOT_FOUND', `${label} does not exist`);
  return new AcpackError('BAD_BUNDLE', `${label} could not be decompressed (${err.message}): it is truncated or not a zstd bundle`, { cause: err });
}
