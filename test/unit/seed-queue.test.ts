import { describe, expect, it } from 'vitest';
import { EventEmitter } from 'node:events';
import type { ServerResponse } from 'node:http';
import { SeedQueue } from '../../registry/seed-queue.js';

/** What SeedQueue uses of a response: its close event, and a 503 when a wait runs out. */
class FakeResponse extends EventEmitter {
  status = 0;
  destroyed = false;
  headersSent = false;
  writeHead(status: number) {
    this.status = status;
    this.headersSent = true;
    return this;
  }
  end() {
    this.emit('close');
    return this;
  }
}

const tick = () => new Promise((r) => setImmediate(r));

describe("the master's seed queue", () => {
  it('sends as many pieces at once as it has slots, the rest in the order asked, each as a slot frees', async () => {
    const q = new SeedQueue(2, 10_000);
    const started: number[] = [];
    const res = [0, 1, 2, 3].map(() => new FakeResponse());
    res.forEach((r, i) => void q.serve(r as unknown as ServerResponse, async () => void started.push(i)));
    await tick();
    expect(started).toEqual([0, 1]);
    expect(q.load).toEqual({ active: 2, waiting: 2 });
    res[1].emit('close');
    await tick();
    expect(started).toEqual([0, 1, 2]);
    res[0].emit('close');
    res[0].emit('close'); // a second close frees nothing more
    await tick();
    expect(started).toEqual([0, 1, 2, 3]);
    expect(q.load).toEqual({ active: 2, waiting: 0 });
    res[2].emit('close');
    res[3].emit('close');
    expect(q.load).toEqual({ active: 0, waiting: 0 });
  });

  it('drops a request whose client left while it waited, and answers 503 to one that waited too long', async () => {
    const q = new SeedQueue(1, 200);
    const started: string[] = [];
    const [a, gone, late] = [new FakeResponse(), new FakeResponse(), new FakeResponse()];
    void q.serve(a as unknown as ServerResponse, async () => void started.push('a'));
    const goneServed = q.serve(gone as unknown as ServerResponse, async () => void started.push('gone'));
    const lateServed = q.serve(late as unknown as ServerResponse, async () => void started.push('late'));
    await tick();
    gone.destroyed = true;
    gone.emit('close');
    await goneServed;
    expect(gone.status).toBe(0); // nobody to answer
    await lateServed; // `a` holds the one slot past the wait
    expect(late.status).toBe(503);
    expect(started).toEqual(['a']);
    a.emit('close');
    expect(q.load).toEqual({ active: 0, waiting: 0 });
  });

  it('frees the slot of a send that fails', async () => {
    const q = new SeedQueue(1, 10_000);
    const r = new FakeResponse();
    await expect(q.serve(r as unknown as ServerResponse, async () => Promise.reject(new Error('disk')))).rejects.toThrow('disk');
    expect(q.load).toEqual({ active: 0, waiting: 0 });
  });
});
