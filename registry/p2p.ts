import cluster from 'node:cluster';
import { randomUUID } from 'node:crypto';
import { isIP } from 'node:net';
import express, { type Request, type Response, type Router } from 'express';
import { isDigest, type Digest } from '../oci/digest.js';
import { AcpackError } from '../oci/errors.js';
import type { ContentStore } from '../oci/store.js';
import { PIECE_SIZE, pieceHashesOfFile } from '../p2p/pieces.js';
import { MAX_ANNOUNCE_BYTES, PIECES_PATH, type AnnounceResponseWire, type PiecesAnswer } from '../p2p/protocol.js';
import { Tracker, type NodeView } from '../p2p/tracker.js';
import type { IndexDb } from './index-db.js';
import { sendError } from './errors.js';

// The site registry's side of the peer cache (docs/p2p.md): each blob's piece hashes, and the one
// tracker every node's agent announces to. Both are read like images: anonymous unless pulls need a user.

/** POST: an agent's announce (p2p/protocol.ts). */
export const ANNOUNCE_PATH = '/p2p/v1/announce';
/** GET: the nodes the tracker follows, with their agents' traffic. */
export const NODES_PATH = '/p2p/v1/nodes';

export function p2pRoutes(store: ContentStore, db: IndexDb, tracker: TrackerService = trackerService()): Router {
  const router = express.Router();
  const computing = new Map<Digest, Promise<{ pieceSize: number; hashes: Buffer }>>();

  /**
   * Recorded at import or push; a blob from before gets them now, once per process at a time, and
   * so does one recorded at another piece size (an older release's 4 MiB): agents announce the
   * blobs they hold whole at PIECE_SIZE, and a swarm has one piece size.
   */
  const piecesOf = (digest: Digest, size: number) => {
    const known = db.pieces(digest);
    if (known?.pieceSize === PIECE_SIZE) return Promise.resolve(known);
    let p = computing.get(digest);
    if (!p) {
      p = pieceHashesOfFile(store.path(digest), PIECE_SIZE, size)
        .then(({ hashes }) => {
          db.recordPieces(digest, PIECE_SIZE, hashes);
          return { pieceSize: PIECE_SIZE, hashes };
        })
        .finally(() => computing.delete(digest));
      computing.set(digest, p);
    }
    return p;
  };

  router.get(`${PIECES_PATH}:digest`, async (req: Request, res: Response) => {
    const digest = String(req.params.digest);
    if (!isDigest(digest)) return sendError(res, 'DIGEST_INVALID', `"${digest}" is not a valid digest`);
    const size = await store.size(digest);
    if (size === undefined) return sendError(res, 'BLOB_UNKNOWN', `blob ${digest} is not in this registry`);
    const { pieceSize, hashes } = await piecesOf(digest, size);
    const answer: PiecesAnswer = { digest, size, pieceSize, hashes: hashes.toString('base64') };
    res.json(answer);
  });

  // Each node's agent traffic as it last announced it (acinstall status shows it).
  router.get(NODES_PATH, async (_req: Request, res: Response) => {
    res.json(await tracker.nodes());
  });

  router.post(ANNOUNCE_PATH, express.json({ limit: MAX_ANNOUNCE_BYTES, type: () => true }), async (req: Request, res: Response) => {
    const source = plainAddress(req.socket.remoteAddress ?? '');
    // Peers will connect to the address an announce names: only a node's own, never one it makes up.
    const addr = (req.body as { addr?: unknown })?.addr;
    if (typeof addr !== 'string' || hostOf(addr) !== source) {
      return refuse(res, 400, 'BAD_ANNOUNCE', `an announce names its sender's own address (${source}:PORT), not ${JSON.stringify(addr)}`);
    }
    try {
      res.json(await tracker.announce(req.body));
    } catch (err) {
      if (err instanceof AcpackError && err.code === 'BAD_ANNOUNCE') return refuse(res, 400, err.code, err.message);
      if (err instanceof AcpackError && err.code === 'TRACKER_DOWN') return refuse(res, 503, err.code, err.message);
      throw err;
    }
  });
  return router;
}

/** The peer cache's own errors, in the registry's error format. */
function refuse(res: Response, status: number, code: string, message: string): void {
  res.status(status).json({ errors: [{ code, message }] });
}

/** `::ffff:10.0.0.1` (an IPv4 client on a dual-stack socket) as `10.0.0.1`. */
function plainAddress(a: string): string {
  return a.startsWith('::ffff:') && isIP(a.slice(7)) === 4 ? a.slice(7) : a;
}

function hostOf(addr: string): string {
  const m = /^\[([^\]]+)\]:\d+$/.exec(addr) ?? /^([^:]+):\d+$/.exec(addr);
  return m ? m[1] : '';
}

/** Where announces go: the one tracker of this `serve`, in this process or (a worker) in the primary. */
export interface TrackerService {
  announce(body: unknown): Promise<AnnounceResponseWire>;
  nodes(): Promise<NodeView[]>;
}

class LocalTracker implements TrackerService {
  constructor(readonly tracker = new Tracker()) {}

  async announce(body: unknown): Promise<AnnounceResponseWire> {
    return this.tracker.handle(body, Date.now());
  }

  async nodes(): Promise<NodeView[]> {
    return this.tracker.nodeViews();
  }
}

type TrackerMessage =
  | { type: 'acpack:announce'; id: string; body: unknown }
  | { type: 'acpack:nodes'; id: string }
  | { type: 'acpack:announced'; id: string; answer?: unknown; error?: { code: string; message: string } };

/** In a worker: the primary holds the tracker (a message round trip per announce). */
class PrimaryTracker implements TrackerService {
  private readonly waiting = new Map<string, (m: Extract<TrackerMessage, { type: 'acpack:announced' }>) => void>();

  constructor(private readonly timeoutMs = 5000) {
    process.on('message', (m: TrackerMessage) => {
      if (m?.type === 'acpack:announced') this.waiting.get(m.id)?.(m);
    });
  }

  announce(body: unknown): Promise<AnnounceResponseWire> {
    return this.ask((id) => ({ type: 'acpack:announce', id, body })) as Promise<AnnounceResponseWire>;
  }

  nodes(): Promise<NodeView[]> {
    return this.ask((id) => ({ type: 'acpack:nodes', id })) as Promise<NodeView[]>;
  }

  private ask(message: (id: string) => TrackerMessage): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const id = randomUUID();
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        reject(new AcpackError('TRACKER_DOWN', 'the tracker (in the registry\'s primary process) did not answer'));
      }, this.timeoutMs);
      this.waiting.set(id, (m) => {
        clearTimeout(timer);
        this.waiting.delete(id);
        if (m.error) reject(new AcpackError(m.error.code, m.error.message));
        else resolve(m.answer);
      });
      process.send!(message(id));
    });
  }
}

/** This process's way to the tracker: a `serve` worker's goes to the primary (see serveTracker). */
export function trackerService(): TrackerService {
  return cluster.isWorker ? new PrimaryTracker() : new LocalTracker();
}

/** In the primary of a `serve` with workers: the one tracker for all of them. */
export function serveTracker(tracker = new Tracker()): void {
  const local = new LocalTracker(tracker);
  cluster.on('message', (worker, m: TrackerMessage) => {
    if (m?.type !== 'acpack:announce' && m?.type !== 'acpack:nodes') return;
    (m.type === 'acpack:announce' ? local.announce(m.body) : local.nodes()).then(
      (answer) => worker.isConnected() && worker.send({ type: 'acpack:announced', id: m.id, answer } satisfies TrackerMessage),
      (err: Error) => worker.isConnected() && worker.send({ type: 'acpack:announced', id: m.id, error: { code: (err as AcpackError).code ?? 'INTERNAL', message: err.message } } satisfies TrackerMessage),
    );
  });
}
