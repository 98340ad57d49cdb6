import { describe, expect, it } from 'vitest';
import { sha256, type Digest } from '../../oci/digest.js';
import { Bitfield } from '../../p2p/bitfield.js';
import { PIECE_SIZE } from '../../p2p/pieces.js';
import { bytesLeft, encodeAnnounce, type Announce } from '../../p2p/protocol.js';
import { Tracker } from '../../p2p/tracker.js';

const D = sha256('layer');
const PIECES = 20;
const SIZE = PIECES * PIECE_SIZE;

/** A seeded generator, so that a failure repeats. */
function random(seed = 1): () => number {
  let a = seed;
  return () => ((a = (a * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
}

function fetching(node: string, have: number[] = [], downloading: number[] = [], digest: Digest = D, size = SIZE): Announce {
  const pieces = Math.ceil(size / PIECE_SIZE);
  const h = new Bitfield(pieces);
  for (const p of have) h.set(p);
  const d = new Bitfield(pieces);
  for (const p of downloading) d.set(p);
  const ref = { digest, size, pieceSize: PIECE_SIZE };
  return { node, addr: `10.0.${node.length}.${node.charCodeAt(node.length - 1)}:5001`, blobs: [{ ...ref, have: h, downloading: d }], done: [], left: bytesLeft(ref, h), stopped: false };
}

function holding(node: string): Announce {
  return { node, addr: '10.0.9.9:5001', blobs: [], done: [{ digest: D, size: SIZE, pieceSize: PIECE_SIZE }], left: 0, stopped: false };
}

describe('the tracker', () => {
  it('hands each piece to one node when all start at the same instant, and none once every piece is handed', () => {
    const tracker = new Tracker({ random: random() });
    const hints = Array.from({ length: 30 }, (_, i) => tracker.announce(fetching(`n${i}`), 0).blobs[0].seed);
    const handed = hints.flat();
    expect(handed.length).toBe(PIECES); // one per node while pieces last
    expect(new Set(handed).size).toBe(PIECES); // all different
    expect(hints.slice(PIECES).every((h) => h.length === 0)).toBe(true);
  });

  it('hands a node its seed pieces from its blobs in the order it lists them (what its containerd reads first)', () => {
    const tracker = new Tracker({ random: random() });
    const E = sha256('read first');
    const both = (node: string, first: Digest) => {
      const [a, b] = [fetching(node, [], [], first), fetching(node, [], [], first === D ? E : D)];
      return { ...a, blobs: [...a.blobs, ...b.blobs], left: a.left + b.left };
    };
    // Until every piece of the first-listed blob is handed, every node's hint is in it, whatever the order of others.
    for (let i = 0; i < PIECES; i++) {
      const answer = tracker.announce(both(`n${i}`, i % 2 ? D : E), 0);
      expect(answer.blobs.map((b) => b.seed.length), `node ${i}`).toEqual([1, 0]);
    }
  });

  it('keeps a seed piece with its node while it fetches it, and hands it to another once that node is gone', () => {
    const tracker = new Tracker({ random: random(), interval: 1000 });
    const [piece] = tracker.announce(fetching('a'), 0).blobs[0].seed;
    const others = Array.from({ length: PIECES - 1 }, (_, i) => ({ id: `n${i}`, piece: tracker.announce(fetching(`n${i}`), 0).blobs[0].seed[0] }));
    expect(tracker.announce(fetching('a', [], [piece]), 500).blobs[0].seed).toEqual([piece]);
    expect(tracker.announce(fetching('late'), 600).blobs[0].seed).toEqual([]);
    // The others keep announcing, fetching their pieces; `a` falls silent and is forgotten three intervals after its last announce.
    const othersAnnounce = (t: number) => {
      for (const o of others) expect(tracker.announce(fetching(o.id, [], [o.piece]), t).blobs[0].seed).toEqual([o.piece]);
    };
    for (const t of [1000, 2000, 3000]) othersAnnounce(t);
    expect(tracker.announce(fetching('late'), 3400).blobs[0].seed).toEqual([]);
    othersAnnounce(4000);
    expect(tracker.announce(fetching('late'), 4000).blobs[0].seed).toEqual([piece]);
  });

  it('forgets a node that stops announcing, and a blob nobody holds', () => {
    const tracker = new Tracker({ random: random(), interval: 1000 });
    tracker.announce(holding('seeder'), 0); // idle interval: 30 s
    tracker.announce(fetching('quiet', [1, 2]), 0);
    expect(tracker.announce(fetching('b'), 1000).blobs[0].peers.map((p) => p.id).sort()).toEqual(['quiet', 'seeder']);
    expect(tracker.announce(fetching('b'), 2900).blobs[0].peers.map((p) => p.id).sort()).toEqual(['quiet', 'seeder']);
    expect(tracker.announce(fetching('b'), 4500).blobs[0].peers.map((p) => p.id)).toEqual(['seeder']);
    expect(tracker.stats().nodes).toBe(2);
    tracker.announce({ ...holding('seeder'), stopped: true }, 4600);
    tracker.announce({ ...fetching('b'), blobs: [], left: 0 }, 4700); // b drops the blob
    expect(tracker.stats()).toMatchObject({ nodes: 1, blobs: 0, members: 0 });
  });

  it('lists peers with pieces the node lacks first, and no more than maxPeers', () => {
    const tracker = new Tracker({ random: random(), maxPeers: 10 });
    for (let i = 0; i < 40; i++) tracker.announce(fetching(`empty${i}`), 0);
    for (let i = 0; i < 4; i++) tracker.announce(fetching(`has${i}`, [i]), 0);
    tracker.announce(fetching('same', [7]), 0);
    const peers = tracker.announce(fetching('asker', [7]), 0).blobs[0].peers;
    expect(peers.length).toBe(10);
    expect(peers.slice(0, 4).map((p) => p.id).sort()).toEqual(['has0', 'has1', 'has2', 'has3']);
    expect(peers[0].have.count).toBe(1);
  });

  it('spreads the useful peers over the nodes that ask', () => {
    const tracker = new Tracker({ random: random(), maxPeers: 5 });
    for (let i = 0; i < 50; i++) tracker.announce(fetching(`has${i}`, [i % PIECES]), 0);
    const named = new Map<string, number>();
    for (let i = 0; i < 50; i++) for (const p of tracker.announce(fetching(`asker${i}`), 0).blobs[0].peers) named.set(p.id, (named.get(p.id) ?? 0) + 1);
    expect(named.size).toBeGreaterThan(35); // 250 mentions over 50 holders, not the same 5 each time
    expect(Math.max(...named.values())).toBeLessThan(20);
  });

  it('refuses malformed announces and ones that contradict what it knows, changing nothing', () => {
    const tracker = new Tracker({ random: random() });
    tracker.announce(fetching('a'), 0);
    const body = JSON.parse(JSON.stringify(encodeAnnounce(fetching('b'))));
    expect(() => tracker.handle({ ...body, blobs: [{ ...body.blobs[0], have: 'AAAAAAAA' }] }, 0)).toThrow(/base64 characters/);
    expect(() => tracker.handle({ ...body, node: 'b c' }, 0)).toThrow(/node id/);
    expect(() => tracker.announce(fetching('b', [], [], D, SIZE + 1), 0)).toThrow(/tracker knows/);
    expect(tracker.stats()).toMatchObject({ nodes: 1, members: 1 });
    expect(tracker.handle(body, 0).blobs).toHaveLength(1);
  });

  it('refuses new nodes past maxNodes', () => {
    const tracker = new Tracker({ maxNodes: 2 });
    tracker.announce(fetching('a'), 0);
    tracker.announce(fetching('b'), 0);
    expect(() => tracker.announce(fetching('c'), 0)).toThrow(/already follows 2 nodes/);
    expect(() => tracker.announce(fetching('a', [1]), 1)).not.toThrow();
  });

  it('stretches the interval of fetching nodes as the site grows, and lets idle ones wait longer', () => {
    const tracker = new Tracker({ interval: 2000, maxAnnouncesPerSecond: 10 });
    for (let i = 0; i < 50; i++) tracker.announce(fetching(`n${i}`), 0);
    expect(tracker.announce(fetching('n0'), 0).interval).toBe(5000);
    expect(tracker.announce(holding('n1'), 0).interval).toBe(30_000);
  });
});
