import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { open } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { request } from 'undici';
import { parsePlatform } from '../arch/platform.js';
import { isDigest, type Digest } from '../oci/digest.js';
import { AcpackError, formatBytes } from '../oci/errors.js';
import { drainedOrClosed, parseRange } from '../registry/pull.js';
import { HAVE_HEADER, type PeerAgent } from './agent.js';
import { Bitfield } from './bitfield.js';
import { pieceCount, pieceRange } from './pieces.js';
import { preheat } from './preheat.js';
import { PEER_BLOBS_PATH, PIECES_PATH, PREHEAT_PATH } from './protocol.js';

// The agent's two faces. For its own containerd (127.0.0.1): a pull-only OCI endpoint whose
// manifests and tags come from the site registry as they are, and whose blobs come through the
// peer cache. For peers (the node's cluster address): pieces, and what it has of a blob.

const BLOB_RE = /^\/v2\/(.+)\/blobs\/(sha256:[0-9a-f]{64})$/;
const MANIFEST_RE = /^\/v2\/(.+)\/(manifests|tags)\/([^/]+)$/;
const PIECE_RE = new RegExp(`^${PEER_BLOBS_PATH}(sha256:[0-9a-f]{64})/pieces/(\\d+)$`);
const PIECES_RE = new RegExp(`^${PIECES_PATH}(sha256:[0-9a-f]{64})$`);
const WHOLE_RE = new RegExp(`^${PEER_BLOBS_PATH}(sha256:[0-9a-f]{64})$`);
/** Pieces served to peers at once; more wait for the asker to try elsewhere (503). */
const UPLOAD_SLOTS = 8;

export function localServer(agent: PeerAgent): Server {
  return createServer((req, res) => {
    handleLocal(agent, req, res).catch((err) => fail(res, err));
  });
}

export function peerServer(agent: PeerAgent): Server {
  let uploads = 0;
  return createServer((req, res) => {
    if (req.method === 'GET' && req.url === '/metrics') return serveMetrics(agent, res);
    const piece = PIECE_RE.exec(req.url ?? '');
    const pieces = PIECES_RE.exec(req.url ?? '');
    const whole = WHOLE_RE.exec(req.url ?? '');
    if (req.method !== 'GET' || !(piece || pieces || whole)) return refuse(res, 404, 'a peer asks for pieces or whole blobs only');
    if (uploads >= UPLOAD_SLOTS) return refuse(res, 503, 'all upload slots are taken');
    uploads++;
    res.on('close', () => uploads--);
    const served = piece
      ? servePiece(agent, piece[1] as Digest, Number(piece[2]), res)
      : pieces
        ? servePieces(agent, pieces[1] as Digest, res)
        : serveWhole(agent, whole![1] as Digest, res);
    served.catch((err) => fail(res, err));
  });
}

/** The agent's counters for Prometheus, on both faces (a scraper reaches the node's address). */
function serveMetrics(agent: PeerAgent, res: ServerResponse): void {
  const { fromSeed, fromPeers, served, badPieces } = agent.stats;
  const metric = (name: string, help: string, lines: string[]) => [`# HELP ${name} ${help}`, `# TYPE ${name} counter`, ...lines];
  const text = [
    ...metric('acpack_agent_fetched_bytes_total', "Blob bytes this node's agent fetched and verified, by where they came from.", [
      `acpack_agent_fetched_bytes_total{from="registry"} ${fromSeed}`,
      `acpack_agent_fetched_bytes_total{from="peers"} ${fromPeers}`,
    ]),
    ...metric('acpack_agent_served_bytes_total', 'Piece bytes this agent served to its peers.', [`acpack_agent_served_bytes_total ${served}`]),
    ...metric('acpack_agent_bad_pieces_total', 'Pieces that did not match their hash (their peer shunned, the piece fetched again).', [`acpack_agent_bad_pieces_total ${badPieces}`]),
  ];
  res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' });
  res.end(`${text.join('\n')}\n`);
}

/** A blob's piece hashes and this node's bitfield of it, for a peer that cannot ask the registry. */
async function servePieces(agent: PeerAgent, digest: Digest, res: ServerResponse): Promise<void> {
  const known = await agent.piecesFor(digest);
  if (!known) return refuse(res, 404, `${digest} is not here`);
  res.writeHead(200, { 'content-type': 'application/json', [HAVE_HEADER]: known.have.toBase64() });
  res.end(JSON.stringify(known.answer));
}

/**
 * A whole blob this node verified, in one answer: for a node that has no agent yet, whose curl
 * takes acinstall's runtime from a peer rather than from the master (installer/runtime-sources.ts).
 */
async function serveWhole(agent: PeerAgent, digest: Digest, res: ServerResponse): Promise<void> {
  const size = await agent.store.whole(digest);
  if (size === undefined) return refuse(res, 404, `${digest} is not here whole`);
  const fh = await open(agent.store.wholePath(digest), 'r');
  try {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': size, 'docker-content-digest': digest });
    const stream = fh.createReadStream({ highWaterMark: 1 << 20, autoClose: false });
    stream.on('data', (chunk) => (agent.stats.served += chunk.length));
    await pipeline(stream, res);
  } finally {
    await fh.close();
  }
}

async function servePiece(agent: PeerAgent, digest: Digest, index: number, res: ServerResponse): Promise<void> {
  const partial = agent.inProgress(digest);
  let bytes: Buffer | undefined;
  if (partial) {
    res.setHeader(HAVE_HEADER, partial.have.toBase64());
    if (index < partial.pieces) bytes = await partial.read(index, agent.pool);
  } else {
    const size = await agent.store.whole(digest);
    if (size !== undefined) {
      const count = pieceCount(size);
      res.setHeader(HAVE_HEADER, Bitfield.full(count).toBase64());
      if (index < count) {
        const { start, end } = pieceRange(size, index);
        bytes = await readPooled(agent, agent.store.wholePath(digest), start, end).catch(() => undefined);
      }
    }
  }
  if (!bytes) return refuse(res, 404, `piece ${index} of ${digest} is not here`);
  agent.stats.served += bytes.length;
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': bytes.length });
  // Once the socket took it all ('finish'); a connection cut before leaves the buffer to the GC.
  res.end(bytes, () => agent.pool.give(bytes));
}

/** Bytes [start, end) of a file, in a pooled buffer. */
async function readPooled(agent: PeerAgent, path: string, start: number, end: number): Promise<Buffer> {
  const fh = await open(path, 'r');
  const bytes = agent.pool.take(end - start);
  try {
    const { bytesRead } = await fh.read(bytes, 0, bytes.length, start);
    if (bytesRead !== bytes.length) throw new AcpackError('SHORT_READ', `${path} ends before byte ${end}`);
    return bytes;
  } catch (err) {
    agent.pool.give(bytes);
    throw err;
  } finally {
    await fh.close();
  }
}

async function handleLocal(agent: PeerAgent, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://agent');
  if (url.pathname === PREHEAT_PATH && req.method === 'POST') return servePreheat(agent, req, res);
  const read = req.method === 'GET' || req.method === 'HEAD';
  if (!read) return refuse(res, 405, 'the agent only serves pulls');
  if (url.pathname === '/v2/' || url.pathname === '/v2') {
    res.writeHead(200, { 'content-type': 'application/json', 'docker-distribution-api-version': 'registry/2.0' });
    return void res.end('{}');
  }
  if (url.pathname === '/metrics') return serveMetrics(agent, res);
  if (url.pathname === '/p2p/v1/stats') {
    res.writeHead(200, { 'content-type': 'application/json' });
    return void res.end(JSON.stringify(agent.stats));
  }
  const blob = BLOB_RE.exec(url.pathname);
  if (blob && req.method === 'GET') return serveBlob(agent, blob[2] as Digest, `${url.pathname}${url.search}`, req, res);
  if (blob || MANIFEST_RE.test(url.pathname)) return passThrough(agent, `${url.pathname}${url.search}`, req, res);
  refuse(res, 404, `no such endpoint: ${url.pathname}`);
}

/** Most a preheat request's body may weigh: a few thousand image names. */
const MAX_PREHEAT_BODY = 1 << 20;

async function servePreheat(agent: PeerAgent, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const chunk of req) {
    n += (chunk as Buffer).length;
    if (n > MAX_PREHEAT_BODY) return refuse(res, 413, `a preheat request is at most ${MAX_PREHEAT_BODY} bytes`);
    chunks.push(chunk as Buffer);
  }
  let body: { images?: unknown; platform?: unknown };
  try {
    body = JSON.parse(Buffer.concat(chunks).toString());
  } catch {
    return refuse(res, 400, 'a preheat request is JSON: {"images": ["registry.k8s.io/pause:3.5"], "platform": "linux/amd64"}');
  }
  const { images, platform } = body;
  if (!Array.isArray(images) || !images.every((i) => typeof i === 'string') || typeof platform !== 'string') {
    return refuse(res, 400, 'a preheat request names "images" (a list of references) and "platform" (e.g. linux/amd64)');
  }
  try {
    parsePlatform(platform);
  } catch (err) {
    return refuse(res, 400, (err as Error).message);
  }
  const started = Date.now();
  const result = await preheat(agent, images, platform);
  const failed = result.failed.map((f) => `${f.image}: ${f.error}`).join('; ');
  agent.log(`preheat: ${result.blobs} layers of ${result.images} images (${formatBytes(result.bytes)}) in ${((Date.now() - started) / 1000).toFixed(1)} s${result.skipped ? `, ${result.skipped} left out (the cache holds no more)` : ''}${failed ? `; failed: ${failed}` : ''}`);
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify(result));
}

/** A blob for containerd: from this node's cache, else fetched through the peer cache and streamed as its pieces arrive. */
async function serveBlob(agent: PeerAgent, digest: Digest, path: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
  if (!isDigest(digest)) return refuse(res, 400, 'bad digest');
  let f;
  try {
    f = await agent.fetch(digest, path);
  } catch (err) {
    // 404, not 502: containerd's blob fetcher (1.6) goes on to the next host, the registry itself,
    // only after a 404, and fails the pull on any other status.
    agent.log(`${digest}: its pieces are not known (${(err as Error).message}); containerd goes on to the registry`);
    return refuse(res, 404, `the site registry cannot tell this blob's pieces (${(err as Error).message}): ask it directly`);
  }
  if (f === undefined) return passThrough(agent, path, req, res, digest);
  const size = f === 'whole' ? (await agent.store.whole(digest))! : f.partial.size;
  const range = parseRange(req.headers.range, size);
  if (range === 'unsatisfiable') return refuse(res, 416, `range ${req.headers.range} is outside the blob's ${size} bytes`);
  const { start, end } = range ?? { start: 0, end: size - 1 };
  const headers = { 'content-type': 'application/octet-stream', 'docker-content-digest': digest, 'content-length': size === 0 ? 0 : end - start + 1, 'accept-ranges': 'bytes' };
  res.writeHead(range ? 206 : 200, range ? { ...headers, 'content-range': `bytes ${start}-${end}/${size}` } : headers);
  if (size === 0) return void res.end();
  // Our own descriptor of the file: it stays readable when the finished blob is renamed meanwhile.
  const fh = await open(f === 'whole' ? agent.store.wholePath(digest) : f.partial.path, 'r');
  const stopReading = f === 'whole' ? undefined : agent.reading(f);
  try {
    const pieceSize = f === 'whole' ? size : f.partial.pieceSize;
    for (let at = start; at <= end && !res.destroyed; ) {
      if (f !== 'whole') await agent.pieceReady(f, Math.floor(at / pieceSize));
      const upto = Math.min(end + 1, (Math.floor(at / pieceSize) + 1) * pieceSize, at + agent.pool.size);
      const bytes = agent.pool.take(upto - at);
      const { bytesRead } = await fh.read(bytes, 0, bytes.length, at);
      if (bytesRead !== bytes.length) throw new AcpackError('SHORT_READ', `${digest} ended early at ${at + bytesRead}`);
      at = upto;
      // Given back once the socket took it (the callback), never while it may still be queued.
      if (!res.write(bytes, (err) => err || agent.pool.give(bytes))) await drainedOrClosed(res);
    }
    res.end();
  } finally {
    stopReading?.();
    await fh.close();
  }
}

/**
 * Manifests, tags and HEADs: the site registry's answer as it is (never from peers). A whole blob
 * passed through (PASS_THROUGH_BYTES or less) is kept too, once its digest is checked, for peers that need
 * it when the master is gone.
 */
async function passThrough(agent: PeerAgent, path: string, req: IncomingMessage, res: ServerResponse, blob?: Digest): Promise<void> {
  let r;
  try {
    r = await request(`${agent.o.registry}${path}`, {
      dispatcher: agent.registryClient,
      method: req.method as 'GET' | 'HEAD',
      headers: { ...(req.headers.accept ? { accept: req.headers.accept } : {}), ...(req.headers.range ? { range: req.headers.range } : {}) },
    });
  } catch (err) {
    // A blob answered 404 sends containerd on to the registry itself (see serveBlob); a manifest's
    // resolver goes on after any error status.
    return refuse(res, blob ? 404 : 502, `the site registry ${agent.o.registry} cannot be reached (${(err as Error).message}): only blobs already fetched can be served`);
  }
  const headers: Record<string, string> = {};
  for (const h of ['content-type', 'content-length', 'docker-content-digest', 'content-range', 'accept-ranges', 'www-authenticate', 'docker-distribution-api-version']) {
    const v = r.headers[h];
    if (typeof v === 'string') headers[h] = v;
  }
  res.writeHead(r.statusCode, headers);
  const size = Number(headers['content-length']);
  const keep = blob && r.statusCode === 200 && Number.isSafeInteger(size) && size > 0 ? await agent.store.writer(`pass-${blob}`, { digest: blob, size }).catch(() => undefined) : undefined;
  if (!keep) return pipeline(r.body, res);
  // Keeping is a bonus: a cache that cannot write (a full disk) stops keeping, never the pull.
  let keeping: typeof keep | undefined = keep;
  const drop = async (err: Error) => {
    const k = keeping;
    keeping = undefined;
    await k?.discard().catch(() => {});
    agent.log(`${blob}: not kept (${err.message})`);
  };
  try {
    for await (const chunk of r.body) {
      if (keeping) await keeping.write(chunk as Buffer).catch(drop);
      if (!res.write(chunk)) await drainedOrClosed(res);
      if (res.destroyed) throw new AcpackError('CLIENT_GONE', 'containerd went away before its end');
    }
    res.end();
    await keeping?.commit().catch(drop);
  } catch (err) {
    await drop(err as Error);
    if (!res.writableEnded) res.destroy();
  }
}

function refuse(res: ServerResponse, status: number, message: string): void {
  if (res.headersSent) return void res.destroy();
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ errors: [{ code: status === 404 ? 'NOT_FOUND' : 'UNAVAILABLE', message }] }));
}

function fail(res: ServerResponse, err: unknown): void {
  if (res.headersSent) return void res.destroy();
  refuse(res, 500, (err as Error)?.message ?? String(err));
}
