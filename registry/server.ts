import express, { type NextFunction, type Request, type Response } from 'express';
import { createServer, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { isDigest } from '../oci/digest.js';
import { AcpackError } from '../oci/errors.js';
import { MT } from '../oci/media-types.js';
import { ARTIFACT_HOST } from '../oci/bundle-format.js';
import { ContentStore } from '../oci/store.js';
import { IndexDb } from './index-db.js';
import { catalogName, queriesFor } from './naming.js';
import { sendError } from './errors.js';
import { PIECE_HEADER } from '../p2p/protocol.js';
import { SEED_SLOTS, SeedQueue } from './seed-queue.js';
import { getBlob, getManifest, isManifestReference, listCatalog, listTags, ManifestCache, unknownReference } from './pull.js';
import { mappedBlobs } from './mapped-blobs.js';
import { UploadHandlers } from './push.js';
import { Htpasswd, Logins } from './auth.js';
import { metricsHandler, observeRequests } from './metrics.js';
import { p2pRoutes } from './p2p.js';

const NAME_RE = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$/;
const validName = (name: string) => name.length <= 255 && NAME_RE.test(name);
const UPLOAD_RE = /^\/v2\/(.+)\/blobs\/uploads\/([^/]*)$/;
const ROUTE_RE = /^\/v2\/(.+)\/(manifests|blobs|tags|referrers)\/([^/]+)$/;


export interface RegistryOptions {
  storeRoot: string;
  /** One JSON line per request, for access logs. */
  log?: (line: Record<string, unknown>) => void;
  /** htpasswd (bcrypt) users who may push; without it the registry is read-only. */
  htpasswd?: string;
  /** Refuse pushes even with users. */
  readOnly?: boolean;
  /** Require a user for pulls too (default: anonymous pull). */
  authenticatedPull?: boolean;
  /** Names this registry goes by (sea.hub): images named under them are found re-rooted. */
  siteNames?: string[];
  /** Pieces this process sends the agents at once (seed-queue.ts); a `serve` with workers shares SEED_SLOTS out. */
  seedSlots?: number;
  /** How long an agent's piece request waits for a slot before a 503. */
  seedWaitMs?: number;
}

/**
 * The OCI distribution API over the content store and its index. The HTTP layer only asks the
 * store and the index; it never builds a file path itself.
 */
export async function createRegistryApp(opts: RegistryOptions) {
  const store = await ContentStore.open(opts.storeRoot);
  const db = new IndexDb(opts.storeRoot);
  const manifests = new ManifestCache(store);
  const blobs = mappedBlobs(store);
  const seeding = new SeedQueue(opts.seedSlots ?? SEED_SLOTS, opts.seedWaitMs);
  const users = opts.htpasswd ? new Htpasswd(opts.htpasswd) : undefined;
  const logins = users && new Logins(users);
  const uploads = new UploadHandlers(store, db, (name) => {
    const r = resolveRepo(db, name, undefined, opts.siteNames);
    return 'repo' in r ? r.repo : undefined;
  });
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);

  app.use((_req, res, next) => {
    res.setHeader('Docker-Distribution-API-Version', 'registry/2.0');
    next();
  });
  app.use(observeRequests(opts.log));

  /**
   * Checks the request's user once (res.locals.user), throttling addresses that keep failing (one
   * count for every worker of a `serve`); answers the refusal itself.
   */
  const authenticate = async (req: Request, res: Response): Promise<boolean> => {
    if (res.locals.user) return true;
    const r = logins ? await logins.check(req.headers.authorization, req.socket.remoteAddress ?? '') : ({ refused: 'missing' } as const);
    if ('user' in r) {
      res.locals.user = r.user;
      return true;
    }
    req.resume();
    if (r.refused === 'throttled') {
      sendError(res, 'TOOMANYREQUESTS', 'too many failed logins from this address: wait a minute');
      return false;
    }
    res.setHeader('WWW-Authenticate', 'Basic realm="acpack"');
    sendError(res, 'UNAUTHORIZED', 'authentication required');
    return false;
  };

  // The peer cache's routes are reads, an announce included: a user only when pulls need one.
  app.use(async (req, res, next) => {
    if (!req.path.startsWith('/p2p/')) return next();
    if (opts.authenticatedPull && !(await authenticate(req, res))) return;
    next();
  }, p2pRoutes(store, db));

  // Writes need a user; reads need one only when anonymous pull is off.
  app.use(async (req, res, next) => {
    // An upload's status (GET) is part of a push: it needs the pusher, who owns the upload.
    const write = (req.method !== 'GET' && req.method !== 'HEAD') || UPLOAD_RE.test(req.path);
    if (!write && !opts.authenticatedPull) return next();
    if (write && (!users || opts.readOnly)) {
      req.resume();
      return sendError(res, 'UNSUPPORTED', opts.readOnly ? 'this registry is read-only' : 'pushing needs users: start the registry with --htpasswd FILE');
    }
    if (await authenticate(req, res)) next();
  });

  // Metrics are read like the images: anonymously unless pulls need a user (the middleware above).
  app.get('/metrics', metricsHandler);

  // With users, the version check answers 401 to a client without credentials: that is how docker,
  // skopeo and podman learn to send theirs (they decide at this ping). Anonymous pulls still work:
  // those clients go on without a user and their GETs are let through.
  app.get('/v2/', async (req, res) => {
    if (users && !(await authenticate(req, res))) return;
    res.type('application/json').send('{}');
  });

  app.get('/v2/_catalog', (req, res) => listCatalog(req, res, db.allRepos().map(catalogName)));

  app.all(/^\/v2\/.+/, async (req, res) => {
    const ns = typeof req.query.ns === 'string' ? req.query.ns : undefined;
    const up = UPLOAD_RE.exec(req.path);
    if (up) {
      const [, name, uuid] = up;
      if (!validName(name)) return sendError(res, 'NAME_INVALID', `invalid repository name "${name}"`);
      // An upload belongs to the repository the name means for pushing, and to its user.
      const who = { repo: pushRepo(db, name, ns, opts.siteNames), user: String(res.locals.user ?? '') };
      if (uuid === '' && req.method === 'POST') return uploads.start(req, res, name, who);
      switch (req.method) {
        case 'GET':
          return uploads.status(res, name, uuid, who);
        case 'PATCH':
          return uploads.patch(req, res, name, uuid, who);
        case 'PUT':
          return uploads.finish(req, res, name, uuid, who);
        case 'DELETE':
          return uploads.cancel(res, uuid, who);
      }
      return sendError(res, 'UNSUPPORTED', `${req.method} ${req.path} is not an upload operation`);
    }
    const m = ROUTE_RE.exec(req.path);
    if (!m) return sendError(res, 'UNSUPPORTED', `no such endpoint: ${req.method} ${req.path}`);
    const [, name, kind, rest] = m;
    if (!validName(name)) return sendError(res, 'NAME_INVALID', `invalid repository name "${name}"`);
    if (kind === 'manifests' && req.method === 'PUT') return uploads.putManifest(req, res, name, pushRepo(db, name, ns, opts.siteNames), rest);
    const read = req.method === 'GET' || req.method === 'HEAD';
    if (kind === 'manifests' && (read || req.method === 'DELETE') && !isManifestReference(rest)) return unknownReference(res, rest);
    const repo = resolveRepo(db, name, ns, opts.siteNames);
    if (kind === 'referrers' && read) return referrers(req, res, db, 'repo' in repo ? repo.repo : undefined, rest);
    if (kind === 'blobs' && 'error' in repo) return sendError(res, 'BLOB_UNKNOWN', `blob ${rest} is not in this registry: ${repo.error}`);
    if ('error' in repo) return sendError(res, 'NAME_UNKNOWN', repo.error);
    if (kind === 'manifests' && req.method === 'DELETE') return uploads.deleteManifest(res, repo.repo, rest);
    // A blob is served only under a repository it is linked to (pushed, mounted or imported there).
    if (kind === 'blobs' && req.method === 'DELETE') return uploads.deleteBlob(res, repo.repo, rest);
    if (kind === 'blobs' && read) {
      if (isDigest(rest) && !db.blobLinked(repo.repo, rest)) return sendError(res, 'BLOB_UNKNOWN', `blob ${rest} is not in ${name}`);
      if (req.method === 'HEAD' && isDigest(rest)) await store.touch(rest); // found: a push may be about to name it, gc spares it
      if (req.method === 'GET' && req.headers[PIECE_HEADER] !== undefined) return seeding.serve(res, () => getBlob(req, res, store, blobs, rest));
      return getBlob(req, res, store, blobs, rest);
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') return sendError(res, 'UNSUPPORTED', `${req.method} on ${kind} is not supported`);
    switch (kind) {
      case 'manifests':
        return getManifest(req, res, manifests, db, repo.repo, rest);
      case 'tags':
        if (rest !== 'list') return sendError(res, 'UNSUPPORTED', `no such endpoint: ${req.path}`);
        return listTags(req, res, db, repo.repo, name);
    }
  });

  app.use((_req: Request, res: Response) => sendError(res, 'UNSUPPORTED', 'not an OCI distribution endpoint'));
  // A failure inside a handler (a disk error) is a 500 in the spec's format, never a crash.
  app.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => {
    if (res.headersSent) return res.destroy();
    res.status(500).json({ errors: [{ code: 'UNKNOWN', message: (err as Error)?.message ?? String(err) }] });
  });
  return { app, store, db };
}

/**
 * GET /v2/<name>/referrers/<digest>: an image index, typed exactly `application/vnd.oci.image.index.v1+json`
 * (no charset). Never 404 (clients read a 404 as "no referrers API" and fall back to tags): a
 * repository or subject this registry does not hold has no referrers.
 */
function referrers(req: Request, res: Response, db: IndexDb, repo: string | undefined, digest: string): void {
  if (!isDigest(digest)) return sendError(res, 'DIGEST_INVALID', `"${digest}" is not a digest`);
  let manifests = repo ? db.referrers(repo, digest) : [];
  const artifactType = typeof req.query.artifactType === 'string' ? req.query.artifactType : undefined;
  if (artifactType) {
    manifests = manifests.filter((m) => m.artifactType === artifactType);
    res.setHeader('OCI-Filters-Applied', 'artifactType');
  }
  res.setHeader('Content-Type', MT.ociIndex);
  // A Buffer: express adds "; charset=utf-8" to a string body.
  res.send(Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MT.ociIndex, manifests })));
}

function resolveRepo(db: IndexDb, name: string, ns?: string, siteNames?: string[]): { repo: string } | { error: string } {
  for (const q of queriesFor(name, ns, siteNames)) {
    const repos = db.repos(q);
    if (repos.length === 1) return { repo: repos[0] };
    if (repos.length > 1) return { error: `"${name}" is ambiguous here (${repos.join(', ')}): ask for it host-prefixed, e.g. ${catalogName(repos[0])}` };
  }
  return { error: `repository "${name}"${ns ? ` of ${ns}` : ''} is not in this registry` };
}

/** The repository a push lands in: the one the name already means, else its upstream host, else ours. */
function pushRepo(db: IndexDb, name: string, ns?: string, siteNames?: string[]): string {
  const known = resolveRepo(db, name, ns, siteNames);
  if ('repo' in known) return known.repo;
  const exact = queriesFor(name, ns, siteNames).find((q) => q.kind === 'exact');
  return exact?.kind === 'exact' ? exact.repo : `${ARTIFACT_HOST}/${name}`;
}

export interface RunningRegistry {
  url: string;
  host: string;
  server: Server;
  close(): Promise<void>;
}

/** Starts the registry on `listen` (host:port; port 0 picks one), over TLS when given a certificate. */
export async function startRegistry(opts: RegistryOptions & { listen: string; tls?: { cert: string; key: string } }): Promise<RunningRegistry> {
  const i = opts.listen.lastIndexOf(':');
  const hostname = opts.listen.slice(0, i).replace(/^\[|\]$/g, '');
  const port = Number(opts.listen.slice(i + 1));
  if (i <= 0 || !/^\d+$/.test(opts.listen.slice(i + 1)) || port > 65535) {
    throw new AcpackError('BAD_ARGUMENT', `--listen "${opts.listen}" is not host:port (e.g. 0.0.0.0:5000, 127.0.0.1:0)`);
  }
  const { app, db } = await createRegistryApp(opts);
  const server = opts.tls ? createHttpsServer({ cert: opts.tls.cert, key: opts.tls.key }, app) : createServer(app);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) =>
        reject(['EADDRINUSE', 'EACCES', 'EADDRNOTAVAIL'].includes(err.code ?? '') ? new AcpackError('LISTEN', `cannot listen on ${opts.listen}: ${err.code}`) : err),
      );
      server.listen(port, hostname, resolve);
    });
  } catch (err) {
    db.close();
    throw err;
  }
  const addr = server.address() as { port: number };
  const host = `${hostname.includes(':') ? `[${hostname}]` : hostname}:${addr.port}`;
  return {
    url: `${opts.tls ? 'https' : 'http'}://${host}`,
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
