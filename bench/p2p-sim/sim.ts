/**
 * The swarm in discrete time: N virtual nodes and the master, each with an upload and a download
 * capacity, fetching the same blobs from the same instant. The tracker and each node's piece
 * picker are the real modules; announces go through the real JSON encoding and checks, so their
 * bytes are what the wire would carry. What the node agent will do is modelled here:
 *
 * - it announces at the interval the tracker gives (±10% jitter, so that nodes started together do
 *   not stay in lock-step), and at once when a seed piece arrives (the tracker hands out the next);
 * - a piece response carries the serving peer's bitfield (a header), and a node with nothing to ask
 *   asks its peers for their bitfields, at most every `pollMs`;
 * - the master serves at most `seedSlots` pieces at a time and queues the rest in order.
 *
 * Links: a transfer's rate is a max-min fair share of its source's upload and its receiver's
 * download (a few rounds of water-filling per step). No latency: RTT ≈ 0, as on the test hosts.
 */
import type { Digest } from '../../oci/digest.js';
import { sha256 } from '../../oci/digest.js';
import { Bitfield } from '../../p2p/bitfield.js';
import { PIECE_SIZE, pieceCount, pieceRange } from '../../p2p/pieces.js';
import { bytesLeft, encodeAnnounce, parseAnnounceResponse, type Announce } from '../../p2p/protocol.js';
import { PiecePicker, type PickerOptions, type PieceRequest } from '../../p2p/selection.js';
import { Tracker, type TrackerOptions } from '../../p2p/tracker.js';

export interface SimOptions {
  nodes: number;
  /** Blob sizes in bytes. */
  blobs: number[];
  /**
   * The order a node's consumer asks for them: indexes into `blobs`, group by group, the next group
   * once every blob of the last is whole (ctr fetching one image after another, its layers at
   * once). Without it, every blob is wanted from the start.
   */
  groups?: number[][];
  /**
   * With groups: every blob is fetched from the start (the agent preheats the node's image list),
   * and the consumer reads its group's blobs meanwhile, which the picker and the announce put first.
   */
  preheat?: boolean;
  /** Link capacity of every node and of the master, bytes per second. */
  bandwidth: number;
  /** Time step, seconds. */
  dt: number;
  seedSlots: number;
  /** Uploads a node serves at once; a request beyond them is refused as busy. */
  peerSlots: number;
  pollMs: number;
  /** Announce at once when a seed piece arrives. */
  announceOnSeedPiece: boolean;
  tracker: TrackerOptions;
  picker: PickerOptions;
  seed: number;
  /** Give up after this many simulated seconds. */
  maxSeconds: number;
  /** Called once, at this simulated second, with every node's latest announce body (for the memory measurement). */
  snapshotAt?: number;
  onSnapshot?: (bodies: unknown[]) => void;
}

export interface SimResult {
  nodes: number;
  totalBytes: number;
  seconds: number;
  /** Every node's completion time, seconds. */
  finished: number[];
  masterEgress: number;
  /** How many times each piece left the master, over all blobs. */
  masterSends: number[];
  announces: number;
  announceBytes: number;
  pollRequests: number;
  busyRefusals: number;
  pollBytes: number;
  fromPeersPerNode: number;
  trackerStats: ReturnType<Tracker['stats']>;
}

/** mulberry32: a small seeded generator, so that a run can be repeated. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Blob {
  digest: Digest;
  size: number;
  pieces: number;
  /** Index of its first piece in masterSends. */
  offset: number;
}

interface Node {
  index: number;
  id: string;
  addr: string;
  picker: PiecePicker;
  nextAnnounce: number;
  lastPoll: number;
  /** Peers the tracker listed, per blob. */
  peers: Map<Digest, string[]>;
  dirty: boolean;
  finishedAt: number;
  fromPeers: number;
  /** Blobs its consumer asked for so far (see SimOptions.groups). */
  wanted: Blob[];
  group: number;
  lastBody?: unknown;
}

interface Transfer {
  req: PieceRequest;
  /** Node index; the master is `nodes.length`. */
  src: number;
  dst: number;
  left: number;
  rate: number;
  active: boolean;
  done: boolean;
}

const POLL_REQUEST_BYTES = 160; // a small GET and its headers, each way about the same

export function simulate(o: SimOptions): SimResult {
  const random = seededRandom(o.seed);
  const tracker = new Tracker({ ...o.tracker, random });
  const MASTER = o.nodes;
  const blobs: Blob[] = [];
  let offset = 0;
  for (const [i, size] of o.blobs.entries()) {
    const pieces = pieceCount(size);
    blobs.push({ digest: sha256(`blob ${i}`), size, pieces, offset });
    offset += pieces;
  }
  const blobOf = new Map(blobs.map((b) => [b.digest, b]));
  const totalBytes = blobs.reduce((s, b) => s + b.size, 0);
  const masterSends = new Array<number>(offset).fill(0);

  const groups = o.groups ?? [blobs.map((_, i) => i)];
  const nodes: Node[] = [];
  for (let i = 0; i < o.nodes; i++) {
    const picker = new PiecePicker('master', { ...o.picker, random });
    const wanted = (o.preheat ? groups.flat() : groups[0]).map((j) => blobs[j]);
    for (const b of wanted) picker.addBlob(b.digest, b.pieces);
    for (const j of groups[0]) picker.reading(blobs[j].digest, true);
    nodes.push({
      wanted,
      group: 0,
      index: i,
      id: `node${i}`,
      addr: `10.${(i >> 8) & 255}.${i & 255}.1:5001`,
      picker,
      nextAnnounce: 0,
      lastPoll: -Infinity,
      peers: new Map(),
      dirty: true,
      finishedAt: Infinity,
      fromPeers: 0,
    });
  }
  const byId = new Map(nodes.map((n) => [n.id, n]));
  const wants = (n: Node, b: Blob) => n.wanted.includes(b);
  /** What a node holds of a blob: nothing of one its consumer has not asked for yet. */
  const haveOf = (n: Node, b: Blob) => (wants(n, b) ? n.picker.have(b.digest) : new Bitfield(b.pieces));
  /** Moves a node whose current group is whole on to the next; true once it has every group. */
  const advance = (n: Node): boolean => {
    while (groups[n.group].every((j) => n.picker.complete(blobs[j].digest))) {
      if (++n.group >= groups.length) return true;
      for (const j of groups[n.group]) {
        if (!wants(n, blobs[j])) {
          n.wanted.push(blobs[j]);
          n.picker.addBlob(blobs[j].digest, blobs[j].pieces);
        }
        n.picker.reading(blobs[j].digest, true); // added first: reading a blob the picker lacks is a no-op
      }
      n.nextAnnounce = Math.min(n.nextAnnounce, 0); // the agent announces a new fetch at once
    }
    return false;
  };

  let transfers: Transfer[] = [];
  const masterQueue: Transfer[] = [];
  let masterActive = 0;
  let masterEgress = 0;
  let announces = 0;
  let announceBytes = 0;
  let pollRequests = 0;
  let busyRefusals = 0;
  const uploads = new Int32Array(o.nodes);
  let pollBytes = 0;
  let snapshotTaken = false;

  const announce = (node: Node, now: number) => {
    const a: Announce = { node: node.id, addr: node.addr, blobs: [], done: [], left: 0, stopped: false };
    // As the agent does: the blobs its consumer reads first.
    const order = [...node.wanted].sort((x, y) => Number(node.picker.isRead(y.digest)) - Number(node.picker.isRead(x.digest)));
    for (const b of order) {
      const have = node.picker.have(b.digest);
      if (have.isFull) a.done.push({ digest: b.digest, size: b.size, pieceSize: PIECE_SIZE });
      else {
        a.blobs.push({ digest: b.digest, size: b.size, pieceSize: PIECE_SIZE, have, downloading: node.picker.downloading(b.digest) });
        a.left += bytesLeft({ digest: b.digest, size: b.size, pieceSize: PIECE_SIZE }, have);
      }
    }
    const body = JSON.stringify(encodeAnnounce(a));
    const answer = JSON.stringify(tracker.handle(JSON.parse(body), now * 1000));
    announces++;
    announceBytes += body.length + answer.length;
    node.lastBody = JSON.parse(body);
    const response = parseAnnounceResponse(
      JSON.parse(answer),
      a.blobs.map((b) => ({ digest: b.digest, pieces: b.have.length })),
    );
    response.blobs.forEach((r) => {
      node.picker.tracked(r.digest, r.peers, r.seed, now * 1000);
      node.peers.set(r.digest, r.peers.map((p) => p.id));
    });
    node.nextAnnounce = now + (response.interval / 1000) * (0.9 + 0.2 * random());
    node.dirty = true;
  };

  /** One request to each listed peer, answered with its bitfields of the blobs this node still fetches. */
  const poll = (node: Node) => {
    const fetching = node.wanted.filter((b) => !node.picker.complete(b.digest));
    const asked = new Set<string>();
    for (const b of fetching) for (const id of node.peers.get(b.digest) ?? []) asked.add(id);
    for (const id of asked) {
      const peer = byId.get(id)!;
      pollRequests++;
      pollBytes += POLL_REQUEST_BYTES * 2;
      for (const b of fetching) {
        pollBytes += 75 + 4 * Math.ceil(Math.ceil(b.pieces / 8) / 3);
        if (node.peers.get(b.digest)?.includes(id)) node.picker.updatePeer(b.digest, id, haveOf(peer, b));
      }
    }
  };

  /** Starts a transfer; false when the peer refused it as busy. */
  const start = (node: Node, req: PieceRequest, now: number): boolean => {
    const b = blobOf.get(req.digest)!;
    const { start, end } = pieceRange(b.size, req.piece);
    const t: Transfer = { req, src: req.peer === 'master' ? MASTER : byId.get(req.peer)!.index, dst: node.index, left: end - start, rate: 0, active: false, done: false };
    if (t.src !== MASTER && uploads[t.src] >= o.peerSlots) {
      busyRefusals++;
      node.picker.busy(req, now * 1000);
      node.dirty = true;
      return false;
    }
    transfers.push(t);
    if (t.src === MASTER) masterQueue.push(t);
    else {
      t.active = true;
      uploads[t.src]++;
    }
    return true;
  };

  /** Drops the transfer of an endgame copy that lost the race. */
  const cancel = (node: Node, req: PieceRequest) => {
    const t = transfers.find((x) => !x.done && x.dst === node.index && x.req.digest === req.digest && x.req.piece === req.piece && x.req.peer === req.peer);
    if (!t) return;
    t.done = true;
    if (t.src === MASTER && t.active) masterActive--;
    if (t.src !== MASTER) uploads[t.src]--;
    const q = masterQueue.indexOf(t);
    if (q >= 0) masterQueue.splice(q, 1);
  };

  const upCap = new Float64Array(o.nodes + 1);
  const downCap = new Float64Array(o.nodes + 1);
  const outCount = new Int32Array(o.nodes + 1);
  const inCount = new Int32Array(o.nodes + 1);
  const allocate = (active: Transfer[]) => {
    upCap.fill(o.bandwidth);
    downCap.fill(o.bandwidth);
    for (const t of active) t.rate = 0;
    let open = active;
    for (let round = 0; round < 4 && open.length > 0; round++) {
      outCount.fill(0);
      inCount.fill(0);
      for (const t of open) {
        outCount[t.src]++;
        inCount[t.dst]++;
      }
      const shares = open.map((t) => Math.min(upCap[t.src] / outCount[t.src], downCap[t.dst] / inCount[t.dst]));
      open.forEach((t, i) => {
        t.rate += shares[i];
        upCap[t.src] -= shares[i];
        downCap[t.dst] -= shares[i];
      });
      const eps = o.bandwidth * 1e-6;
      open = open.filter((t) => upCap[t.src] > eps && downCap[t.dst] > eps);
    }
  };

  let now = 0;
  let unfinished = o.nodes;
  for (; unfinished > 0 && now < o.maxSeconds; now += o.dt) {
    for (const node of nodes) if (now >= node.nextAnnounce) announce(node, now);
    if (!snapshotTaken && o.snapshotAt !== undefined && now >= o.snapshotAt) {
      snapshotTaken = true;
      o.onSnapshot?.(nodes.map((n) => n.lastBody));
    }

    while (masterActive < o.seedSlots && masterQueue.length > 0) {
      masterQueue.shift()!.active = true;
      masterActive++;
    }
    const active = transfers.filter((t) => t.active && !t.done);
    allocate(active);
    for (const t of active) {
      if (t.done) continue; // an endgame copy cancelled earlier in this step
      t.left -= t.rate * o.dt;
      const bytes = t.rate * o.dt + Math.min(0, t.left);
      if (t.src === MASTER) masterEgress += bytes;
      else nodes[t.dst].fromPeers += bytes;
      if (t.left > 1e-6) continue;
      t.done = true;
      const node = nodes[t.dst];
      if (t.src !== MASTER) uploads[t.src]--;
      if (t.src === MASTER) {
        masterActive--;
        masterSends[blobOf.get(t.req.digest)!.offset + t.req.piece]++;
      }
      for (const other of node.picker.received(t.req)) cancel(node, other);
      if (t.src !== MASTER) node.picker.updatePeer(t.req.digest, t.req.peer, haveOf(nodes[t.src], blobOf.get(t.req.digest)!));
      node.dirty = true;
      if (advance(node)) {
        node.finishedAt = now + o.dt;
        unfinished--;
        node.nextAnnounce = now + o.dt; // it now seeds: say so
      } else if (t.src === MASTER && o.announceOnSeedPiece) node.nextAnnounce = now + o.dt;
    }
    // Requests go out in the step that freed their slot; a refusal costs a round trip (≈ 0 here), so
    // the node asks again at once, a few times at most.
    for (const node of nodes) {
      if (node.finishedAt < Infinity) continue;
      if (!node.dirty && now * 1000 - node.lastPoll < o.pollMs) continue;
      node.dirty = false;
      for (let attempt = 0; attempt < 4; attempt++) {
        let reqs = node.picker.next(now * 1000);
        if (reqs.length === 0 && attempt === 0 && now * 1000 - node.lastPoll >= o.pollMs && node.picker.inFlight().filter((r) => r.peer !== 'master').length < (o.picker.maxTotal ?? 8)) {
          node.lastPoll = now * 1000;
          poll(node);
          reqs = node.picker.next(now * 1000);
        }
        let refused = false;
        for (const r of reqs) if (!start(node, r, now)) refused = true;
        if (!refused) break;
      }
    }
    transfers = transfers.filter((t) => !t.done);
    // P2P_SIM_DEBUG=1 prints the swarm once a simulated second, for tuning.
    if (process.env.P2P_SIM_DEBUG && Math.round(now / o.dt) % Math.round(1 / o.dt) === 0) {
      const rate = active.reduce((s, t) => s + t.rate, 0);
      const had = nodes.reduce((s, n) => s + blobs.reduce((x, b) => x + haveOf(n, b).count, 0), 0);
      const idle = nodes.filter((n) => n.finishedAt === Infinity && n.picker.inFlight().length === 0).length;
      const outs = new Map<number, number>();
      for (const t of active) outs.set(t.src, (outs.get(t.src) ?? 0) + 1);
      console.log(`t=${now.toFixed(1)} util=${(rate / (o.nodes * o.bandwidth)).toFixed(2)} pieces=${(had / o.nodes / offset).toFixed(2)} idle=${idle} transfers=${active.length} uploaders=${outs.size} maxOut=${Math.max(0, ...outs.values())} master=${(masterEgress / totalBytes).toFixed(2)} q=${masterQueue.length}`);
    }
  }
  return {
    nodes: o.nodes,
    totalBytes,
    seconds: now,
    finished: nodes.map((n) => n.finishedAt),
    masterEgress,
    masterSends,
    announces,
    announceBytes,
    pollRequests,
    busyRefusals,
    pollBytes,
    fromPeersPerNode: nodes.reduce((s, n) => s + n.fromPeers, 0) / o.nodes,
    trackerStats: tracker.stats(),
  };
}
