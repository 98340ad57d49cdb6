import { describe, expect, it } from 'vitest';
import { sha256 } from '../../oci/digest.js';
import { Bitfield } from '../../p2p/bitfield.js';
import { PiecePicker, type PickerOptions } from '../../p2p/selection.js';

const D = sha256('layer');
const SEED = 'master';

function bits(pieces: number, set: number[]): Bitfield {
  const f = new Bitfield(pieces);
  for (const p of set) f.set(p);
  return f;
}

function picker(pieces: number, peers: Record<string, number[]>, seed: number[] = [], options: PickerOptions = {}): PiecePicker {
  let a = 7;
  const p = new PiecePicker(SEED, { random: () => ((a = (a * 1103515245 + 12345) % 2 ** 31) / 2 ** 31), ...options });
  p.addBlob(D, pieces);
  p.tracked(
    D,
    Object.entries(peers).map(([id, have]) => ({ id, have: bits(pieces, have) })),
    seed,
    0,
  );
  return p;
}

describe('piece selection', () => {
  it('asks for the rarest pieces first', () => {
    const p = picker(4, { a: [0, 1, 2, 3], b: [0, 1, 2], c: [0, 1], d: [0] }, [], { maxTotal: 1 });
    const order: number[] = [];
    for (;;) {
      const [req] = p.next(0);
      if (!req) break;
      order.push(req.piece);
      p.received(req);
    }
    expect(order).toEqual([3, 2, 1, 0]);
  });

  it('takes blobs in line: those being read, then the rest in the order added', () => {
    const p = picker(4, { a: [0, 1, 2, 3], b: [0, 1, 2], c: [0, 1], d: [0] }, [], { maxTotal: 1 });
    const second = sha256('added second');
    p.addBlob(second, 3);
    p.tracked(second, [{ id: 'a', have: bits(3, [0, 1, 2]) }], [], 0);
    const next = () => {
      const [req] = p.next(0);
      p.received(req);
      return `${req.digest === D ? 'first' : 'second'}:${req.piece}`;
    };
    // Nobody reads either: the blob added first, rarest piece first, though the second's pieces
    // (one peer each) are rarer than its piece 2 (three peers).
    expect([next(), next()]).toEqual(['first:3', 'first:2']);
    p.reading(second, true);
    expect([next(), next(), next()].sort()).toEqual(['second:0', 'second:1', 'second:2']);
    expect([next(), next()]).toEqual(['first:1', 'first:0']);
  });

  it('spreads requests over peers within the per-peer and total bounds', () => {
    const all = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
    const p = picker(10, { a: all, b: all, c: all }, [], { maxPerPeer: 2, maxTotal: 5 });
    const reqs = p.next(0);
    expect(reqs).toHaveLength(5);
    expect(new Set(reqs.map((r) => r.piece)).size).toBe(5);
    const perPeer = new Map<string, number>();
    for (const r of reqs) perPeer.set(r.peer, (perPeer.get(r.peer) ?? 0) + 1);
    expect(Math.max(...perPeer.values())).toBe(2);
    expect(p.next(0)).toEqual([]);
    expect(p.downloading(D).count).toBe(5);
  });

  it('takes from the seed only the pieces the tracker handed it', () => {
    const p = picker(6, { a: [0], b: [] }, [4], { maxFromSeed: 2 });
    const reqs = p.next(0);
    expect(reqs.filter((r) => r.peer === SEED).map((r) => r.piece)).toEqual([4]);
    expect(reqs.filter((r) => r.peer !== SEED).map((r) => r.piece)).toEqual([0]);
  });

  it('goes to the seed for pieces no peer has when the tracker is out of reach, bounded', () => {
    const p = picker(6, { a: [0] }, [], { maxFromSeed: 2 });
    p.trackerLost = true;
    const fromSeed = p.next(0).filter((r) => r.peer === SEED);
    expect(fromSeed).toHaveLength(2);
    expect(fromSeed.every((r) => r.piece !== 0)).toBe(true);
  });

  it('never asks a shunned peer again, whatever the tracker says of it', () => {
    const p = picker(3, { bad: [0, 1, 2], good: [0] }, [], { maxPerPeer: 3 });
    const first = p.next(0);
    const fromBad = first.find((r) => r.peer === 'bad')!;
    const released = p.rejected(fromBad);
    for (const r of first) if (r.peer === 'good') p.received(r);
    expect(p.isShunned('bad')).toBe(true);
    expect(released.every((r) => r.peer === 'bad')).toBe(true);
    p.tracked(D, [{ id: 'bad', have: Bitfield.full(3) }, { id: 'good', have: Bitfield.full(3) }], [], 0);
    p.updatePeer(D, 'bad', Bitfield.full(3));
    for (let round = 0; round < 5; round++) {
      for (const r of p.next(round)) {
        expect(r.peer).not.toBe('bad');
        p.received(r);
      }
    }
    expect(p.complete(D)).toBe(true);
  });

  it('releases a dead peer\'s pieces and asks another peer for them', () => {
    const p = picker(4, { a: [0, 1, 2, 3], b: [0, 1, 2, 3] }, [], { maxPerPeer: 2, maxTotal: 4 });
    const reqs = p.next(0);
    const toA = reqs.filter((r) => r.peer === 'a').map((r) => r.piece).sort();
    expect(toA).toHaveLength(2);
    expect(p.peerDead('a', 0).map((r) => r.piece).sort()).toEqual(toA);
    expect(p.downloading(D).count).toBe(2); // only b's pieces are still asked for
    expect(p.next(0)).toEqual([]); // a is left out and b has no room: the pieces wait
    for (const r of p.inFlight()) p.received(r);
    const rest = p.next(1);
    expect(rest.map((r) => [r.peer, r.piece]).sort()).toEqual(toA.map((piece) => ['b', piece]));
  });

  it('asks a second peer for the last pieces, and names the copy to cancel', () => {
    const p = picker(2, { a: [0, 1], b: [0, 1], c: [0, 1], d: [0, 1] }, [], { maxPerPeer: 1, maxTotal: 4 });
    const reqs = p.next(0); // both pieces asked for, then each from a second peer at once
    expect(reqs).toHaveLength(4);
    for (const piece of [0, 1]) {
      const peers = reqs.filter((r) => r.piece === piece).map((r) => r.peer);
      expect(new Set(peers).size).toBe(2);
    }
    const win = reqs[0];
    const cancel = p.received(win);
    expect(cancel).toEqual(reqs.filter((r) => r.piece === win.piece && r.peer !== win.peer));
    expect(p.downloading(D).toArray()).toEqual([1 - win.piece]);
  });

  it('leaves a busy peer alone for a moment', () => {
    const p = picker(2, { a: [0, 1], b: [0, 1] }, [], { maxPerPeer: 1, maxTotal: 1, busyPauseMs: 100 });
    const [first] = p.next(0);
    p.busy(first, 0);
    const [retry] = p.next(10);
    expect(retry.peer).not.toBe(first.peer);
    p.busy(retry, 10);
    expect(p.next(50)).toEqual([]);
    expect(p.next(101)).toHaveLength(1);
  });

  it('leaves a seed that failed alone for a second, then asks it again', () => {
    const p = picker(3, {}, [0, 1, 2], { seedPauseMs: 1000 });
    const [req] = p.next(0);
    expect(req.peer).toBe(SEED);
    p.seedFailed(req, 0);
    expect(p.next(10)).toEqual([]);
    expect(p.next(999)).toEqual([]);
    const [again] = p.next(1001);
    expect(again.peer).toBe(SEED);
  });

  it('takes from the seed what only a shunned peer is said to have, though the tracker hands nothing', () => {
    // The tracker lists a liar holding every piece and another node holding none: it hints nothing.
    const p = picker(2, { liar: [0, 1], b: [] }, [], { maxFromSeed: 2 });
    const [req] = p.next(0);
    expect(req.peer).toBe('liar');
    p.rejected(req);
    expect(p.next(1)).toEqual([]);
    p.tracked(D, [{ id: 'liar', have: bits(2, [0, 1]) }, { id: 'b', have: bits(2, []) }], [], 1);
    expect(p.next(2).map((r) => r.peer)).toEqual([SEED, SEED]);
    // Once an honest peer has a piece, it comes from there rather than the seed.
    const q = picker(2, { liar: [0, 1], b: [] }, [], { maxFromSeed: 2 });
    q.rejected(q.next(0)[0]);
    q.tracked(D, [{ id: 'liar', have: bits(2, [0, 1]) }, { id: 'b', have: bits(2, [0]) }], [], 1);
    expect(q.next(1).map((r) => `${r.piece}@${r.peer}`).sort()).toEqual(['0@b', `1@${SEED}`]);
  });

  it('takes from the seed what only a dead peer is said to have while it is left out, and from the peer once it is back', () => {
    // The only holder dies mid-piece; the tracker, which knows nothing of it, keeps listing it.
    const p = picker(2, { a: [0, 1], b: [] }, [], { maxFromSeed: 2, deadPeerPauseMs: 10_000 });
    const reqs = p.next(0);
    expect(reqs.map((r) => r.peer)).toEqual(['a', 'a']);
    expect(p.peerDead('a', 5)).toHaveLength(2);
    p.tracked(D, [{ id: 'a', have: bits(2, [0, 1]) }, { id: 'b', have: bits(2, []) }], [], 300);
    const fromSeed = p.next(300);
    expect(fromSeed.map((r) => r.peer)).toEqual([SEED, SEED]);
    p.received(fromSeed[0]);
    p.failed(fromSeed[1]);
    // Back after its pause: what it has comes from it again, not from the seed.
    p.tracked(D, [{ id: 'a', have: bits(2, [0, 1]) }, { id: 'b', have: bits(2, []) }], [], 10_006);
    expect(p.next(10_006).map((r) => `${r.piece}@${r.peer}`)).toEqual(['1@a']);
  });
});
