import { isIP } from 'node:net';
import { Agent as HttpAgent, request, type Dispatcher } from 'undici';
import type { Digest } from '../oci/digest.js';
import { AcpackError, formatBytes } from '../oci/errors.js';
import { HttpResponse } from '../oci/http.js';
import { Bitfield } from './bitfield.js';
import { BufferPool } from '../oci/buffer-pool.js';
import { PieceStore, type PartialBlob } from './piece-store.js';
import { PIECE_SIZE, pieceCount, pieceHashesOfFile, pieceRange } from './pieces.js';
import { ANNOUNCE_INTERVAL_MS, bytesLeft, encodeAnnounce, MAX_DONE_BLOBS, parseAnnounceResponse, MAX_PIECES_ANSWER_BYTES, parsePiecesAnswer, PEER_BLOBS_PATH, PIECE_HEADER, PIECES_PATH, SEED_WAIT_MS, type AnnounceWire, type BlobRef, type PiecesAnswer } from './protocol.js';
import { PiecePicker, type PieceRequest } from './selection.js';

/** The picker's name for the site registry, the seed that has every piece. */
export const SEED = 'seed';
/** The soonest a node with a stalled blob asks the tracker again. */
const STALLED_ANNOUNCE_MS = 300;
/** The header carrying the serving agent's bitfield of that blob (base64). */
export const HAVE_HEADER = 'x-acpack-have';
/**
 * A fetch fails, and containerd's request with it, when neither it nor any other fetch of this
 * agent got a piece for this long: what is left is with no peer it can reach and the registry does
 * not answer (the master gone before seeding it). Any piece counts, so that on a slow link a blob
 * waiting its turn behind others is not given up.
 */
export const STALL_MS = 90_000;
/** With the tracker out of reach, how often a stalled blob asks the peers it knows what they have. */
const POLL_PEERS_MS = 1_000;
/**
 * Blobs up to this size are passed through from the registry, not fetched from peers: configs and
 * the tiniest layers, where a request to the registry costs less than the announces that would find
 * a peer. Not every blob of one piece: at 1 MiB, the four small layers of bench/p2p's images cost
 * the master 0.11·S of extra egress at 8 nodes, every node taking its own copy.
 */
export const PASS_THROUGH_BYTES = 64 << 10;
/** Peers asked at most for one blob's pieces or bitfield. */
const MAX_POLLED_PEERS = 8;

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
  /** How long a fetch may go without a piece before it fails (STALL_MS). */
  stallMs?: number;
}

export interface AgentStats {
  fromSeed: number;
  fromPeers: number;
  served: number;
  badPieces: number;
}

interface Fetch {
  partial: PartialBlob;
  startedAt: number;
  /** When a piece last arrived (or the fetch began). */
  progressAt: number;
  /** When its peers were last asked for their bitfields (the tracker out of reach). */
  polledAt: number;
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
  /** A seed piece handed to this node arrived while an announce was on its way: announce again at once. */
  private announceAgain = false;
  private interval = ANNOUNCE_INTERVAL_MS;
  private stopped = false;
  /** When a piece of any blob last arrived. */
  private progressAt = 0;
  /** Since when requests to the registry fail (logged once per outage), 0 while it answers. */
  private seedDownSince = 0;
  /** Piece hashes of whole blobs, computed for peers that ask while the registry is gone. */
  private readonly wholeHashes = new Map<Digest, Promise<Buffer>>();
  /** Piece buffers for what comes in and goes out (see buffer-pool.ts). */
  readonly pool = new BufferPool(PIECE_SIZE, 24);
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
    // 30 s to connect, TLS handshake included, as acpack's own client: a master busy with many
    // handshakes at the start of an install is slow to answer, not gone.
    const connect = { timeout: 30_000, ...(o.ca ? { ca: o.ca } : {}), ...(isIP(localAddress) ? { localAddress } : {}) };
    this.http = new HttpAgent({ connect, headersTimeout: 15_000, bodyTimeout: 60_000, connections: 32 });
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
   * (an older registry, or no such blob) or it is PASS_THROUGH_BYTES at most: the caller serves the
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
    let info: (BlobRef & { hashes: Buffer }) | undefined;
    let views: { peer: string; have: Bitfield }[] = [];
    try {
      const answer = await this.registryPieces(digest);
      // Small blobs are passed through (PASS_THROUGH_BYTES says why).
      if (!answer || answer.size <= PASS_THROUGH_BYTES) return undefined;
      info = parsePiecesAnswer(answer, digest);
    } catch (err) {
      // The registry is gone (the master stopped after seeding): a peer that has the blob tells its
      // pieces. Its hashes are only as good as that peer, but the whole digest, checked before the
      // blob is visible, is not: a lie costs a refetch, never a wrong blob.
      const fromPeers = await this.piecesFromPeers(digest);
      if (!fromPeers) throw err;
      ({ info, views } = fromPeers);
      this.log(`${digest}: the registry does not answer (${(err as Error).message}); fetching it from the ${views.length} peer(s) that have it`);
    }
    const partial = await this.store.partial(digest, info.size, info.pieceSize, info.hashes);
    let settle!: (err?: Error) => void;
    const done = new Promise<void>((resolve, reject) => (settle = (err) => (err ? reject(err) : resolve())));
    done.catch(() => {}); // a waiter may never come
    const f: Fetch = { partial, startedAt: Date.now(), progressAt: Date.now(), polledAt: Date.now(), seedPath, waiters: new Map(), done, settle };
    this.fetching.set(digest, f);
    this.picker.addBlob(digest, partial.pieces, partial.have);
    for (const v of views) this.picker.updatePeer(digest, v.peer, v.have);
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

  /** containerd starts streaming a fetch; the returned function says it stopped. Its pieces go first (PiecePicker.reading). */
  reading(f: Fetch): () => void {
    const digest = f.partial.digest;
    this.picker.reading(digest, true);
    // Only this fetch's own count: one abandoned and begun again is a new blob to the picker.
    return () => {
      if (this.fetching.get(digest) === f) this.picker.reading(digest, false);
    };
  }

  private pump(): void {
    if (this.stopped) return;
    const now = Date.now();
    for (const f of [...this.fetching.values()]) {
      if (now - Math.max(f.progressAt, this.progressAt) > (this.o.stallMs ?? STALL_MS)) this.abandon(f, now);
      else if (this.picker.trackerLost && now - f.polledAt > POLL_PEERS_MS && this.picker.downloading(f.partial.digest).isEmpty) {
        // No tracker to say who has what: the peers this node knows are asked directly.
        f.polledAt = now;
        void this.pollPeers(f);
      }
    }
    for (const req of this.picker.next(now)) {
      this.request(req).catch((err: Error) => this.log(`piece ${req.piece} of ${req.digest}: ${err.message}`));
    }
    // A blob with nothing asked for has no piece it may take: ask the tracker again soon (a peer may
    // have finished the piece it waits for) rather than at the next interval, when containerd waits
    // for that blob or the node has nothing else to do. (Not for every such blob: a preheat has
    // most of its blobs waiting their turn, and a node would announce every 300 ms for them.)
    const idle = this.picker.inFlight().length === 0;
    const stalled = [...this.fetching.keys()].some((d) => this.picker.downloading(d).isEmpty && !this.picker.complete(d) && (idle || this.picker.isRead(d)));
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
        this.picker.seedFailed(req, now());
        if (!this.seedDownSince) this.log(`the registry does not serve pieces (${e.message}): peers serve what they have, the registry is asked again each second`);
        this.seedDownSince ||= now();
      } else {
        this.picker.peerDead(req.peer, now());
        this.log(`peer ${req.peer} failed (${e.message}): its pieces are fetched elsewhere`);
      }
      return this.pump();
    }
    let put: Awaited<ReturnType<PartialBlob['put']>> | undefined;
    try {
      if (this.fetching.get(req.digest) === f) put = await f.partial.put(req.piece, bytes);
    } finally {
      // Hashed and written (or not wanted): nothing holds it now.
      this.pool.give(bytes);
    }
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
    f.progressAt = this.progressAt = now();
    if (req.peer === SEED) {
      this.stats.fromSeed += bytes.length;
      if (this.seedDownSince) this.log(`the registry serves pieces again (after ${Math.round((now() - this.seedDownSince) / 1000)} s)`);
      this.seedDownSince = 0;
    } else this.stats.fromPeers += bytes.length;
    const handed = req.peer === SEED && this.picker.seedHinted(req.digest, req.piece);
    this.picker.received(req);
    if (handed) this.askForSeedPieces();
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
      this.log(`${digest}: whole (${formatBytes(f.partial.size)}) after ${((Date.now() - f.startedAt) / 1000).toFixed(1)} s`);
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

  /** Gives a stalled fetch up: containerd's request fails; the verified pieces stay for the next ask. */
  private abandon(f: Fetch, now: number): void {
    const digest = f.partial.digest;
    this.fetching.delete(digest);
    this.picker.removeBlob(digest);
    const message = `${f.partial.describe()}: no piece arrived for ${Math.round((now - f.progressAt) / 1000)} s; no peer this node reaches has the rest${this.seedDownSince ? ' and the registry does not answer' : ''}`;
    this.log(`${message}: given up (the pieces it has are kept)`);
    f.settle(new AcpackError('P2P_STALLED', message));
    void f.partial.close();
  }

  /** The pieces answers of up to MAX_POLLED_PEERS known peers for `digest`, asked at once (2 s each). */
  private async askPeers(digest: Digest): Promise<{ peer: string; answer: PiecesAnswer; have: string }[]> {
    const peers = [...this.peers].filter(([id]) => id !== this.id && !this.picker.isShunned(id)).slice(0, MAX_POLLED_PEERS);
    const answers = await Promise.all(
      peers.map(async ([peer, addr]) => {
        try {
          const url = `http://${addr}${PIECES_PATH}${digest}`;
          const r = await request(url, { dispatcher: this.http, headersTimeout: 2_000, bodyTimeout: 2_000 });
          // A peer decides the length of what it sends: read no more than an answer can be.
          const body = await HttpResponse.of(url, r).bytesUpTo(MAX_PIECES_ANSWER_BYTES);
          const have = r.headers[HAVE_HEADER];
          return r.statusCode === 200 && body && typeof have === 'string' ? { peer, answer: JSON.parse(body.toString()) as PiecesAnswer, have } : undefined;
        } catch {
          return undefined;
        }
      }),
    );
    return answers.filter((a) => a !== undefined);
  }

  /** A blob's pieces as the peers that have it tell them (the registry gone), with their bitfields. */
  private async piecesFromPeers(digest: Digest): Promise<{ info: BlobRef & { hashes: Buffer }; views: { peer: string; have: Bitfield }[] } | undefined> {
    let info: (BlobRef & { hashes: Buffer }) | undefined;
    const views: { peer: string; have: Bitfield }[] = [];
    for (const a of await this.askPeers(digest)) {
      try {
        const got = parsePiecesAnswer(a.answer, digest);
        // The first answer sets the pieces; a peer that disagrees with it is not asked for any.
        info ??= got;
        if (got.size === info.size && got.pieceSize === info.pieceSize && got.hashes.equals(info.hashes)) views.push({ peer: a.peer, have: Bitfield.fromBase64(a.have, pieceCount(info.size, info.pieceSize)) });
      } catch {
        // an answer that does not parse: that peer is not asked
      }
    }
    return info && views.length > 0 ? { info, views } : undefined;
  }

  /** Fresh bitfields of the known peers for a fetch, when no tracker tells them. */
  private async pollPeers(f: Fetch): Promise<void> {
    const digest = f.partial.digest;
    for (const a of await this.askPeers(digest)) {
      if (this.fetching.get(digest) !== f) return;
      try {
        this.picker.updatePeer(digest, a.peer, Bitfield.fromBase64(a.have, f.partial.pieces));
      } catch {
        // a bitfield that does not fit this blob: that peer's view stays
      }
    }
    this.pump();
  }

  /**
   * What this node can tell a peer about a blob it has, whole or in part: its PiecesAnswer and its
   * bitfield. Piece hashes of a whole blob are computed from it (once; its digest was verified).
   */
  async piecesFor(digest: Digest): Promise<{ answer: PiecesAnswer; have: Bitfield } | undefined> {
    const partial = this.inProgress(digest);
    if (partial) return { answer: { digest, size: partial.size, pieceSize: partial.pieceSize, hashes: partial.hashes.toString('base64') }, have: partial.have };
    const size = await this.store.whole(digest);
    if (size === undefined || size === 0) return undefined;
    let hashes = this.wholeHashes.get(digest);
    if (!hashes) {
      if (this.wholeHashes.size >= 64) this.wholeHashes.delete(this.wholeHashes.keys().next().value!);
      hashes = pieceHashesOfFile(this.store.wholePath(digest), PIECE_SIZE, size).then((h) => h.hashes);
      hashes.catch(() => this.wholeHashes.delete(digest));
      this.wholeHashes.set(digest, hashes);
    }
    const answer = { digest, size, pieceSize: PIECE_SIZE, hashes: (await hashes).toString('base64') };
    return { answer, have: Bitfield.full(pieceCount(size)) };
  }

  private async fromSeed(f: Fetch, index: number): Promise<Buffer> {
    const { start, end } = pieceRange(f.partial.size, index, f.partial.pieceSize);
    // A piece request waits in the registry's queue for a seed slot (registry/seed-queue.ts): up to
    // its SEED_WAIT_MS, then a 503 that sends it to the back of the line again.
    const r = await request(`${this.o.registry}${f.seedPath}`, {
      dispatcher: this.http,
      headers: { range: `bytes=${start}-${end - 1}`, [PIECE_HEADER]: String(index) },
      headersTimeout: SEED_WAIT_MS + 15_000,
      maxRedirections: 0,
    } as Parameters<typeof request>[1]);
    if (r.statusCode !== 206 && !(r.statusCode === 200 && start === 0 && end === f.partial.size)) {
      await r.body.dump().catch(() => {});
      if (r.statusCode === 503) throw new AcpackError('PEER_BUSY', 'every seed slot is taken');
      throw new AcpackError('SEED_FAILED', `the registry answered ${r.statusCode}`);
    }
    return this.pieceBody(r.body, end - start);
  }

  /**
   * A piece's body, read into a pooled buffer. A body of another length is returned empty, which
   * fails the piece's check like bad bytes would; one longer than the piece is cut off there.
   */
  private async pieceBody(body: AsyncIterable<Buffer>, length: number): Promise<Buffer> {
    const buf = this.pool.take(length);
    let n = 0;
    for await (const chunk of body) {
      if (n + chunk.length > length) {
        n = -1;
        break; // leaving the loop destroys the body
      }
      chunk.copy(buf, n);
      n += chunk.length;
    }
    if (n === length) return buf;
    this.pool.give(buf);
    return Buffer.alloc(0);
  }

  private async fromPeer(req: PieceRequest, f: Fetch): Promise<Buffer> {
    const addr = this.peers.get(req.peer) ?? req.peer;
    const r = await request(`http://${addr}${PEER_BLOBS_PATH}${req.digest}/pieces/${req.piece}`, { dispatcher: this.http });
    const have = r.headers[HAVE_HEADER];
    if (typeof have === 'string') {
      try {
        this.picker.updatePeer(req.digest, req.peer, Bitfield.fromBase64(have, f.partial.pieces));
      } catch {
        // a bitfield that does not fit: the tracker's view of that peer stays
      }
    }
    if (r.statusCode !== 200) await r.body.dump().catch(() => {});
    if (r.statusCode === 503) throw new AcpackError('PEER_BUSY', 'busy');
    if (r.statusCode === 404) throw new AcpackError('PEER_LACKS', 'does not have it');
    if (r.statusCode !== 200) throw new AcpackError('PEER_FAILED', `answered ${r.statusCode}`);
    const { start, end } = pieceRange(f.partial.size, req.piece, f.partial.pieceSize);
    return this.pieceBody(r.body, end - start);
  }

  private scheduleAnnounce(ms: number): void {
    if (this.stopped) return;
    clearTimeout(this.announceTimer);
    this.announceAt = Date.now() + ms;
    this.announceTimer = setTimeout(() => void this.announce(), ms);
  }

  /**
   * The tracker hands a node its next seed piece at its next announce, so a node that waits the
   * interval for it leaves the master idle (at 1 MiB pieces, 2 MB/s per node on loopback). It
   * announces when one arrives instead: those announces are bounded by the master's egress, a
   * piece each, whatever the number of nodes.
   */
  private askForSeedPieces(): void {
    if (this.picker.trackerLost) return;
    if (this.announcing) this.announceAgain = true;
    else this.scheduleAnnounce(0);
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
        // Those containerd reads first: the tracker hands out seed pieces in this order.
        const fetching = [...this.fetching.values()].sort((a, b) => Number(this.picker.isRead(b.partial.digest)) - Number(this.picker.isRead(a.partial.digest)));
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
          // A shunned or dead peer the tracker still lists is no peer: what only it has, the seed serves.
          this.picker.tracked(b.digest, b.peers.filter((p) => p.id !== this.id), b.seed, Date.now());
        }
      } catch (err) {
        if (!this.picker.trackerLost) this.log(`the tracker cannot be reached (${(err as Error).message}): pieces no known peer has come from the registry`);
        this.picker.trackerLost = true;
      } finally {
        this.announcing = undefined;
        // ±10%: nodes started by one install would otherwise announce in lockstep, all at one instant.
        this.scheduleAnnounce(this.announceAgain ? 0 : this.interval * (0.9 + 0.2 * Math.random()));
        this.announceAgain = false;
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

  /** The registry's pieces answer for a blob, read no further than one can be; undefined when it has none. */
  private async registryPieces(digest: Digest): Promise<PiecesAnswer | undefined> {
    const path = `${PIECES_PATH}${digest}`;
    const res = HttpResponse.of(path, await request(`${this.o.registry}${path}`, { dispatcher: this.http }));
    const body = await res.bytesUpTo(MAX_PIECES_ANSWER_BYTES);
    if (res.status === 404) return undefined;
    if (!body) throw new AcpackError('REGISTRY_FAILED', `${path}: the registry's answer is longer than a pieces answer may be (${MAX_PIECES_ANSWER_BYTES} bytes)`);
    if (res.status !== 200) throw new AcpackError('REGISTRY_FAILED', `${path}: the registry answered ${res.status}: ${body.toString().slice(0, 200)}`);
    return JSON.parse(body.toString()) as PiecesAnswer;
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
