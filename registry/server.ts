import express, { type Request, type Response } from 'express';
import { createServer, type Server } from 'node:http';
import { pipeline } from 'node:stream/promises';
import { isDigest, type Digest } from '../oci/digest.js';
import { MT } from '../oci/media-types.js';
import { ContentStore } from '../oci/store.js';
import { IndexDb } from './index-db.js';
import { catalogName, queriesFor } from './naming.js';
import { sendError } from './errors.js';

const NAME_RE = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$/;
const TAG_RE = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;
const ROUTE_RE = /^\/v2\/(.+)\/(manifests|blobs|tags|referrers)\/(.+)$/;

export interface RegistryOptions {
  storeRoot: string;
  /** One JSON line per request, for access logs. */
  log?: (line: Record<string, unknown>) => void;
}

/**
 * The OCI distribution API over the content store and its index. The HTTP layer only asks the
 * store and the index; it never builds a file path itself.
 */
export async function createRegistryApp(opts: RegistryOptions) {
  const store = await ContentStore.open(opts.storeRoot);
  const db = new IndexDb(opts.storeRoot);
  const manifests = new ManifestCache(store);
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);

  app.use((req, res, next) => {
    const t0 = process.hrtime.bigint();
    res.setHeader('Docker-Distribution-API-Version', 'registry/2.0');
    res.on('finish', () =>
      opts.log?.({
        time: new Date().toISOString(),
        method: req.method,
        path: req.originalUrl,
        status: res.statusCode,
        bytes: Number(res.getHeader('content-length') ?? 0),
        ms: Number(process.hrtime.bigint() - t0) / 1e6,
      }),
    );
    next();
  });

  app.get('/v2/', (_req, res) => {
    res.type('application/json').send('{}');
  });

  app.get('/v2/_catalog', (req, res) => {
    const all = db.allRepos().map(catalogName);
    const { page, next } = paginate(all, req);
    if (next) res.setHeader('Link', `</v2/_catalog?n=${next.n}&last=${encodeURIComponent(next.last)}>; rel="next"`);
    res.json({ repositories: page });
  });

  app.all(/^\/v2\/.+/, (req, res) => {
    const m = ROUTE_RE.exec(req.path);
    if (!m) return sendError(res, 'UNSUPPORTED', `no such endpoint: ${req.method} ${req.path}`);
    const [, name, kind, rest] = m;
    if (!NAME_RE.test(name) || name.length > 255) return sendError(res, 'NAME_INVALID', `invalid repository name "${name}"`);
    if (req.method !== 'GET' && req.method !== 'HEAD') return sendError(res, 'UNSUPPORTED', `${req.method} is not supported by this read-only registry`);
    const ns = typeof req.query.ns === 'string' ? req.query.ns : undefined;
    const repo = resolveRepo(db, name, ns);
    if ('error' in repo) return sendError(res, 'NAME_UNKNOWN', repo.error);
    switch (kind) {
      case 'manifests':
        return getManifest(req, res, manifests, db, repo.repo, rest);
      case 'blobs':
        return getBlob(req, res, store, rest);
      case 'tags':
        if (rest !== 'list') return sendError(res, 'UNSUPPORTED', `no such endpoint: ${req.path}`);
        return listTags(req, res, db, repo.repo, name);
      default:
        if (!isDigest(rest)) return sendError(res, 'DIGEST_INVALID', `"${rest}" is not a digest`);
        // Referrers: nothing in a bundle refers to another manifest yet, so the list is empty.
        res.type(MT.ociIndex).send(JSON.stringify({ schemaVersion: 2, mediaType: MT.ociIndex, manifests: [] }));
    }
  });

  app.use((_req: Request, res: Response) => sendError(res, 'UNSUPPORTED', 'not an OCI distribution endpoint'));
  return { app, store, db };
}

function resolveRepo(db: IndexDb, name: string, ns?: string): { repo: string } | { error: string } {
  for (const q of queriesFor(name, ns)) {
    const repos = db.repos(q);
    if (repos.length === 1) return { repo: repos[0] };
    if (repos.length > 1) return { error: `"${name}" is ambiguous here (${repos.join(', ')}): ask for it host-prefixed, e.g. ${catalogName(repos[0])}` };
  }
  return { error: `repository "${name}"${ns ? ` of ${ns}` : ''} is not in this registry` };
}

async function getManifest(req: Request, res: Response, manifests: ManifestCache, db: IndexDb, repo: string, reference: string): Promise<void> {
  let digest: string | undefined;
  if (reference.startsWith('sha256:') || reference.includes(':')) {
    if (!isDigest(reference)) return sendError(res, 'DIGEST_INVALID', `"${reference}" is not a valid digest`);
    digest = reference;
  } else {
    if (!TAG_RE.test(reference)) return sendError(res, 'MANIFEST_INVALID', `"${reference}" is not a valid tag`);
    digest = db.tag(repo, reference);
    if (!digest) return sendError(res, 'MANIFEST_UNKNOWN', `manifest ${reference} of ${repo} is not in this registry`);
  }
  const row = db.manifest(repo, digest);
  if (!row) return sendError(res, 'MANIFEST_UNKNOWN', `manifest ${digest} of ${repo} is not in this registry`);
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

/** Manifests are small and immutable by digest: the hot ones are kept in memory (bounded, oldest out). */
class ManifestCache {
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

async function getBlob(req: Request, res: Response, store: ContentStore, digest: string): Promise<void> {
  if (!isDigest(digest)) return sendError(res, 'DIGEST_INVALID', `"${digest}" is not a valid digest`);
  const size = await store.size(digest);
  if (size === undefined) return sendError(res, 'BLOB_UNKNOWN', `blob ${digest} is not in this registry`);
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
  try {
    await pipeline(store.read(digest as Digest, start, end), res);
  } catch {
    // The client went away mid-blob: nothing to answer, the stream is closed.
  }
}

function paginate(all: string[], req: Request): { page: string[]; next?: { n: number; last: string } } {
  const n = req.query.n === undefined ? undefined : Number(req.query.n);
  const last = typeof req.query.last === 'string' ? req.query.last : undefined;
  const after = last === undefined ? all : all.filter((x) => x > last);
  if (n === undefined || !Number.isFinite(n) || n < 0) return { page: after };
  const page = after.slice(0, n);
  return after.length > n && page.length > 0 ? { page, next: { n, last: page[page.length - 1] } } : { page };
}

function listTags(req: Request, res: Response, db: IndexDb, repo: string, name: string): void {
  const all = db.tags(repo, 1_000_000);
  const { page, next } = paginate(all, req);
  if (next) res.setHeader('Link', `</v2/${name}/tags/list?n=${next.n}&last=${encodeURIComponent(next.last)}>; rel="next"`);
  res.json({ name, tags: page });
}

export interface RunningRegistry {
  url: string;
  host: string;
  server: Server;
  close(): Promise<void>;
}

/** Starts the registry on `listen` (host:port; port 0 picks one). */
export async function startRegistry(opts: RegistryOptions & { listen: string }): Promise<RunningRegistry> {
  const { app, db } = await createRegistryApp(opts);
  const server = createServer(app);
  const i = opts.listen.lastIndexOf(':');
  const hostname = opts.listen.slice(0, i).replace(/^\[|\]$/g, '');
  const port = Number(opts.listen.slice(i + 1));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, hostname, resolve);
  });
  const addr = server.address() as { port: number };
  const host = `${hostname.includes(':') ? `[${hostname}]` : hostname}:${addr.port}`;
  return {
    url: `http://${host}`,
    host,
    server,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => {
          db.close();
          resolve();
        });
      }),
  };
}
