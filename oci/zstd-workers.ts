import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';

/**
 * Worker threads that compress whole zstd frames, so that the packer's zstd work runs on every core
 * while its main thread reads and hashes. Frames live in one SharedArrayBuffer that the caller fills
 * and the workers compress within: nothing is copied, transferred or allocated per frame (fresh
 * buffers cost a page fault per 4 KiB, and V8 counts every transferred one as new external memory,
 * which in a first version had the main thread collecting garbage for a fifth of the run).
 *
 * The worker is evaluated from source rather than loaded from a file: tests run the TypeScript
 * sources, and the built packer has no worker file of its own to find.
 */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const b = require(workerData.napiBinding);
const cctx = new b.CCtx();
cctx.setParameter(b.CParameter.checksumFlag, 1);
const memory = workerData.memory;
parentPort.on('message', ({ id, input, length, output, room, level }) => {
  try {
    cctx.setParameter(b.CParameter.compressionLevel, level);
    const n = cctx.compress2(Buffer.from(memory, output, room), Buffer.from(memory, input, length));
    parentPort.postMessage({ id, length: n });
  } catch (err) {
    parentPort.postMessage({ id, error: String((err && err.message) || err) });
  }
});
`;

/** zstd's ZSTD_COMPRESSBOUND: the most a frame of `size` bytes can take compressed. */
export function compressBound(size: number): number {
  return size + (size >> 8) + (size < 128 << 10 ? ((128 << 10) - size) >> 11 : 0);
}

type Reply = { id: number; length: number } | { id: number; error: string };
interface Slot {
  worker: Worker;
  jobs: Map<number, { resolve: (n: number) => void; reject: (e: Error) => void }>;
}

export class ZstdWorkers {
  private readonly slots: Slot[] = [];
  private nextId = 0;
  private failed: Error | undefined;

  /** `memory`: where every frame to compress, and every compressed frame, is. */
  constructor(
    readonly memory: SharedArrayBuffer,
    count: number,
  ) {
    // zstd-napi, as zstd.ts: the compressor's libzstd is pinned by the lockfile, not by Node's release.
    const workerData = { napiBinding: createRequire(import.meta.url).resolve('zstd-napi/binding.js'), memory };
    for (let i = 0; i < count; i++) {
      const slot: Slot = { worker: new Worker(WORKER_SOURCE, { eval: true, workerData }), jobs: new Map() };
      slot.worker.on('message', (r: Reply) => {
        const job = slot.jobs.get(r.id);
        slot.jobs.delete(r.id);
        if ('error' in r) job?.reject(new Error(`zstd: ${r.error}`));
        else job?.resolve(r.length);
      });
      const die = (err: Error) => {
        this.failed ??= err;
        for (const job of slot.jobs.values()) job.reject(err);
        slot.jobs.clear();
      };
      slot.worker.on('error', die);
      slot.worker.on('exit', (code) => die(new Error(`a zstd worker thread exited (${code})`)));
      this.slots.push(slot);
    }
  }

  get size(): number {
    return this.slots.length;
  }

  /**
   * Compresses `length` bytes at `input` of the memory into one frame (checksummed, its content size
   * in its header) at `level`, written at `output` (at most `room` bytes); resolves to its length.
   * Neither range may be touched until then.
   */
  compress(input: number, length: number, output: number, room: number, level: number): Promise<number> {
    if (this.failed) return Promise.reject(this.failed);
    const slot = this.slots.reduce((a, b) => (b.jobs.size < a.jobs.size ? b : a));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      slot.jobs.set(id, { resolve, reject });
      slot.worker.postMessage({ id, input, length, output, room, level });
    });
  }

  async close(): Promise<void> {
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }
}
