/**
 * Piece selection on a node: which piece to ask next, and from whom. The node agent feeds it what it
 * learns (the tracker's answers, the bitfields peers send with their pieces) and what happens to its
 * requests; `next` answers with requests to issue. No I/O and no clock of its own: `now` comes in.
 *
 * - Rarest first: the pieces the fewest known peers have go first, ties broken at random so that
 *   nodes starting together do not all chase the same piece.
 * - Several peers at once: at most maxPerPeer requests to one peer and maxTotal in all.
 * - The seed (the master) only for the pieces the tracker hands this node (super-seeding) or, when
 *   the tracker is out of reach or lists nobody, for pieces no peer has: every other byte comes from
 *   peers, which is what keeps the master's egress near one copy.
 * - Endgame: once every missing piece of a blob is asked for, each is asked from a second peer too;
 *   the first copy to arrive wins and the caller cancels the other.
 * - A peer that served a bad piece is shunned for the run; a dead peer's requests are released and
 *   it is left alone for a while. What the tracker shows only at such peers, the seed serves: the
 *   tracker does not know they are of no use to this node, so it hands nobody those pieces.
 */
import { AcpackError } from '../oci/errors.js';
import type { Digest } from '../oci/digest.js';
import { Bitfield } from './bitfield.js';

export interface PickerOptions {
  /** Requests in flight to one peer. */
  maxPerPeer?: number;
  /** Requests in flight to peers in all. */
  maxTotal?: number;
  /** Requests in flight to the seed. */
  maxFromSeed?: number;
  /** Copies of one piece asked for in the endgame. */
  endgameCopies?: number;
  /** How long a peer that failed is left out. */
  deadPeerPauseMs?: number;
  /** How long a peer that said it is busy (all its upload slots taken) is left out. */
  busyPauseMs?: number;
  /** How long the seed is left out after a request to it failed (the master gone or overloaded). */
  seedPauseMs?: number;
  /** Tracker answers in a row that list no peer for a blob before the seed serves it freely. */
  lonelyAnswers?: number;
  /**
   * Availability counts closer than this are treated as ties: strict rarest-first sends every node
   * to the same few holders of the rarest piece, which then refuse most of them as busy.
   */
  rarityJitter?: number;
  random?: () => number;
}

export interface PieceRequest {
  digest: Digest;
  piece: number;
  /** A peer's id, or the seed's. */
  peer: string;
}

interface PeerState {
  inFlight: number;
  shunned: boolean;
  pausedUntil: number;
  /** Until when it counts as dead (it could not be reached). */
  deadUntil: number;
}

interface BlobState {
  digest: Digest;
  have: Bitfield;
  /** Piece → the peers it is asked from. */
  requests: Map<number, string[]>;
  /** Peer → its last known bitfield for this blob. */
  views: Map<string, Bitfield>;
  /** How many usable peers (known, not shunned, not paused) have each piece. */
  availability: Uint16Array;
  seedHints: Set<number>;
  /**
   * Pieces the tracker's last answer shows at peers this node cannot use: shunned, or dead for the
   * moment. Where no usable peer has one, this node may take it from the seed.
   */
  atUnusable: Set<number>;
  emptyAnswers: number;
  /** Readers streaming this blob to containerd now (see `reading`). */
  readers: number;
  /** Its place among the blobs added: the order a consumer will read them in. */
  seq: number;
}

/** How far ahead of the others the blobs being read go. */
const URGENT = 1e9;
/** How far one blob's place in line weighs: more than any piece's rarity (what a node knows of at most a few hundred peers). */
const IN_LINE = 1e3;

export class PiecePicker {
  private readonly blobs = new Map<Digest, BlobState>();
  private readonly peers = new Map<string, PeerState>();
  private readonly opt: Required<PickerOptions>;
  /** Requests in flight to peers; the seed's are bounded apart, since they may wait in the master's queue. */
  private peerRequests = 0;
  private added = 0;
  /** Set by the agent while the tracker cannot be reached: pieces no peer has come from the seed. */
  trackerLost = false;

  constructor(
    readonly seedId: string,
    options: PickerOptions = {},
  ) {
    this.opt = {
      maxPerPeer: 2,
      maxTotal: 4,
      maxFromSeed: 1,
      endgameCopies: 2,
      deadPeerPauseMs: 10_000,
      busyPauseMs: 200,
      seedPauseMs: 1000,
      lonelyAnswers: 2,
      rarityJitter: 1,
      random: Math.random,
      ...options,
    };
  }

  addBlob(digest: Digest, pieces: number, have?: Bitfield): void {
    if (this.blobs.has(digest)) return;
    if (have && have.length !== pieces) throw new AcpackError('BAD_BITFIELD', `${digest} has ${pieces} pieces, the bitfield given has ${have.length}`);
    this.blobs.set(digest, {
      digest,
      have: have?.copy() ?? new Bitfield(pieces),
      requests: new Map(),
      views: new Map(),
      availability: new Uint16Array(pieces),
      seedHints: new Set(),
      atUnusable: new Set(),
      emptyAnswers: 0,
      readers: 0,
      seq: this.added++,
    });
  }

  /** Forgets a blob (complete and handed to the store, or no longer wanted); returns its requests to cancel. */
  removeBlob(digest: Digest): PieceRequest[] {
    const blob = this.blobs.get(digest);
    if (!blob) return [];
    const cancelled = this.requestsOf(blob);
    for (const r of cancelled) this.drop(blob, r.piece, r.peer);
    this.blobs.delete(digest);
    return cancelled;
  }

  have(digest: Digest): Bitfield {
    return this.blob(digest).have;
  }

  /** The pieces asked for and not yet received (the announce's `downloading`). */
  downloading(digest: Digest): Bitfield {
    const blob = this.blob(digest);
    const f = new Bitfield(blob.have.length);
    for (const p of blob.requests.keys()) f.set(p);
    return f;
  }

  complete(digest: Digest): boolean {
    return this.blob(digest).have.isFull;
  }

  inFlight(): PieceRequest[] {
    return [...this.blobs.values()].flatMap((b) => this.requestsOf(b));
  }

  isShunned(peer: string): boolean {
    return this.peers.get(peer)?.shunned ?? false;
  }

  /**
   * The tracker's answer for a blob: its peers (replacing the previous list; shunned and dead ones
   * are listed too, and count for nothing but atUnusable) and the seed pieces handed to this node.
   */
  tracked(digest: Digest, peers: { id: string; have: Bitfield }[], seed: number[], now: number): void {
    const blob = this.blob(digest);
    const listed = peers.filter((p) => p.id !== this.seedId);
    const unusable = (id: string) => this.isShunned(id) || (this.peers.get(id)?.deadUntil ?? 0) > now;
    const usable = listed.filter((p) => !unusable(p.id));
    const kept = new Set(usable.map((p) => p.id));
    for (const id of [...blob.views.keys()]) if (!kept.has(id) && !this.hasRequestsTo(blob, id)) this.setView(blob, id, undefined);
    for (const p of usable) this.updatePeer(digest, p.id, p.have);
    blob.seedHints = new Set(seed.filter((p) => p >= 0 && p < blob.have.length && !blob.have.has(p)));
    blob.atUnusable = new Set(listed.filter((p) => unusable(p.id)).flatMap((p) => p.have.toArray()));
    blob.emptyAnswers = usable.length === 0 ? blob.emptyAnswers + 1 : 0;
  }

  /** A fresher bitfield of one peer (sent with a piece, or asked for). */
  updatePeer(digest: Digest, peer: string, have: Bitfield): void {
    const blob = this.blob(digest);
    if (have.length !== blob.have.length) throw new AcpackError('BAD_BITFIELD', `${peer} sent a bitfield of ${have.length} pieces for ${digest}, which has ${blob.have.length}`);
    if (peer === this.seedId || this.isShunned(peer)) return;
    this.setView(blob, peer, have.copy());
  }

  /**
   * The requests to issue now, each already counted in flight: the rarest missing pieces first, each
   * from the least busy peer that has it, the seed only where allowed, then the endgame.
   */
  next(now: number): PieceRequest[] {
    const out: PieceRequest[] = [];
    let budget = this.opt.maxTotal - this.peerRequests;
    const seed = this.peers.get(this.seedId);
    let seedBudget = seed && seed.pausedUntil > now ? 0 : this.opt.maxFromSeed - (seed?.inFlight ?? 0);
    if (budget <= 0 && seedBudget <= 0) return out;
    const candidates: { blob: BlobState; piece: number; rank: number }[] = [];
    for (const blob of this.blobs.values()) {
      const pieces = blob.have.length;
      const seedFree = this.seedFree(blob);
      for (let p = 0; p < pieces; p++) {
        if (blob.have.has(p) || blob.requests.has(p)) continue;
        const avail = blob.availability[p];
        if (avail === 0 && !blob.seedHints.has(p) && !seedFree && !blob.atUnusable.has(p)) continue;
        // Rarest first; the random part breaks ties (and near-ties, with rarityJitter > 1). Blobs
        // being read go ahead, rarest first among them all; the others wait in the order they were
        // added (a preheat's in its image list's order, the order containerd will read them in).
        // Not the piece a reader waits for first, nor read blobs one after another: every node
        // would chase the same piece, which only its few holders can send (bench/install, image
        // by image at 200 Mbit/s: 95.4 s with both, 81.7 s without; one run each).
        const rank = blob.readers > 0 ? -URGENT : blob.seq * IN_LINE;
        candidates.push({ blob, piece: p, rank: rank + avail + this.opt.rarityJitter * this.opt.random() });
      }
    }
    candidates.sort((a, b) => a.rank - b.rank);
    for (const c of candidates) {
      if (budget <= 0 && seedBudget <= 0) break;
      const peer = budget > 0 ? this.pickPeer(c.blob, c.piece, now, []) : undefined;
      if (peer !== undefined) {
        out.push(this.issue(c.blob, c.piece, peer));
        budget--;
      } else if (seedBudget > 0 && this.seedMayServe(c.blob, c.piece)) {
        out.push(this.issue(c.blob, c.piece, this.seedId));
        seedBudget--;
      }
    }
    if (budget > 0) this.endgame(now, budget, out);
    return out;
  }

  /**
   * A reader (containerd's pull) starts (`true`) or stops streaming a blob. A blob fetched for a
   * preheat has none until containerd asks for it: the blobs containerd reads come first, so that
   * it takes each in while the rest is still on the network, rather than all of it at the end.
   */
  reading(digest: Digest, on: boolean): void {
    const blob = this.blobs.get(digest);
    if (blob) blob.readers = Math.max(0, blob.readers + (on ? 1 : -1));
  }

  isRead(digest: Digest): boolean {
    return (this.blobs.get(digest)?.readers ?? 0) > 0;
  }

  /** Whether the tracker handed this node that piece to take from the seed. */
  seedHinted(digest: Digest, piece: number): boolean {
    return this.blobs.get(digest)?.seedHints.has(piece) ?? false;
  }

  /** A verified piece. Returns the other requests for it (endgame copies) for the caller to cancel. */
  received(req: PieceRequest): PieceRequest[] {
    const blob = this.blob(req.digest);
    const askedFrom = [...(blob.requests.get(req.piece) ?? [])];
    const others = askedFrom.filter((p) => p !== req.peer).map((peer) => ({ digest: req.digest, piece: req.piece, peer }));
    for (const peer of askedFrom) this.drop(blob, req.piece, peer);
    blob.have.set(req.piece);
    blob.seedHints.delete(req.piece);
    return others;
  }

  /**
   * A piece that failed its hash: the peer is shunned for the run and everything asked from it is
   * released (returned, for the caller to cancel). The seed cannot be shunned; its bad piece is a
   * store fault the caller reports, and the piece is only released.
   */
  rejected(req: PieceRequest): PieceRequest[] {
    const blob = this.blob(req.digest);
    this.drop(blob, req.piece, req.peer);
    if (req.peer === this.seedId) return [];
    const state = this.peer(req.peer);
    state.shunned = true;
    for (const b of this.blobs.values()) this.setView(b, req.peer, undefined);
    return this.release(req.peer);
  }

  /**
   * A request that failed without a bad piece (a timeout, a refusal). `lacksPiece`: the peer said it
   * does not have it (its view was stale), so it is not asked again until a fresher bitfield says so.
   */
  failed(req: PieceRequest, lacksPiece = false): void {
    const blob = this.blob(req.digest);
    this.drop(blob, req.piece, req.peer);
    const view = blob.views.get(req.peer);
    if (lacksPiece && view?.has(req.piece)) {
      const fixed = view.copy().clear(req.piece);
      this.setView(blob, req.peer, fixed);
    }
  }

  /**
   * A peer that refused a request because all its upload slots were taken: the piece is released
   * and the peer left out briefly, so that the node asks someone else rather than piling onto the
   * first peer that had a new piece (what makes a piece double every transfer instead of crawling
   * out of one overloaded peer).
   */
  busy(req: PieceRequest, now: number): void {
    this.drop(this.blob(req.digest), req.piece, req.peer);
    if (req.peer !== this.seedId) this.peer(req.peer).pausedUntil = now + this.opt.busyPauseMs;
  }

  /**
   * A request to the seed that failed (no answer, or an error status): the piece is released and the
   * seed left out for a moment, so that a master that is gone is asked about once a second, not in
   * a loop as fast as its refusals come back.
   */
  seedFailed(req: PieceRequest, now: number): void {
    this.drop(this.blob(req.digest), req.piece, req.peer);
    this.peer(this.seedId).pausedUntil = now + this.opt.seedPauseMs;
  }

  /**
   * A peer that cannot be reached: its requests are released (returned, to cancel) and it is left
   * out for a while, during which the seed serves what only it was said to have.
   */
  peerDead(peer: string, now: number): PieceRequest[] {
    if (peer === this.seedId) return this.release(peer);
    const state = this.peer(peer);
    state.pausedUntil = state.deadUntil = now + this.opt.deadPeerPauseMs;
    const released = this.release(peer);
    for (const blob of this.blobs.values()) this.setView(blob, peer, undefined);
    return released;
  }

  private blob(digest: Digest): BlobState {
    const blob = this.blobs.get(digest);
    if (!blob) throw new AcpackError('UNKNOWN_BLOB', `${digest} is not being fetched`);
    return blob;
  }

  private peer(id: string): PeerState {
    let state = this.peers.get(id);
    if (!state) {
      state = { inFlight: 0, shunned: false, pausedUntil: 0, deadUntil: 0 };
      this.peers.set(id, state);
    }
    return state;
  }

  /** Replaces a peer's view, keeping the availability counts in step; undefined drops it. */
  private setView(blob: BlobState, peer: string, view: Bitfield | undefined): void {
    const old = blob.views.get(peer);
    if (old) for (const p of old) blob.availability[p]--;
    if (view) {
      blob.views.set(peer, view);
      for (const p of view) blob.availability[p]++;
    } else blob.views.delete(peer);
  }

  /** The least busy usable peer whose view has the piece, at random among equals; not one in `exclude`. */
  private pickPeer(blob: BlobState, piece: number, now: number, exclude: string[]): string | undefined {
    if (blob.availability[piece] === 0) return undefined;
    let best: string | undefined;
    let bestLoad = Infinity;
    let ties = 0;
    for (const [id, view] of blob.views) {
      if (!view.has(piece) || exclude.includes(id)) continue;
      const state = this.peers.get(id);
      const load = state?.inFlight ?? 0;
      if (load >= this.opt.maxPerPeer || (state && (state.shunned || state.pausedUntil > now))) continue;
      if (load < bestLoad) {
        best = id;
        bestLoad = load;
        ties = 1;
      } else if (load === bestLoad && this.opt.random() * ++ties < 1) best = id;
    }
    return best;
  }

  /** Whether the seed serves this blob freely: the tracker is out of reach, or keeps listing nobody. */
  private seedFree(blob: BlobState): boolean {
    return this.trackerLost || blob.emptyAnswers >= this.opt.lonelyAnswers;
  }

  /**
   * Whether this piece may come from the seed: handed to this node, or no usable peer has it when
   * the seed serves freely or only peers this node cannot use are said to have it.
   */
  private seedMayServe(blob: BlobState, piece: number): boolean {
    return blob.seedHints.has(piece) || (blob.availability[piece] === 0 && (this.seedFree(blob) || blob.atUnusable.has(piece)));
  }

  /** Second requests for the pieces in flight of blobs with nothing left to ask, from other peers. */
  private endgame(now: number, budget: number, out: PieceRequest[]): void {
    let issued = 0;
    for (const blob of this.blobs.values()) {
      if (blob.have.count + blob.requests.size < blob.have.length) continue;
      for (const [piece, askedFrom] of blob.requests) {
        if (issued === budget) return;
        if (askedFrom.length >= this.opt.endgameCopies) continue;
        const peer = this.pickPeer(blob, piece, now, askedFrom);
        if (peer === undefined) continue;
        out.push(this.issue(blob, piece, peer));
        issued++;
      }
    }
  }

  private issue(blob: BlobState, piece: number, peer: string): PieceRequest {
    const askedFrom = blob.requests.get(piece);
    if (askedFrom) askedFrom.push(peer);
    else blob.requests.set(piece, [peer]);
    this.peer(peer).inFlight++;
    if (peer !== this.seedId) this.peerRequests++;
    return { digest: blob.digest, piece, peer };
  }

  private drop(blob: BlobState, piece: number, peer: string): void {
    const askedFrom = blob.requests.get(piece);
    const i = askedFrom?.indexOf(peer) ?? -1;
    if (!askedFrom || i < 0) return;
    askedFrom.splice(i, 1);
    if (askedFrom.length === 0) blob.requests.delete(piece);
    this.peer(peer).inFlight--;
    if (peer !== this.seedId) this.peerRequests--;
  }

  private hasRequestsTo(blob: BlobState, peer: string): boolean {
    for (const askedFrom of blob.requests.values()) if (askedFrom.includes(peer)) return true;
    return false;
  }

  private requestsOf(blob: BlobState): PieceRequest[] {
    return [...blob.requests].flatMap(([piece, askedFrom]) => askedFrom.map((peer) => ({ digest: blob.digest, piece, peer })));
  }

  /** Releases every request to one peer; returns them. */
  private release(peer: string): PieceRequest[] {
    const released: PieceRequest[] = [];
    for (const blob of this.blobs.values()) {
      for (const r of this.requestsOf(blob)) {
        if (r.peer !== peer) continue;
        this.drop(blob, r.piece, peer);
        released.push(r);
      }
    }
    return released;
  }
}
