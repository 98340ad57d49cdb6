import type { Request, Response } from 'express';
import type { ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { constants as bufferLimits } from 'node:buffer';
import { open } from 'node:fs/promises';
import { BufferPool } from '../oci/buffer-pool.js';
import { isDigest, type Digest } from '../oci/digest.js';
import { isIndexType, type ImageIndex } from '../oci/media-types.js';
import type { ContentStore } from '../oci/store.js';
import type { IndexDb } from './index-db.js';
import { sendError } from './errors.js';
import type { MappedBlobs } from './mapped-blobs.js';

export const TAG_RE = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;

/** A tag or a digest: what a manifest can be asked by. */
export function isManifestReference(reference: string): boolean {
  return TAG_RE.test(reference) || isDigest(reference);
}

/**
 * A reference that is neither a valid tag nor a sha256 digest names no manifest, whatever the
 * repository holds: 404, as distribution answers (its routes do not match such a reference), and
 * the same answer for a repository that does not exist.
 */
export function unknownReference(res: Response, reference: string): void {
  sendError(res, 'MANIFEST_UNKNOWN', `"${reference}" is neither a tag nor a sha256 digest, so it names no manifest here`);
}

export async function getManifest(req: Request, res: Response, manifests: ManifestCache, db: IndexDb, repo: string, reference: string): Promise<void> {
  if (!isManifestReference(reference)) return unknownReference(res, reference);
  const digest = isDigest(reference) ? reference : db.tag(repo, reference);
  if (!digest) return sendError(res, 'MANIFEST_UNKNOWN', `manifest ${reference} of ${repo} is not in this registry`);
  let row = db.manifest(repo, digest);
  if (!row) return sendError(res, 'MANIFEST_UNKNOWN', `manifest ${digest} of ${repo} is not in this registry`);
  if (isIndexType(row.mediaType) && !accepts(req.headers.accept, row.mediaType)) {
    // A client that takes no index (an old docker) gets the image's one platform manifest when the
    // bundle carried just one, as distribution does for linux/amd64; with several it must choose.
    const index = JSON.parse((await manifests.get(row.digest)).toString('utf8')) as ImageIndex;
    const here = (index.manifests ?? []).map((m) => db.manifest(repo, m.digest)).filter((m) => m !== undefined);
    if (here.length !== 1) {
      return sendError(res, 'MANIFEST_UNKNOWN', `${reference} is a multi-platform index (${row.mediaType}) and this client accepts only ${req.headers.accept}: ask by digest for one of ${here.map((m) => m.digest).join(', ')}`);
    }
    row = here[0];
  }
  res.setHeader('Content-Type', row.mediaType);
  res.setHeader('Docker-Content-Digest', row.digest);
  res.setHeader('ETag', `"${row.digest}"`);
  res.setHeader('Content-Length', row.size);
  if (req.headers['if-none-match'] === `"${row.digest}"`) {
    res.status(304).end();
    return;
  }
  if (req.method === 'HEAD') {
    res.status(200).end();
    return;
  }
  res.status(200).end(await manifests.get(row.digest as Digest));
}

/** True unless the client's Accept lists manifest types without this one (no Accept, or a wildcard, takes anything). */
function accepts(accept: string | undefined, mediaType: string): boolean {
  if (!accept) return true;
  const types = accept.split(',').map((t) => t.split(';')[0].trim());
  return types.some((t) => t === mediaType || t === '*/*' || t === 'application/*');
}

/** Manifests are small and immutable by digest: the hot ones are kept in memory (bounded, oldest out). */
export class ManifestCache {
  private readonly entries = new Map<Digest, Buffer>();

  constructor(
    private readonly store: ContentStore,
    private readonly max = 4096,
  ) {}

  async get(digest: Digest): Promise<Buffer> {
    const hit = this.entries.get(digest);
    if (hit) return hit;
    const bytes = await this.store.readBytes(digest);
    if (this.entries.size >= this.max) this.entries.delete(this.entries.keys().next().value!);
    this.entries.set(digest, bytes);
    return bytes;
  }
}

/** `bytes=a-b`, `bytes=a-`, `bytes=-n`; one range only (several: the whole blob, as RFC 9110 allows). */
export function parseRange(header: string | undefined, size: number): { start: number; end: number } | 'unsatisfiable' | undefined {
  const m = header && /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return undefined;
  if (m[1] === '') {
    const n = Number(m[2]);
    if (n === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - n), end: size - 1 };
  }
  const start = Number(m[1]);
  const end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  if (start >= size || end < start) return 'unsatisfiable';
  return { start, end };
}

/** The largest blob served from a mapping: a Buffer cannot be larger (4 GiB on Node 20). */
const MAPPABLE = bufferLimits.MAX_LENGTH;

/** `blobs`: mappings, when this runtime has the addon; without, every blob is read from its file as it is sent. */
export async function getBlob(req: Request, res: Response, store: ContentStore, blobs: MappedBlobs | undefined, digest: string): Promise<void> {
  if (!isDigest(digest)) return sendError(res, 'DIGEST_INVALID', `"${digest}" is not a valid digest`);
  const size = await store.size(digest);
  if (size === undefined) {
    blobs?.forget(digest as Digest); // deleted (maybe by another worker): let its mapping go
    return sendError(res, 'BLOB_UNKNOWN', `blob ${digest} is not in this registry`);
  }
  res.setHeader('Docker-Content-Digest', digest);
  res.setHeader('Accept-Ranges', 'bytes');
  res.setHeader('Content-Type', 'application/octet-stream');
  res.setHeader('ETag', `"${digest}"`);
  const range = parseRange(req.headers.range, size);
  if (range === 'unsatisfiable') {
    res.setHeader('Content-Range', `bytes */${size}`);
    return sendError(res, 'RANGE_INVALID', `range ${req.headers.range} is outside the blob's ${size} bytes`);
  }
  const { start, end } = range ?? { start: 0, end: size - 1 };
  if (range) {
    res.status(206);
    res.setHeader('Content-Range', `bytes ${start}-${end}/${size}`);
  } else {
    res.status(200);
  }
  res.setHeader('Content-Length', size === 0 ? 0 : end - start + 1);
  if (req.method === 'HEAD' || size === 0) {
    res.end();
    return;
  }
  if (!blobs || size > MAPPABLE) {
    // No addon (the site's single executable), or past what one Buffer can hold: read from the file.
    await sendFile(res, store.path(digest as Digest), start, end);
    return;
  }
  const body = (await blobs.get(digest as Digest, size)).subarray(start, end + 1);
  if ((req.socket as TLSSocket).encrypted) await writeInSlices(res, body);
  else res.end(body); // plain: the kernel copies straight from the mapping
}

/** Resolves once the response drains or closes, leaving no listener behind. */
export function drainedOrClosed(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}

/**
 * Chunks of a blob read from its file, in pooled buffers (oci/buffer-pool.ts): a new 1 MiB
 * Buffer per chunk (what a read stream takes) costs the kernel zeroing its pages every time.
 */
const FILE_CHUNK = 1 << 20;
const chunks = new BufferPool(FILE_CHUNK, 16);

/**
 * Bytes start..end of a file, each chunk read while the one before is being written (a read stream
 * reads the next only once the last was taken). Ends early, without error, when the client leaves.
 */
async function sendFile(res: Response, path: string, start: number, end: number): Promise<void> {
  const file = await open(path, 'r');
  try {
    let writing = Promise.resolve(true);
    for (let at = start; at <= end; ) {
      const chunk = chunks.take(FILE_CHUNK);
      const { bytesRead } = await file.read(chunk, 0, Math.min(FILE_CHUNK, end + 1 - at), at);
      if (!(await writing)) return;
      if (bytesRead === 0) throw new Error(`${path} ended at ${at} bytes, before the ${end + 1} its size promised`);
      at += bytesRead;
      writing = written(res, chunk.subarray(0, bytesRead)).then((ok) => {
        if (ok) chunks.give(chunk);
        return ok;
      });
    }
    if (await writing) res.end();
  } finally {
    await file.close();
  }
}

/** Resolves true once the socket took `chunk` (so its buffer may be reused), false if the response is gone first. */
function written(res: Response, chunk: Buffer): Promise<boolean> {
  return new Promise((resolve) => {
    const gone = () => resolve(false);
    res.once('close', gone);
    res.write(chunk, (err) => {
      res.off('close', gone);
      resolve(!err);
    });
  });
}

/** Over TLS, 1 MiB at a time: Node encrypts a whole large write into memory before sending any of it (half the speed). */
const TLS_SLICE = 1 << 20;

async function writeInSlices(res: Response, body: Buffer): Promise<void> {
  for (let at = 0; at < body.length && !res.destroyed; at += TLS_SLICE) {
    if (!res.write(body.subarray(at, at + TLS_SLICE))) await drainedOrClosed(res);
  }
  res.end();
}

/** The catalog's page when the client names none, and the most it may ask for (distribution's numbers). */
const CATALOG_PAGE = 100;
const CATALOG_MAX = 1000;
const INT64_MAX = 2n ** 63n - 1n;

const first = (v: unknown): string | undefined => (Array.isArray(v) ? first(v[0]) : typeof v === 'string' ? v : undefined);

/**
 * `?n=` read the way distribution reads it (Go's strconv.Atoi of the first value): a decimal
 * integer that fits 64 bits, else no count at all (`abc`, `1e308`, `1.5`, `-1`, an overflow).
 */
export function countParam(value: unknown): number | undefined {
  const s = first(value);
  if (s === undefined || !/^[+-]?\d+$/.test(s)) return undefined;
  const n = BigInt(s);
  if (n < 0n || n > INT64_MAX) return undefined;
  return Number(n);
}

/** A page of `rows` (sorted, already after `last`, at most n + 1 of them) and the next page's start. */
function pageOf(rows: string[], n: number | undefined): { page: string[]; next?: { n: number; last: string } } {
  if (n === undefined || rows.length <= n) return { page: rows };
  const page = rows.slice(0, n);
  return page.length > 0 ? { page, next: { n, last: page[page.length - 1] } } : { page };
}

/**
 * GET /v2/_catalog: as distribution 2.8 pages it — 100 names without a valid `n`, none for n=0, and
 * 400 PAGINATION_NUMBER_INVALID past 1000 (a bound on one answer's size).
 */
export function listCatalog(req: Request, res: Response, all: string[]): void {
  const asked = countParam(req.query.n);
  if (asked !== undefined && asked > CATALOG_MAX) {
    return sendError(res, 'PAGINATION_NUMBER_INVALID', `n=${first(req.query.n)} is more than the ${CATALOG_MAX} names one page may hold`, { n: asked });
  }
  const n = asked ?? CATALOG_PAGE;
  const last = first(req.query.last);
  const after = last === undefined ? all : all.filter((x) => x > last);
  const { page, next } = pageOf(after.slice(0, n + 1), n);
  if (next) res.setHeader('Link', `</v2/_catalog?n=${next.n}&last=${encodeURIComponent(next.last)}>; rel="next"`);
  res.json({ repositories: page });
}

/**
 * GET /v2/<name>/tags/list: paged as the spec says when `n` is a count (n=0: none); any other `n`
 * is ignored as distribution 2.8 ignores it, and a huge one lists everything.
 */
export function listTags(req: Request, res: Response, db: IndexDb, repo: string, name: string): void {
  const n = countParam(req.query.n);
  const last = first(req.query.last);
  // Paged in SQL: one row more than asked tells whether a next page exists.
  const { page, next } = pageOf(db.tags(repo, n === undefined || n >= 2 ** 31 ? -1 : n + 1, last), n);
  if (next) res.setHeader('Link', `</v2/${name}/tags/list?n=${next.n}&last=${encodeURIComponent(next.last)}>; rel="next"`);
  res.json({ name, tags: page });
}
