import { isIP } from 'node:net';
import { Agent as HttpAgent, request, type Dispatcher } from 'undici';
import type { Digest } from '../oci/digest.js';
import { AcpackError, formatBytes } from '../oci/errors.js';
import { Bitfield } from './bitfield.js';
import { PieceStore, type PartialBlob } from './piece-store.js';
import { PIECE_SIZE, pieceCount, pieceRange } from './pieces.js';
import { ANNOUNCE_INTERVAL_MS, bytesLeft, encodeAnnounce, MAX_DONE_BLOBS, parseAnnounceResponse, type AnnounceWire } from './protocol.js';
import { PiecePicker, type PieceRequest } from './selection.js';

/** The picker's name for the site registry, the seed that has every piece. */
export const SEED = 'seed';
/** Where a peer asks an agent for one piece: `/p2p/v1/blobs/<digest>/pieces/<index>`. */
export const PEER_PIECE_PATH = '/p2p/v1/blobs/';
/** The soonest a node with a stalled blob asks the tracker again. */
const STALLED_ANNOUNCE_MS = 300;
/** The header carrying the serving agent's bitfield of that blob (base64). */
export const HAVE_HEADER = 'x-acpack-have';

export interface AgentOptions {
  /** The site registry: `https://10.0.0.1:5000`. */
  registry: string;
  /** The registry's CA (PEM), when it serves TLS with the site CA. */
  ca?: string;
  /** Where pieces and whole blobs are kept (PieceStore). */
  dir: string;
  /** Whole blobs kept for peers, in bytes. */
  maxBytes: number;
  /** host:port where peers reach this agent. */
  peerAddr: string;
  log?: (line: string) => void;
}

export interface AgentStats {
  fromSeed: number;
  fromPeers: number;
  served: number;
  badPieces: number;
}

interface Fetch {
  partial: PartialBlob;
  /** The registry path that serves this blob (the repository containerd asked under), for the seed's pieces. */
  seedPath: string;
  waiters: Map<number, (() => void)[]>;
  done: Promise<void>;
  settle: (err?: Error) => void;
}

/**
 * A node's peer-cache agent: fetches the blobs its containerd asks for piece by piece, from peers
 * first and from the site registry (the seed) for what the tracker hands it or no peer has, checks
 * every piece against its hash and the whole blob against its digest, and serves what it has to
 * its peers meanwhile. Manifests never come from peers (see agent-server.ts).
 */
export class PeerAgent {
  readonly stats: AgentStats = { fromSeed: 0, fromPeers: 0, served: 0, badPieces: 0 };
  private readonly picker = new PiecePicker(SEED);
  private readonly fetching = new Map<Digest, Fetch>();
  private readonly starting = new Map<Digest, Promise<Fetch | 'whole' | undefined>>();
  /** Blobs whose every piece is here, being checked whole and moved in place. */
  private readonly finishing = new Map<Digest, Promise<void>>();
  /** Peer id → its address, from the tracker's answers. */
  private readonly peers = new Map<string, string>();
  private readonly http: Dispatcher;
  private announceTimer: NodeJS.Timeout | undefined;
  private announceAt = 0;
  private pumpTimer: NodeJS.Timeout | undefined;
  private announcing: Promise<void> | undefined;
  private interval = ANNOUNCE_INTERVAL_MS;
  private stopped = false;
  readonly log: (line: string) => void;
  /** Its id at the tracker: its peer address, spelt as an id may be (`10.0.0.2_5001`). */
  readonly id: string;

  private constructor(
    readonly o: AgentOptions,
    readonly store: PieceStore,
  ) {
    this.log = o.log ?? (() => {});
    this.id = o.peerAddr.replace(/[^A-Za-z0-9._-]/g, '_');
    // Outgoing connections leave from the peer address: the tracker takes an announce only from the
    // address it names, and on a node with two NICs the route to the master may pick the other one.
    const localAddress = o.peerAddr.slice(0, o.peerAddr.lastIndexOf(':')).replace(/^\[|\]$/g, '');
    this.http = new HttpAgent({ connect: { ...(o.ca ? { ca: o.ca } : {}), ...(isIP(localAddress) ? { localAddress } : {}) }, headersTimeout: 15_000, bodyTimeout: 60_000, connections: 32 });
  }

  static async start(o: AgentOptions): Promise<PeerAgent> {
    const agent = new PeerAgent(o, await PieceStore.open(o.dir, o.maxBytes));
    agent.scheduleAnnounce(0);
    return agent;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.announceTimer);
    clearInterval(this.pumpTimer);
    // Tell the tracker, briefly: peers stop asking a node that is going away.
    await this.post({ node: this.id, addr: this.o.peerAddr, blobs: [], done: [], left: 0, stopped: true }).catch(() => {});
    for (const f of this.fetching.values()) await f.partial.close();
    await this.http.close();
  }

  /** The blob being fetched, if it is (for a peer's request or a containerd pull in progress). */
  inProgress(digest: Digest): PartialBlob | undefined {
    return this.fetching.get(digest)?.partial;
  }

  /**
   * Starts (or joins) the fetch of `digest`, which the registry serves at `seedPath`; resolves once
   * its pieces are known. 'whole': it is here already. undefined: the registry has no pieces for it
   * (an older registry, or no such blob) or it is one piece at most: the caller serves the
   * registry's answer instead.
   */
  fetch(digest: Digest, seedPath: string): Promise<Fetch | 'whole' | undefined> {
    const running = this.fetching.get(digest);
    if (running) return Promise.resolve(running);
    // containerd may ask twice at once (a retry, two images sharing a layer): one start for both.
    let start = this.starting.get(digest);
    if (!start) {
      start = this.begin(digest, seedPath).finally(() => this.starting.delete(digest));
      this.starting.set(digest, start);
    }
    return start;
  }

  private async begin(digest: Digest, seedPath: string): Promise<Fetch | 'whole' | undefined> {
    await this.finishing.get(digest)?.catch(() => {});
    if ((await this.store.whole(digest)) !== undefined) return 'whole';
    const info = await this.registryJson<{ size: number; pieceSize: number; hashes: string }>(`/p2p/v1/pieces/${digest}`);
    // One piece or less (configs, small layers, most binaries): one request to the registry costs
    // less than the announces that would find it a peer.
    if (!info || info.size <= info.pieceSize) return undefined;
    const hashes = Buffer.from(info.hashes, 'base64');
    if (hashes.length !== pieceCount(info.size, info.pieceSize) * 32) throw new AcpackError('BAD_PIECES', `the registry's piece hashes for ${digest} do not fit its size`);
    const partial = await this.store.partial(digest, info.size, info.pieceSize, hashes);
    let settle!: (err?: Error) => void;
    const done = new Promise<void>((resolve, reject) => (settle = (err) => (err ? reject(err) : resolve())));
    done.catch(() => {}); // a waiter may never come
    const f: Fetch = { partial, seedPath, waiters: new Map(), done, settle };
    this.fetching.set(digest, f);
    this.picker.addBlob(digest, partial.pieces, partial.have);
    if (partial.have.isFull) void this.finish(f);
    this.pumpTimer ??= setInterval(() => this.pump(), 250);
    this.scheduleAnnounce(20); // learn the peers and the seed's hints now, not at the next interval
    return f;
  }

  /** Resolves once piece `index` of a fetch is verified and written. */
  pieceReady(f: Fetch, index: number): Promise<void> {
    if (f.partial.have.has(index)) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const list = f.waiters.get(index) ?? [];
      list.push(resolve);
      f.waiters.set(index, list);
      f.done.catch(reject);
    });
  }

  private pump(): void {
    if (this.stopped) return;
    for (const req of this.picker.next(Date.now())) {
      this.request(req).catch((err: Error) => this.log(`piece ${req.piece} of ${req.digest}: ${err.message}`));
    }
    // A blob with nothing asked for has no piece it may take: ask the tracker again soon (a peer may
    // have finished the piece it waits for) rather than at the next interval.
    const stalled = [...this.fetching.keys()].some((d) => this.picker.downloading(d).isEmpty && !this.picker.complete(d));
    if (stalled && !this.announcing) this.scheduleAnnounceWithin(Math.max(STALLED_ANNOUNCE_MS, this.interval / 4));
  }

  private async request(req: PieceRequest): Promise<void> {
    const f = this.fetching.get(req.digest);
    if (!f) return;
    const now = () => Date.now();
    let bytes: Buffer;
    try {
      bytes = req.peer === SEED ? await this.fromSeed(f, req.piece) : await this.fromPeer(req, f);
    } catch (err) {
      // The blob finished meanwhile (another copy of this piece won): nothing to release.
      if (this.fetching.get(req.digest) !== f) return;
      const e = err as AcpackError;
      if (e.code === 'PEER_BUSY') this.picker.busy(req, now());
      else if (e.code === 'PEER_LACKS') this.picker.failed(req, true);
      else if (req.peer === SEED) {
        this.picker.failed(req);
        this.log(`piece ${req.piece} of ${req.digest} from the registry failed: ${e.message}`);
      } else {
        this.picker.peerDead(req.peer, now());
        this.log(`peer ${req.peer} failed (${e.message}): its pieces are fetched elsewhere`);
      }
      return this.pump();
    }
    if (this.fetching.get(req.digest) !== f) return;
    const put = await f.partial.put(req.piece, bytes);
    if (this.fetching.get(req.digest) !== f) return;
    if (put === 'bad') {
      this.stats.badPieces++;
      this.picker.rejected(req);
      this.log(
        req.peer === SEED
          ? `piece ${req.piece} of ${req.digest} from the registry does not match its hash: fetched again`
          : `peer ${req.peer} served piece ${req.piece} of ${req.digest} with bytes that do not match its hash: shunned for this run, the piece fetched again`,
      );
      return this.pump();
    }
    if (put === 'had') return; // an endgame copy that came second
    if (req.peer === SEED) this.stats.fromSeed += bytes.length;
    else this.stats.fromPeers += bytes.length;
    this.picker.received(req);
    for (const wake of f.waiters.get(req.piece) ?? []) wake();
    f.waiters.delete(req.piece);
    if (f.partial.have.isFull) await this.finish(f);
    this.pump();
  }

  private async finish(f: Fetch): Promise<void> {
    const digest = f.partial.digest;
    if (!this.fetching.has(digest)) return;
    this.fetching.delete(digest);
    this.picker.removeBlob(digest);
    // Until the whole blob is checked and in place, a new ask waits for it (begin) rather than
    // finding neither a fetch nor a whole blob and fetching it all again.
    const finishing = f.partial.finish();
    this.finishing.set(digest, finishing);
    try {
      await finishing;
      f.settle();
      this.scheduleAnnounce(20); // peers learn at once that this node has the whole blob
    } catch (err) {
      this.log((err as Error).message);
      f.settle(err as Error);
    } finally {
      this.finishing.delete(digest);
    }
    if (this.fetching.size === 0) {
      clearInterval(this.pumpTimer);
      this.pumpTimer = undefined;
    }
  }

  private async fromSeed(f: Fetch, index: number): Promise<Buffer> {
    const { start, end } = pieceRange(f.partial.size, index, f.partial.pieceSize);
    const r = await request(`${this.o.registry}${f.seedPath}`, { dispatcher: this.http, headers: { range: `bytes=${start}-${end - 1}` }, maxRedirections: 0 } as Parameters<typeof request>[1]);
    const body = Buffer.from(await r.body.arrayBuffer());
    if (r.statusCode !== 206 && !(r.statusCode === 200 && start === 0 && end === f.partial.size)) throw new AcpackError('SEED_FAILED', `the registry answered ${r.statusCode}`);
    return body;
  }

  private async fromPeer(req: PieceRequest, f: Fetch): Promise<Buffer> {
    const addr = this.peers.get(req.peer) ?? req.peer;
    const r = await request(`http://${addr}${PEER_PIECE_PATH}${req.digest}/pieces/${req.piece}`, { dispatcher: this.http });
    const body = Buffer.from(await r.body.arrayBuffer());
    const have = r.headers[HAVE_HEADER];
    if (typeof have === 'string') {
      try {
        this.picker.updatePeer(req.digest, req.peer, Bitfield.fromBase64(have, f.partial.pieces));
      } catch {
        // a bitfield that does not fit: the tracker's view of that peer stays
      }
    }
    if (r.statusCode === 503) throw new AcpackError('PEER_BUSY', 'busy');
    if (r.statusCode === 404) throw new AcpackError('PEER_LACKS', 'does not have it');
    if (r.statusCode !== 200) throw new AcpackError('PEER_FAILED', `answered ${r.statusCode}`);
    return body;
  }

  private scheduleAnnounce(ms: number): void {
    if (this.stopped) return;
    clearTimeout(this.announceTimer);
    this.announceAt = Date.now() + ms;
    this.announceTimer = setTimeout(() => void this.announce(), ms);
  }

  /** Brings the next announce forward to within `ms`, never back. */
  private scheduleAnnounceWithin(ms: number): void {
    if (this.announceAt > Date.now() + ms) this.scheduleAnnounce(ms);
  }

  private async announce(): Promise<void> {
    if (this.announcing) return this.announcing;
    this.announcing = (async () => {
      try {
        const done = (await this.store.wholeBlobs()).slice(0, MAX_DONE_BLOBS).map((b) => ({ ...b, pieceSize: PIECE_SIZE }));
        // Taken after the await: a fetch that finished meanwhile is among `done`, not here.
        const fetching = [...this.fetching.values()];
        const blobs = fetching.map((f) => {
          const { digest, size, pieceSize } = f.partial;
          return { digest, size, pieceSize, have: this.picker.have(digest).copy(), downloading: this.picker.downloading(digest) };
        });
        const left = blobs.reduce((n, b) => n + bytesLeft(b, b.have), 0);
        const { fromSeed, fromPeers, served } = this.stats;
        const answer = await this.post(encodeAnnounce({ node: this.id, addr: this.o.peerAddr, blobs, done, left, stopped: false, bytes: { fromSeed, fromPeers, served } }));
        const parsed = parseAnnounceResponse(answer, fetching.map((f) => ({ digest: f.partial.digest, pieces: f.partial.pieces })));
        this.picker.trackerLost = false;
        this.interval = parsed.interval;
        for (const b of parsed.blobs) {
          if (!this.fetching.has(b.digest)) continue;
          for (const p of b.peers) this.peers.set(p.id, p.addr);
          // A shunned peer the tracker still lists is no peer: with none left, the seed serves.
          this.picker.tracked(b.digest, b.peers.filter((p) => p.id !== this.id && !this.picker.isShunned(p.id)), b.seed);
        }
      } catch (err) {
        if (!this.picker.trackerLost) this.log(`the tracker cannot be reached (${(err as Error).message}): pieces no known peer has come from the registry`);
        this.picker.trackerLost = true;
      } finally {
        this.announcing = undefined;
        this.scheduleAnnounce(this.interval);
        this.pump();
      }
    })();
    return this.announcing;
  }

  private async post(body: AnnounceWire): Promise<unknown> {
    const r = await request(`${this.o.registry}/p2p/v1/announce`, { dispatcher: this.http, method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const text = await r.body.text();
    if (r.statusCode !== 200) throw new AcpackError('TRACKER_REFUSED', `the tracker answered ${r.statusCode}: ${text.slice(0, 200)}`);
    return JSON.parse(text);
  }

  /** A JSON answer of the registry; undefined on a 404. */
  private async registryJson<T>(path: string): Promise<T | undefined> {
    const r = await request(`${this.o.registry}${path}`, { dispatcher: this.http });
    const text = await r.body.text();
    if (r.statusCode === 404) return undefined;
    if (r.statusCode !== 200) throw new AcpackError('REGISTRY_FAILED', `${path}: the registry answered ${r.statusCode}: ${text.slice(0, 200)}`);
    return JSON.parse(text) as T;
  }

  /** The registry's own dispatcher, for the server to pass manifests through. */
  get registryClient(): Dispatcher {
    return this.http;
  }

  describe(): string {
    return `${formatBytes(this.stats.fromSeed)} from the registry, ${formatBytes(this.stats.fromPeers)} from peers, ${formatBytes(this.stats.served)} served to peers`;
  }
}

export type { Fetch };
