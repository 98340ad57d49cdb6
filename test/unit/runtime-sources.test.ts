import { describe, expect, it } from 'vitest';
import { RuntimeSources, type RuntimeLease } from '../../installer/runtime-sources.js';

/** The leases granted so far, in order, as they come (take() resolves on a later tick). */
async function granted(promises: Promise<RuntimeLease>[]): Promise<(RuntimeLease | undefined)[]> {
  const out: (RuntimeLease | undefined)[] = promises.map(() => undefined);
  promises.forEach((p, i) => void p.then((l) => (out[i] = l)));
  await new Promise((r) => setImmediate(r));
  return out;
}

describe('where each node takes the runtime from', () => {
  it('sends two nodes at a time to the registry, then the rest to the nodes that have it, two each', async () => {
    const s = new RuntimeSources(2, 2);
    const asks = Array.from({ length: 7 }, () => s.take('amd64'));
    let got = await granted(asks);
    expect(got.map((l) => l && (l.peer ?? 'registry'))).toEqual(['registry', 'registry', undefined, undefined, undefined, undefined, undefined]);

    got[0]!.done({ serves: true, peerAddr: '10.0.0.2:5001' });
    got = await granted(asks);
    // The registry's freed slot and the new peer's two: the peer first, least busy first.
    expect(got.slice(2).map((l) => l && (l.peer ?? 'registry'))).toEqual(['10.0.0.2:5001', '10.0.0.2:5001', 'registry', undefined, undefined]);

    got[2]!.done({ serves: true, peerAddr: '10.0.0.4:5001' });
    got = await granted(asks);
    expect(got[5]?.peer).toBe('10.0.0.4:5001');
    expect(got[6]?.peer).toBe('10.0.0.2:5001');
  });

  it('never names a node whose agent does not hold it, nor one of another arch', async () => {
    const s = new RuntimeSources(1, 2);
    const first = await s.take('amd64');
    const second = s.take('amd64');
    first.done({ serves: false, peerAddr: '10.0.0.2:5001' });
    // Not a source: the registry's slot, freed, goes to the next.
    expect((await second).peer).toBeUndefined();

    const arm = s.take('arm64');
    (await second).done({ serves: true, peerAddr: '10.0.0.3:5001' });
    expect((await arm).peer).toBeUndefined();
    expect((await s.take('amd64')).peer).toBe('10.0.0.3:5001');
  });

  it('sends nobody again to a peer that did not give it', async () => {
    const s = new RuntimeSources(1, 2);
    (await s.take('amd64')).done({ serves: true, peerAddr: '10.0.0.2:5001' });
    const [a, b] = [await s.take('amd64'), await s.take('amd64')];
    expect([a.peer, b.peer]).toEqual(['10.0.0.2:5001', '10.0.0.2:5001']);
    a.done({ serves: true, peerAddr: '10.0.0.3:5001', peerFailed: true });
    // The failed peer's other node still holds its slot; the next goes to the node that has it now.
    expect((await s.take('amd64')).peer).toBe('10.0.0.3:5001');
    b.done({ serves: false, peerAddr: '10.0.0.4:5001' });
    const next = await s.take('amd64');
    expect(next.peer).toBe('10.0.0.3:5001');
    const after = await s.take('amd64');
    expect(after.peer).toBeUndefined(); // 10.0.0.3 has two now; 10.0.0.2 is out; the registry
  });

  it('frees the slot of a node whose step failed, once, however often it is told', async () => {
    const s = new RuntimeSources(1, 1);
    const a = await s.take('amd64');
    a.done();
    a.done();
    const b = await s.take('amd64');
    const c = s.take('amd64');
    expect(await granted([c])).toEqual([undefined]);
    b.done();
    expect((await c).peer).toBeUndefined();
  });
});
