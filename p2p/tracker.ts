/**
 * The tracker: one per site registry, in memory. It knows which node has which pieces of which
 * blob and which it is fetching, from the nodes' announces alone (each announce is a node's whole
 * state, protocol.ts), and answers each node with the peers worth asking and, for super-seeding,
 * the pieces it should take from the seed (the master). It keeps no per-piece objects: per blob,
 * the members' bitfields sit in two flat byte arrays and the piece counts in typed arrays, so 500
 * nodes × hundreds of blobs stay within a few megabytes (bench/p2p-sim measures it).
 *
 * It forgets a node that stops announcing (three intervals) and a blob nobody holds any more.
 * Nothing here is asynchronous and nothing reads a clock: `now` comes with each call, so a
 * simulation or a test drives time.
 */
import { AcpackError } from '../oci/errors.js';
import type { Digest } from '../oci/digest.js';
import { Bitfield } from './bitfield.js';
import {
  ANNOUNCE_INTERVAL_MS,
  IDLE_ANNOUNCE_INTERVAL_MS,
  MAX_ANNOUNCE_INTERVAL_MS,
  MAX_PEERS,
  MAX_SEED_HINTS,
  parseAnnounce,
  encodeResponse,
  type Announce,
  type AnnounceResponse,
  type AnnounceResponseWire,
  type BlobAnswer,
  type BlobRef,
  type NodeBytes,
  type PeerInfo,
} from './protocol.js';

export interface TrackerOptions {
  /** Peers in an answer (one set for all its blobs). */
  maxPeers?: number;
  /** The interval for nodes that are fetching, before stretching for large sites. */
  interval?: number;
  /** The interval for nodes that lack nothing. */
  idleInterval?: number;
  /** Announces per second the tracker aims at: with more nodes, fetching nodes announce less often. */
  maxAnnouncesPerSecond?: number;
  /** Seed pieces one node holds at a time (across blobs). */
  seedHintsPerNode?: number;
  /** How long a seed piece handed to a node stays its own before the node reports fetching it. */
  hintGraceMs?: number;
  /** A node is forgotten after this many of its intervals without an announce. */
  missedIntervals?: number;
  /** Bounds on what announces can make the tracker hold. */
  maxNodes?: number;
  maxBlobs?: number;
  /** In [0, 1): the source of the tracker's random choices (a seeded one makes a simulation repeatable). */
  random?: () => number;
}

interface NodeRecord {
  id: string;
  addr: string;
  expiresAt: number;
  swarms: Set<Swarm>;
  bytes?: NodeBytes;
  seenAt: number;
}

/** What the tracker last heard from a node, for status and metrics. */
export interface NodeView {
  id: string;
  addr: string;
  seenAt: number;
  bytes?: NodeBytes;
}

/** The members of one blob's swarm and its piece counts. */
class Swarm {
  readonly pieces: number;
  /** Bytes per bitfield. */
  readonly stride: number;
  readonly nodes: NodeRecord[] = [];
  private readonly slotOf = new Map<NodeRecord, number>();
  private have: Uint8Array;
  private fetching: Uint8Array;
  /** How many members have / are fetching each piece. */
  readonly haveCount: Uint32Array;
  readonly fetchCount: Uint32Array;
  /** The node each piece was handed to for fetching from the seed, and when. */
  readonly hintTo: (NodeRecord | undefined)[];
  readonly hintAt: Float64Array;
  private readonly full: Uint8Array;
  private readonly empty: Uint8Array;

  constructor(readonly ref: BlobRef) {
    this.pieces = Math.ceil(ref.size / ref.pieceSize);
    this.stride = (this.pieces + 7) >> 3;
    this.have = new Uint8Array(4 * this.stride);
    this.fetching = new Uint8Array(4 * this.stride);
    this.haveCount = new Uint32Array(this.pieces);
    this.fetchCount = new Uint32Array(this.pieces);
    this.hintTo = new Array(this.pieces).fill(undefined);
    this.hintAt = new Float64Array(this.pieces);
    this.full = Bitfield.full(this.pieces).bytes;
    this.empty = new Uint8Array(this.stride);
  }

  get size(): number {
    return this.nodes.length;
  }

  slot(node: NodeRecord): number | undefined {
    return this.slotOf.get(node);
  }

  haveOf(slot: number): Uint8Array {
    return this.have.subarray(slot * this.stride, (slot + 1) * this.stride);
  }

  fetchingOf(slot: number): Uint8Array {
    return this.fetching.subarray(slot * this.stride, (slot + 1) * this.stride);
  }

  /** Records a member's state; `have` undefined means the whole blob. */
  put(node: NodeRecord, have?: Uint8Array, fetching?: Uint8Array): void {
    let slot = this.slotOf.get(node);
    if (slot === undefined) {
      slot = this.nodes.length;
      if ((slot + 1) * this.stride > this.have.length) this.resize(Math.max(4, slot * 2));
      this.nodes.push(node);
      this.slotOf.set(node, slot);
    }
    this.write(this.have, this.haveCount, slot, have ?? this.full);
    this.write(this.fetching, this.fetchCount, slot, fetching ?? this.empty);
  }

  remove(node: NodeRecord): void {
    const slot = this.slotOf.get(node);
    if (slot === undefined) return;
    this.write(this.have, this.haveCount, slot, this.empty);
    this.write(this.fetching, this.fetchCount, slot, this.empty);
    for (let p = 0; p < this.pieces; p++) if (this.hintTo[p] === node) this.hintTo[p] = undefined;
    // The last member moves into the freed slot, so the arrays stay dense.
    const last = this.nodes.length - 1;
    if (slot !== last) {
      const moved = this.nodes[last];
      this.nodes[slot] = moved;
      this.slotOf.set(moved, slot);
      this.have.copyWithin(slot * this.stride, last * this.stride, (last + 1) * this.stride);
      this.fetching.copyWithin(slot * this.stride, last * this.stride, (last + 1) * this.stride);
    }
    this.have.fill(0, last * this.stride, (last + 1) * this.stride);
    this.fetching.fill(0, last * this.stride, (last + 1) * this.stride);
    this.nodes.pop();
    this.slotOf.delete(node);
    if (this.nodes.length * 4 * this.stride < this.have.length && this.have.length > 16 * this.stride) this.resize(this.nodes.length * 2);
  }

  /** Overwrites a member's bitfield, adjusting the piece counts by the bits that changed. */
  private write(field: Uint8Array, counts: Uint32Array, slot: number, bits: Uint8Array): void {
    const at = slot * this.stride;
    for (let j = 0; j < this.stride; j++) {
      const old = field[at + j];
      const now = bits[j];
      let changed = old ^ now;
      while (changed !== 0) {
        const bit = 31 - Math.clz32(changed); // the byte's high bits are its low piece indexes (MSB first)
        changed &= ~(1 << bit);
        const piece = j * 8 + (7 - bit);
        if (now & (1 << bit)) counts[piece]++;
        else counts[piece]--;
      }
      field[at + j] = now;
    }
  }

  private resize(capacity: number): void {
    const grow = (a: Uint8Array) => {
      const b = new Uint8Array(capacity * this.stride);
      b.set(a.subarray(0, Math.min(a.length, b.length)));
      return b;
    };
    this.have = grow(this.have);
    this.fetching = grow(this.fetching);
  }
}

/** Whether `other` has a bit `mine` lacks. */
function hasSomethingFor(mine: Uint8Array, other: Uint8Array): boolean {
  for (let j = 0; j < mine.length; j++) if ((other[j] & ~mine[j]) !== 0) return true;
  return false;
}

const has = (bits: Uint8Array, piece: number) => (bits[piece >> 3] & (0x80 >> (piece & 7))) !== 0;

export interface TrackerStats {
  nodes: number;
  blobs: number;
  /** (node, blob) pairs. */
  members: number;
  /** Seed pieces handed out and not yet fetched. */
  hints: number;
}

export class Tracker {
  private readonly nodes = new Map<string, NodeRecord>();
  private readonly swarms = new Map<Digest, Swarm>();
  private readonly opt: Required<TrackerOptions>;
  private lastSweep = -Infinity;

  constructor(options: TrackerOptions = {}) {
    const interval = options.interval ?? ANNOUNCE_INTERVAL_MS;
    this.opt = {
      maxPeers: MAX_PEERS,
      interval,
      idleInterval: IDLE_ANNOUNCE_INTERVAL_MS,
      maxAnnouncesPerSecond: 100,
      seedHintsPerNode: 1,
      hintGraceMs: 2 * interval,
      missedIntervals: 3,
      maxNodes: 10_000,
      maxBlobs: 100_000,
      random: Math.random,
      ...options,
    };
    if (this.opt.maxPeers > MAX_PEERS) throw new AcpackError('BAD_OPTION', `maxPeers is at most ${MAX_PEERS}, what nodes accept`);
  }

  /** The HTTP route's whole job: a decoded JSON body in, a JSON-ready answer out (BAD_ANNOUNCE on a bad body). */
  handle(body: unknown, now: number): AnnounceResponseWire {
    return encodeResponse(this.announce(parseAnnounce(body), now));
  }

  announce(a: Announce, now: number): AnnounceResponse {
    this.sweep(now);
    if (a.stopped) {
      this.forget(a.node);
      return { interval: this.opt.idleInterval, blobs: a.blobs.map((b) => ({ digest: b.digest, peers: [], seed: [] })) };
    }
    this.admit(a);
    let node = this.nodes.get(a.node);
    if (!node) {
      node = { id: a.node, addr: a.addr, expiresAt: 0, swarms: new Set(), seenAt: now };
      this.nodes.set(a.node, node);
    }
    node.addr = a.addr;
    node.seenAt = now;
    if (a.bytes) node.bytes = a.bytes;

    const fetching: Swarm[] = [];
    const mentioned = new Set<Swarm>();
    for (const b of a.blobs) {
      const swarm = this.swarmFor(b);
      swarm.put(node, b.have.bytes, b.downloading.bytes);
      fetching.push(swarm);
      mentioned.add(swarm);
    }
    for (const b of a.done) {
      const swarm = this.swarmFor(b);
      swarm.put(node, undefined, undefined);
      mentioned.add(swarm);
    }
    for (const swarm of node.swarms) if (!mentioned.has(swarm)) this.leave(node, swarm);
    node.swarms = mentioned;

    const seed = this.seedPieces(node, fetching, now);
    const peers = this.choosePeers(node, fetching);
    const blobs: BlobAnswer[] = fetching.map((swarm, i) => ({ digest: swarm.ref.digest, peers: peers[i], seed: seed[i] }));

    const interval = a.left > 0 ? this.activeInterval() : this.opt.idleInterval;
    node.expiresAt = now + this.opt.missedIntervals * interval;
    return { interval, blobs };
  }

  /** The nodes it follows, with their traffic as they last told it. */
  nodeViews(): NodeView[] {
    return [...this.nodes.values()].map(({ id, addr, seenAt, bytes }) => ({ id, addr, seenAt, ...(bytes ? { bytes } : {}) }));
  }

  /** Drops a node now (an agent that said it stops, a node deleted from the cluster). */
  forget(id: string): void {
    const node = this.nodes.get(id);
    if (!node) return;
    for (const swarm of node.swarms) this.leave(node, swarm);
    this.nodes.delete(id);
  }

  /** Forgets nodes whose announces stopped; runs at most once a second, from announce. */
  sweep(now: number): void {
    if (now - this.lastSweep < 1000) return;
    this.lastSweep = now;
    for (const node of [...this.nodes.values()]) if (node.expiresAt < now) this.forget(node.id);
  }

  stats(): TrackerStats {
    let members = 0;
    let hints = 0;
    for (const s of this.swarms.values()) {
      members += s.size;
      for (const n of s.hintTo) if (n) hints++;
    }
    return { nodes: this.nodes.size, blobs: this.swarms.size, members, hints };
  }

  /** The nodes that have each piece of a blob (for tests and status). */
  availability(digest: Digest): { have: number[]; fetching: number[] } | undefined {
    const s = this.swarms.get(digest);
    return s && { have: [...s.haveCount], fetching: [...s.fetchCount] };
  }

  /** The interval that keeps announces from fetching nodes near maxAnnouncesPerSecond. */
  private activeInterval(): number {
    const stretched = Math.ceil((1000 * this.nodes.size) / this.opt.maxAnnouncesPerSecond);
    return Math.min(MAX_ANNOUNCE_INTERVAL_MS, Math.max(this.opt.interval, stretched));
  }

  /** Refuses an announce that conflicts with what is known, or would grow the tracker past its bounds, before changing anything. */
  private admit(a: Announce): void {
    if (!this.nodes.has(a.node) && this.nodes.size >= this.opt.maxNodes) {
      throw new AcpackError('TRACKER_FULL', `the tracker already follows ${this.opt.maxNodes} nodes; ${a.node} is refused`);
    }
    let fresh = 0;
    for (const b of [...a.blobs, ...a.done]) {
      const known = this.swarms.get(b.digest);
      if (!known) fresh++;
      else if (known.ref.size !== b.size || known.ref.pieceSize !== b.pieceSize) {
        throw new AcpackError(
          'BAD_ANNOUNCE',
          `${a.node} says ${b.digest} has ${b.size} bytes in ${b.pieceSize}-byte pieces; the tracker knows ${known.ref.size} bytes in ${known.ref.pieceSize}-byte pieces`,
        );
      }
    }
    if (this.swarms.size + fresh > this.opt.maxBlobs) throw new AcpackError('TRACKER_FULL', `the tracker already follows ${this.swarms.size} blobs; ${a.node} is refused`);
  }

  private swarmFor(ref: BlobRef): Swarm {
    let swarm = this.swarms.get(ref.digest);
    if (!swarm) {
      swarm = new Swarm({ digest: ref.digest, size: ref.size, pieceSize: ref.pieceSize });
      this.swarms.set(ref.digest, swarm);
    }
    return swarm;
  }

  private leave(node: NodeRecord, swarm: Swarm): void {
    swarm.remove(node);
    if (swarm.size === 0) this.swarms.delete(swarm.ref.digest);
  }

  /**
   * Super-seeding: the seed pieces for this node, per fetching blob. A piece handed to a node stays
   * its own while the node lacks it and fetches it (or within the grace before its next announce
   * says so); a node gets new ones only up to seedHintsPerNode, and only pieces that no node has, is
   * fetching, or was handed. So when every node starts at once, each piece is handed to one node, and
   * the others wait for it from peers: it leaves the master about once.
   */
  private seedPieces(node: NodeRecord, fetching: Swarm[], now: number): number[][] {
    const out: number[][] = fetching.map(() => []);
    let held = 0;
    fetching.forEach((swarm, i) => {
      const slot = swarm.slot(node)!;
      const have = swarm.haveOf(slot);
      const inFlight = swarm.fetchingOf(slot);
      for (let p = 0; p < swarm.pieces; p++) {
        if (swarm.hintTo[p] !== node) continue;
        if (!has(have, p) && (has(inFlight, p) || now - swarm.hintAt[p] < this.opt.hintGraceMs)) {
          out[i].push(p);
          held++;
        } else swarm.hintTo[p] = undefined;
      }
    });
    // Blobs in the order the node lists them: an agent lists first those its containerd reads now,
    // then the rest as it began them (a preheat: in its image list's order). So the master sends
    // the image containerd takes in first, first, and containerd takes it in while the rest is on
    // the network rather than all at the end.
    for (let i = 0; i < fetching.length; i++) {
      if (held >= this.opt.seedHintsPerNode) break;
      const swarm = fetching[i];
      const slot = swarm.slot(node)!;
      const have = swarm.haveOf(slot);
      const inFlight = swarm.fetchingOf(slot);
      const start = Math.floor(this.opt.random() * swarm.pieces);
      for (let k = 0; k < swarm.pieces && held < this.opt.seedHintsPerNode && out[i].length < MAX_SEED_HINTS; k++) {
        const p = (start + k) % swarm.pieces;
        if (swarm.haveCount[p] !== 0 || swarm.fetchCount[p] !== 0 || swarm.hintTo[p] !== undefined) continue;
        if (has(have, p) || has(inFlight, p)) continue;
        swarm.hintTo[p] = node;
        swarm.hintAt[p] = now;
        out[i].push(p);
        held++;
      }
    }
    return out;
  }

  /**
   * Up to maxPeers nodes for this node, one set for all the blobs it fetches (the response names
   * each once): first those with pieces it lacks in the most blobs, then those fetching such
   * pieces, then the rest (they may have one by the time it asks). Each swarm is scanned from a
   * random member and only so far, so that the useful peers each node hears of differ, uploads
   * spread over the swarm, and an announce costs the same in a swarm of 50 or of 5000.
   */
  private choosePeers(node: NodeRecord, fetching: Swarm[]): PeerInfo[][] {
    const max = this.opt.maxPeers;
    const score = new Map<NodeRecord, { useful: number; soon: number; tie: number }>();
    for (const swarm of fetching) {
      const mine = swarm.haveOf(swarm.slot(node)!);
      const n = swarm.size;
      const start = Math.floor(this.opt.random() * n);
      for (let k = 0; k < Math.min(n, 4 * max); k++) {
        const slot = (start + k) % n;
        const member = swarm.nodes[slot];
        if (member === node) continue;
        let e = score.get(member);
        if (!e) score.set(member, (e = { useful: 0, soon: 0, tie: this.opt.random() }));
        if (hasSomethingFor(mine, swarm.haveOf(slot))) e.useful++;
        else if (hasSomethingFor(mine, swarm.fetchingOf(slot))) e.soon++;
      }
    }
    const chosen = [...score]
      .sort(([, a], [, b]) => b.useful - a.useful || b.soon - a.soon || a.tie - b.tie)
      .slice(0, max)
      .map(([member]) => member);
    return fetching.map((swarm) => {
      const peers: PeerInfo[] = [];
      for (const member of chosen) {
        const slot = swarm.slot(member);
        if (slot !== undefined) peers.push({ id: member.id, addr: member.addr, have: new Bitfield(swarm.pieces, swarm.haveOf(slot).slice()) });
      }
      return peers;
    });
  }
}
