import type { ServerResponse } from 'node:http';
import { SEED_WAIT_MS } from '../p2p/protocol.js';

/**
 * The master as a seed serves a few pieces at a time, at its link's full speed, and queues the rest
 * in the order asked. Served all at once, 100 pieces would each crawl at 1/100 of the link and none
 * would reach a node soon enough for it to pass on: the swarm would wait on the master for all of S.
 * One at a time at full speed, the first piece is out in p/B and its node serves it on while the
 * master sends the next (bench/p2p-sim: at 50 nodes, every node done at 1.19·T_phys with 8 slots,
 * 1.48 with a slot per request).
 *
 * Only the agents' piece requests wait here (they say so with PIECE_HEADER, p2p/protocol.ts);
 * containerd's own pulls and everything else are served at once. Per process: a `serve` with
 * workers gives each its share of SEED_SLOTS.
 */

/** Pieces the master sends at once, over all its workers. */
export const SEED_SLOTS = 8;

export class SeedQueue {
  private active = 0;
  private readonly waiting: { go: (granted: boolean) => void }[] = [];

  constructor(
    readonly slots: number,
    readonly maxWaitMs = SEED_WAIT_MS,
  ) {}

  /** Pieces being sent, and waiting. */
  get load(): { active: number; waiting: number } {
    return { active: this.active, waiting: this.waiting.length };
  }

  /**
   * Runs `send` once a slot is free, the slot held until the response closes (sent, or the client
   * gone). A request whose client leaves while it waits is dropped; one that waits too long is
   * answered 503, and its agent asks again.
   */
  async serve(res: ServerResponse, send: () => Promise<void>): Promise<void> {
    if (this.active >= this.slots || this.waiting.length > 0) {
      const ok = await new Promise<boolean>((resolve) => {
        const leave = (granted: boolean) => {
          clearTimeout(timer);
          res.off('close', gone);
          const i = this.waiting.indexOf(entry);
          if (i >= 0) this.waiting.splice(i, 1);
          resolve(granted);
        };
        const entry = { go: leave };
        const gone = () => leave(false);
        const timer = setTimeout(() => leave(false), this.maxWaitMs);
        res.once('close', gone);
        this.waiting.push(entry);
      });
      if (!ok) {
        if (!res.destroyed && !res.headersSent) {
          res.writeHead(503, { 'content-type': 'application/json', 'retry-after': '1' });
          res.end(JSON.stringify({ errors: [{ code: 'UNAVAILABLE', message: `every seed slot stayed taken for ${this.maxWaitMs / 1000} s: ask again` }] }));
        }
        return;
      }
    } else this.active++;
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      const next = this.waiting.shift();
      // The slot passes straight to the next in line; otherwise it is free.
      if (next) next.go(true);
      else this.active--;
    };
    res.once('close', release);
    try {
      await send();
    } catch (err) {
      release();
      throw err;
    }
  }
}
