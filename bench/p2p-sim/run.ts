/**
 * bench/p2p-sim: the peer cache's tracker and piece selection (p2p/), driven by N virtual nodes that
 * all start fetching S ≈ 400 MB of layers at the same instant over 200 Mbit/s links (the master's
 * too), in discrete time (sim.ts says what is modelled). For N = 50 and N = 500 it reports:
 *
 *   - the master's egress as a multiple of S (goal ≤ 1.2), and how many times each piece left it;
 *   - the time until every node has everything against T_phys = S/B + ⌈log₂N⌉·p/B (goal ≤ 1.3);
 *   - announce bytes per second (request + response, their real JSON), and peer bitfield polls;
 *   - the tracker's memory: a fresh tracker fed every node's announce from mid-run, heap measured
 *     before and after (run with --expose-gc for a clean figure); and the same for 500 nodes ×
 *     300 blobs, most held whole, some in progress.
 *
 * Appends a JSON line to bench/results/p2p-sim.jsonl.
 *
 *   npx tsx bench/p2p-sim/run.ts [--nodes N] [--mbit 200] [--mb 400] [--by-image] [--dt 0.01] [--seed 1] [--no-record]
 *   node --expose-gc --import tsx bench/p2p-sim/run.ts
 */
import { appendFile } from 'node:fs/promises';
import { join } from 'node:path';
import { sha256 } from '../../oci/digest.js';
import { Bitfield } from '../../p2p/bitfield.js';
import { PIECE_SIZE, pieceCount } from '../../p2p/pieces.js';
import { bytesLeft, encodeAnnounce, type Announce } from '../../p2p/protocol.js';
import { Tracker } from '../../p2p/tracker.js';
import { numberOption, ROOT } from '../common.js';
import { seededRandom, simulate, type SimOptions } from './sim.js';

const MB = 1e6;
/** Layer sizes of a Kubernetes distribution's images: a few large, many small; 400 MB in all. */
const LAYERS_MB = [118, 74, 52, 41, 29, 24, 19, 14.5, 11, 7.2, 4.8, 3.1, 1.6, 0.7, 0.1];
const bandwidth = (numberOption('mbit', 200) * 1e6) / 8;
/** S in MB: the layer sizes scaled to it (bench/p2p's --mb). */
const TOTAL_MB = numberOption('mb', 400);
/** As bench/p2p's nodes fetch them: 5 images of 3 layers (layer j in image j mod 5), one image after another. */
const BY_IMAGE = process.argv.includes('--by-image');
const IMAGES = 5;
const only = numberOption('nodes', 0);
const gc = (globalThis as { gc?: () => void }).gc;

/**
 * The heap and the ArrayBuffers outside it (where a Uint8Array's bytes live: most of the tracker's),
 * once collections stop freeing anything (two in a row were not always enough after a simulation).
 */
function heapUsed(): number {
  const measure = () => {
    const m = process.memoryUsage();
    return m.heapUsed + m.arrayBuffers;
  };
  let used = measure();
  for (let i = 0; i < 10 && gc; i++) {
    gc();
    const now = measure();
    if (now >= used - 64 * 1024 && i >= 1) return now;
    used = now;
  }
  return used;
}

/** The heap a fresh tracker holds after one announce from each body. */
function trackerMemory(bodies: unknown[]): { bytes: number; gcExposed: boolean; stats: ReturnType<Tracker['stats']> } {
  const before = heapUsed();
  const tracker = new Tracker();
  for (const body of bodies) tracker.handle(body, 0);
  const bytes = heapUsed() - before;
  return { bytes, gcExposed: gc !== undefined, stats: tracker.stats() };
}

/** 500 nodes × 300 blobs: each node holds 280 whole and fetches 20, half of their pieces had. */
function manyBlobsBodies(nodes: number, blobCount: number, fetching: number): unknown[] {
  const random = seededRandom(7);
  const blobs = Array.from({ length: blobCount }, (_, i) => ({ digest: sha256(`layer ${i}`), size: Math.round((0.1 + 60 * random() ** 3) * MB), pieceSize: PIECE_SIZE }));
  return Array.from({ length: nodes }, (_, n) => {
    const a: Announce = { node: `node${n}`, addr: `10.${(n >> 8) & 255}.${n & 255}.1:5001`, blobs: [], done: [], left: 0, stopped: false };
    const start = Math.floor(random() * blobCount);
    blobs.forEach((b, i) => {
      if ((i - start + blobCount) % blobCount >= fetching) return void a.done.push(b);
      const pieces = pieceCount(b.size);
      const have = new Bitfield(pieces);
      const downloading = new Bitfield(pieces);
      for (let p = 0; p < pieces; p++) {
        const r = random();
        if (r < 0.5) have.set(p);
        else if (r < 0.6) downloading.set(p);
      }
      a.blobs.push({ ...b, have, downloading });
      a.left += bytesLeft(b, have);
    });
    return JSON.parse(JSON.stringify(encodeAnnounce(a)));
  });
}

const round = (x: number, d = 2) => Number(x.toFixed(d));
const results: Record<string, unknown>[] = [];
for (const nodes of only ? [only] : [50, 500]) {
  let snapshot: unknown[] = [];
  const options: SimOptions = {
    nodes,
    blobs: LAYERS_MB.map((mb) => Math.round(((mb * TOTAL_MB) / 400) * MB)),
    preheat: process.argv.includes('--preheat'),
    groups: BY_IMAGE ? Array.from({ length: IMAGES }, (_, i) => LAYERS_MB.flatMap((_, j) => (j % IMAGES === i ? [j] : []))) : undefined,
    bandwidth,
    dt: numberOption('dt', 0.01),
    seedSlots: numberOption('seed-slots', 8),
    peerSlots: numberOption('peer-slots', 4),
    pollMs: numberOption('poll-ms', 250),
    announceOnSeedPiece: true,
    tracker: {},
    picker: { maxPerPeer: numberOption('per-peer', 2), maxTotal: numberOption('total', 4), maxFromSeed: 1 },
    seed: numberOption('seed', 1),
    maxSeconds: 300,
    snapshotAt: 8,
    onSnapshot: (bodies) => (snapshot = bodies),
  };
  const t0 = performance.now();
  const r = simulate(options);
  const wall = (performance.now() - t0) / 1000;
  const S = r.totalBytes;
  const tPhys = S / bandwidth + Math.ceil(Math.log2(nodes)) * (PIECE_SIZE / bandwidth);
  const last = Math.max(...r.finished);
  const sends = r.masterSends;
  const memory = trackerMemory(snapshot);
  const line = {
    nodes,
    mbit: (bandwidth * 8) / 1e6,
    totalMB: round(S / MB, 1),
    pieces: sends.length,
    tPhys: round(tPhys),
    completion: round(last),
    completionOverTPhys: round(last / tPhys),
    medianCompletion: round([...r.finished].sort((a, b) => a - b)[nodes >> 1]),
    masterEgressOverS: round(r.masterEgress / S, 3),
    piecesFromMaster: { never: sends.filter((n) => n === 0).length, once: sends.filter((n) => n === 1).length, more: sends.filter((n) => n > 1).length, max: Math.max(...sends) },
    fromPeersMBPerNode: round(r.fromPeersPerNode / MB, 1),
    announcesPerSecond: round(r.announces / last, 1),
    announceBytesPerSecond: Math.round(r.announceBytes / last),
    announceBytesEach: Math.round(r.announceBytes / r.announces),
    busyRefusalsPerNodePerSecond: round(r.busyRefusals / nodes / last, 1),
    peerPollsPerNodePerSecond: round(r.pollRequests / nodes / last, 1),
    peerPollBytesPerNodePerSecond: Math.round(r.pollBytes / nodes / last),
    trackerHeapBytes: memory.bytes,
    trackerMembers: memory.stats.members,
    simWallSeconds: round(wall, 1),
  };
  results.push(line);
  process.stdout.write(
    `N=${nodes}: every node done at ${line.completion} s = ${line.completionOverTPhys} × T_phys (${line.tPhys} s; median node ${line.medianCompletion} s); ` +
      `master egress ${line.masterEgressOverS} × S (pieces sent once ${line.piecesFromMaster.once}, more ${line.piecesFromMaster.more}, max ${line.piecesFromMaster.max}); ` +
      `${line.fromPeersMBPerNode} MB/node from peers; announces ${line.announcesPerSecond}/s, ${(line.announceBytesPerSecond / 1000).toFixed(1)} kB/s (${line.announceBytesEach} B each); ` +
      `peer polls ${line.peerPollsPerNodePerSecond}/s/node; tracker heap ${(memory.bytes / MB).toFixed(2)} MB for ${memory.stats.members} members` +
      `${memory.gcExposed ? '' : ' (no --expose-gc: rough)'}; simulated in ${line.simWallSeconds} s\n`,
  );
}

const many = trackerMemory(manyBlobsBodies(500, 300, 20));
process.stdout.write(`tracker heap for 500 nodes × 300 blobs (20 in progress each): ${(many.bytes / MB).toFixed(2)} MB for ${many.stats.members} members\n`);
if (!process.argv.includes('--no-record')) await appendFile(
  join(ROOT, 'bench/results/p2p-sim.jsonl'),
  `${JSON.stringify({ bench: 'p2p-sim', date: new Date().toISOString(), gcExposed: gc !== undefined, results, manyBlobs: { nodes: 500, blobs: 300, heapBytes: many.bytes, members: many.stats.members } })}\n`,
);
