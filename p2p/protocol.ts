/**
 * The announce: what a node agent tells the tracker, and what the tracker answers, as JSON over
 * HTTP. Each announce carries the node's whole state (not a delta), so a tracker that restarted or
 * forgot a node learns everything back from the next one. The tracker is reachable by every node,
 * so everything is checked here before it touches the tracker's state: formats, sizes, bitfield
 * lengths against piece counts, and every count bounded.
 *
 * Request:  { node, addr, blobs: [{ digest, size, pieceSize?, have, downloading }], done: [{ digest, size, pieceSize? }], left, stopped?, bytes? }
 * Response: { interval, peers: [{ id, addr }], blobs: [{ have: [bitfield…], seed: [piece…] }] }
 *
 * `blobs` are the blobs the node is fetching (bitfields in base64, see bitfield.ts); `done` the
 * blobs it holds whole and serves, sent without bitfields so that a node seeding hundreds of blobs
 * still sends ~100 bytes per blob; `left` the bytes it still lacks over `blobs` (checked against
 * the bitfields); `stopped` an agent going away; `bytes` what its agent took from the registry and
 * from peers and served to peers since it started (for status and metrics, never for selection). `pieceSize` defaults to PIECE_SIZE. The response
 * names the peers chosen for this node once, and has one entry per blob of `blobs`, in that order:
 * `have` is aligned with `peers` ("*" the whole blob, "-" not in this blob's swarm, else the
 * bitfield; most peers hold a blob whole or not at all, so most entries are one character), and
 * `seed` the pieces the seed (the master) wants this node to fetch from it (super-seeding,
 * docs/p2p.md). Decoded, each blob gets its own list of PeerInfo.
 */
import { isIP } from 'node:net';
import { AcpackError } from '../oci/errors.js';
import { isDigest, type Digest } from '../oci/digest.js';
import { Bitfield, MAX_PIECES } from './bitfield.js';
import { checkPieceSize, hashesFit, PIECE_SIZE } from './pieces.js';

/** How often a node that is fetching announces, at most (the tracker stretches it for large sites, see Tracker). */
export const ANNOUNCE_INTERVAL_MS = 2_000;
/** How often a node that lacks nothing announces: it only keeps its place as a source. */
export const IDLE_ANNOUNCE_INTERVAL_MS = 30_000;
/** Bounds the interval a response may set, so a node never waits on a tracker's typo. */
export const MAX_ANNOUNCE_INTERVAL_MS = 300_000;
/** Peers in a response (over all its blobs). */
export const MAX_PEERS = 30;
/** Seed pieces per blob in a response. */
export const MAX_SEED_HINTS = 8;
/** Blobs fetched at once by one node; containerd fetches a few layers at a time. */
export const MAX_FETCHING_BLOBS = 256;
/** Blobs one node may say it holds whole. */
export const MAX_DONE_BLOBS = 4096;
/** The body size the HTTP layer should accept for an announce (a full one is ~0.5 MB). */
export const MAX_ANNOUNCE_BYTES = 1 << 20;

/**
 * GET: a blob's size, piece size and piece hashes (base64 of 32 bytes a piece), as a PiecesAnswer.
 * The registry answers it for every blob it holds; an agent for those it has (whole or in part), so
 * that with the master gone its peers can still fetch a blob they had not begun.
 */
export const PIECES_PATH = '/p2p/v1/pieces/';
/** On an agent's peer face: `<digest>/pieces/<index>`, one piece; `<digest>`, a blob it holds whole. */
export const PEER_BLOBS_PATH = '/p2p/v1/blobs/';
/**
 * POST on an agent's local face: `{"images": [...], "platform": "linux/arm64"}`; answers, once every
 * layer is whole or failed, with a PreheatResult (p2p/preheat.ts).
 */
export const PREHEAT_PATH = '/p2p/v1/preheat';
/** On an agent's ranged blob GET to the registry: it is a piece, which waits for a seed slot (registry/seed-queue.ts). */
export const PIECE_HEADER = 'x-acpack-piece';
/** The longest a piece request waits for a seed slot before the registry answers 503 (ask again). */
export const SEED_WAIT_MS = 60_000;

/** The most a PiecesAnswer can take: the hashes of MAX_PIECES pieces in base64, and room to spare. */
export const MAX_PIECES_ANSWER_BYTES = 16 << 20;

export interface PiecesAnswer {
  digest: Digest;
  size: number;
  pieceSize: number;
  hashes: string;
}

export interface BlobRef {
  digest: Digest;
  size: number;
  pieceSize: number;
}

export interface BlobProgress extends BlobRef {
  /** Verified pieces. */
  have: Bitfield;
  /** Pieces requested and not yet verified. */
  downloading: Bitfield;
}

export interface Announce {
  node: string;
  /** host:port where peers reach the node's agent. */
  addr: string;
  blobs: BlobProgress[];
  done: BlobRef[];
  left: number;
  stopped: boolean;
  bytes?: NodeBytes;
}

/** An agent's traffic since it started. */
export interface NodeBytes {
  fromSeed: number;
  fromPeers: number;
  served: number;
}

export interface PeerInfo {
  id: string;
  addr: string;
  have: Bitfield;
}

export interface BlobAnswer {
  digest: Digest;
  peers: PeerInfo[];
  /** Pieces to fetch from the seed (the master), rarest first. */
  seed: number[];
}

export interface AnnounceResponse {
  /** Milliseconds until the next announce. */
  interval: number;
  blobs: BlobAnswer[];
}

export type AnnounceWire = {
  node: string;
  addr: string;
  blobs: { digest: string; size: number; pieceSize?: number; have: string; downloading: string }[];
  done: { digest: string; size: number; pieceSize?: number }[];
  left: number;
  stopped?: true;
  bytes?: NodeBytes;
};

export type AnnounceResponseWire = {
  interval: number;
  peers: { id: string; addr: string }[];
  blobs: { have: string[]; seed: number[] }[];
};

const WHOLE = '*';
const ABSENT = '-';

/** The bytes still missing of a blob that has `have`. */
export function bytesLeft(ref: BlobRef, have: Bitfield): number {
  const pieces = have.length;
  const missing = pieces - have.count;
  if (missing === 0) return 0;
  // Every missing piece is whole but the last one, which is short.
  const lastShortBy = pieces * ref.pieceSize - ref.size;
  return missing * ref.pieceSize - (have.has(pieces - 1) ? 0 : lastShortBy);
}

export function encodeAnnounce(a: Announce): AnnounceWire {
  const wire: AnnounceWire = {
    node: a.node,
    addr: a.addr,
    blobs: a.blobs.map((b) => ({ digest: b.digest, size: b.size, ...pieceSizeField(b), have: b.have.toBase64(), downloading: b.downloading.toBase64() })),
    done: a.done.map((b) => ({ digest: b.digest, size: b.size, ...pieceSizeField(b) })),
    left: a.left,
  };
  if (a.stopped) wire.stopped = true;
  if (a.bytes) wire.bytes = { fromSeed: a.bytes.fromSeed, fromPeers: a.bytes.fromPeers, served: a.bytes.served };
  return wire;
}

function pieceSizeField(b: BlobRef): { pieceSize?: number } {
  return b.pieceSize === PIECE_SIZE ? {} : { pieceSize: b.pieceSize };
}

export function encodeResponse(r: AnnounceResponse): AnnounceResponseWire {
  const peers: { id: string; addr: string }[] = [];
  const index = new Map<string, number>();
  for (const b of r.blobs) {
    for (const p of b.peers) {
      if (index.has(p.id)) continue;
      index.set(p.id, peers.length);
      peers.push({ id: p.id, addr: p.addr });
    }
  }
  if (peers.length > MAX_PEERS) throw new AcpackError('TOO_MANY_PEERS', `a response names ${peers.length} peers, more than ${MAX_PEERS}`);
  return {
    interval: r.interval,
    peers,
    blobs: r.blobs.map((b) => {
      const have = peers.map(() => ABSENT);
      for (const p of b.peers) have[index.get(p.id)!] = p.have.isFull && p.have.length > 0 ? WHOLE : p.have.toBase64();
      return { have, seed: b.seed };
    }),
  };
}

function bad(message: string): never {
  throw new AcpackError('BAD_ANNOUNCE', message);
}

type Obj = Record<string, unknown>;

function object(v: unknown, where: string, required: string[], optional: string[] = []): Obj {
  if (!v || typeof v !== 'object' || Array.isArray(v)) bad(`${where} is not an object`);
  const o = v as Obj;
  for (const k of Object.keys(o)) if (!required.includes(k) && !optional.includes(k)) bad(`${where} has an unknown field "${k}"`);
  for (const k of required) if (!(k in o)) bad(`${where} lacks "${k}"`);
  return o;
}

function array(v: unknown, where: string, max: number): unknown[] {
  if (!Array.isArray(v)) bad(`${where} is not an array`);
  if (v.length > max) bad(`${where} has ${v.length} entries, more than ${max}`);
  return v;
}

function integer(v: unknown, where: string, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) bad(`${where} is not an integer from ${min} to ${max}`);
  return v;
}

const NODE_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
const HOSTNAME_RE = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

export function checkNodeId(v: unknown, where = 'node'): string {
  if (typeof v !== 'string' || !NODE_ID_RE.test(v)) bad(`${where} is not a node id (1 to 63 letters, digits, ".", "_", "-")`);
  return v;
}

/** host:port with an IPv4 address, a bracketed IPv6 address or a host name, and a port from 1 to 65535. */
export function checkPeerAddress(v: unknown, where = 'addr'): string {
  const m = typeof v === 'string' ? /^(\[[^\]]+\]|[^:[\]]+):(\d{1,5})$/.exec(v) : null;
  const host = m?.[1] ?? '';
  const port = Number(m?.[2]);
  const hostOk = host.startsWith('[') ? isIP(host.slice(1, -1)) === 6 : isIP(host) === 4 || (HOSTNAME_RE.test(host) && !/^[\d.]+$/.test(host));
  if (!m || !hostOk || port < 1 || port > 65535) bad(`${where} "${String(v).slice(0, 80)}" is not host:port (IPv4, [IPv6] or a host name, port 1-65535)`);
  return v as string;
}

/** A PiecesAnswer for `digest` (from the registry or a peer), checked: its hashes fit its size. */
export function parsePiecesAnswer(body: unknown, digest: Digest): BlobRef & { hashes: Buffer } {
  const o = object(body, 'the pieces answer', ['digest', 'size', 'pieceSize', 'hashes']);
  if (o.digest !== digest) bad(`the pieces answer is for ${String(o.digest).slice(0, 80)}, not ${digest}`);
  const ref = blobRef(o, 'the pieces answer');
  const hashes = typeof o.hashes === 'string' ? Buffer.from(o.hashes, 'base64') : undefined;
  if (!hashes || !hashesFit(hashes, ref.size, ref.pieceSize)) bad(`the piece hashes for ${digest} do not fit its ${ref.size} bytes`);
  return { ...ref, hashes };
}

function blobRef(o: Obj, where: string): BlobRef {
  if (typeof o.digest !== 'string' || !isDigest(o.digest)) bad(`${where}.digest is not a sha256 digest`);
  const pieceSize = o.pieceSize === undefined ? PIECE_SIZE : integer(o.pieceSize, `${where}.pieceSize`, 1, Number.MAX_SAFE_INTEGER);
  try {
    checkPieceSize(pieceSize);
  } catch (e) {
    bad(`${where}.pieceSize: ${(e as Error).message}`);
  }
  // A zero-byte blob has no pieces and nothing to share; the registry serves it.
  const size = integer(o.size, `${where}.size`, 1, MAX_PIECES * pieceSize);
  return { digest: o.digest, size, pieceSize };
}

function bitfield(v: unknown, pieces: number, where: string): Bitfield {
  if (typeof v !== 'string') bad(`${where} is not a base64 string`);
  try {
    return Bitfield.fromBase64(v, pieces);
  } catch (e) {
    bad(`${where}: ${(e as Error).message}`);
  }
}

/** Checks a decoded announce body and turns it into an Announce, or throws BAD_ANNOUNCE naming the first fault. */
export function parseAnnounce(body: unknown): Announce {
  const o = object(body, 'the announce', ['node', 'addr', 'blobs', 'done', 'left'], ['stopped', 'bytes']);
  const node = checkNodeId(o.node);
  const addr = checkPeerAddress(o.addr);
  const seen = new Set<string>();
  const blobs = array(o.blobs, 'blobs', MAX_FETCHING_BLOBS).map((v, i): BlobProgress => {
    const where = `blobs[${i}]`;
    const b = object(v, where, ['digest', 'size', 'have', 'downloading'], ['pieceSize']);
    const ref = blobRef(b, where);
    if (seen.has(ref.digest)) bad(`${where}: ${ref.digest} is listed twice`);
    seen.add(ref.digest);
    const pieces = Math.ceil(ref.size / ref.pieceSize);
    const have = bitfield(b.have, pieces, `${where}.have`);
    const downloading = bitfield(b.downloading, pieces, `${where}.downloading`);
    if (have.intersects(downloading)) bad(`${where}: a piece is both had and being downloaded`);
    return { ...ref, have, downloading };
  });
  const done = array(o.done, 'done', MAX_DONE_BLOBS).map((v, i): BlobRef => {
    const ref = blobRef(object(v, `done[${i}]`, ['digest', 'size'], ['pieceSize']), `done[${i}]`);
    if (seen.has(ref.digest)) bad(`done[${i}]: ${ref.digest} is listed twice`);
    seen.add(ref.digest);
    return ref;
  });
  const left = integer(o.left, 'left', 0, Number.MAX_SAFE_INTEGER);
  const counted = blobs.reduce((sum, b) => sum + bytesLeft(b, b.have), 0);
  if (left !== counted) bad(`left is ${left} but the bitfields leave ${counted} bytes`);
  if (o.stopped !== undefined && o.stopped !== true) bad('stopped is not true');
  let bytes: NodeBytes | undefined;
  if (o.bytes !== undefined) {
    const b = object(o.bytes, 'bytes', ['fromSeed', 'fromPeers', 'served']);
    bytes = { fromSeed: integer(b.fromSeed, 'bytes.fromSeed', 0, Number.MAX_SAFE_INTEGER), fromPeers: integer(b.fromPeers, 'bytes.fromPeers', 0, Number.MAX_SAFE_INTEGER), served: integer(b.served, 'bytes.served', 0, Number.MAX_SAFE_INTEGER) };
  }
  return { node, addr, blobs, done, left, stopped: o.stopped === true, ...(bytes ? { bytes } : {}) };
}

/**
 * Checks a tracker's answer on the node's side: one entry per blob announced, in order, peers and
 * hints bounded and their bitfields of the right length. `pieces` gives each announced blob's count.
 */
export function parseAnnounceResponse(body: unknown, announced: { digest: Digest; pieces: number }[]): AnnounceResponse {
  const o = object(body, 'the announce response', ['interval', 'peers', 'blobs']);
  const interval = integer(o.interval, 'interval', 100, MAX_ANNOUNCE_INTERVAL_MS);
  const seen = new Set<string>();
  const peers = array(o.peers, 'peers', MAX_PEERS).map((p, j) => {
    const po = object(p, `peers[${j}]`, ['id', 'addr']);
    const id = checkNodeId(po.id, `peers[${j}].id`);
    if (seen.has(id)) bad(`peers[${j}]: ${id} is listed twice`);
    seen.add(id);
    return { id, addr: checkPeerAddress(po.addr, `peers[${j}].addr`) };
  });
  const list = array(o.blobs, 'blobs', MAX_FETCHING_BLOBS);
  if (list.length !== announced.length) bad(`the response answers ${list.length} blobs, ${announced.length} were announced`);
  const blobs = list.map((v, i): BlobAnswer => {
    const where = `blobs[${i}]`;
    const b = object(v, where, ['have', 'seed']);
    const { digest, pieces } = announced[i];
    const have = array(b.have, `${where}.have`, MAX_PEERS);
    if (have.length !== peers.length) bad(`${where}.have has ${have.length} entries for ${peers.length} peers`);
    const blobPeers: PeerInfo[] = [];
    have.forEach((h, j) => {
      if (h === ABSENT) return;
      const bits = h === WHOLE ? Bitfield.full(pieces) : bitfield(h, pieces, `${where}.have[${j}]`);
      blobPeers.push({ ...peers[j], have: bits });
    });
    const seed = array(b.seed, `${where}.seed`, MAX_SEED_HINTS).map((p, j) => integer(p, `${where}.seed[${j}]`, 0, pieces - 1));
    return { digest, peers: blobPeers, seed };
  });
  return { interval, blobs };
}
