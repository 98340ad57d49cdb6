import { Worker } from 'node:worker_threads';
import { isDigest, type Digest } from './digest.js';
import { stageMemory } from './stages.js';

/**
 * One worker thread that hashes blobs from the stages they are written through (stages.ts): the
 * blob's sha256 and, when asked, its piece hashes (p2p/pieces.ts: the sha256 of each `pieceSize`
 * bytes, concatenated). It runs beside the thread that decompresses or downloads the bytes, which
 * otherwise spends half its time hashing (the two sha256 passes of an import on 2 cores). Stages of
 * one blob are hashed in the order they are sent.
 *
 * Evaluated from source: tests run the TypeScript sources, and the site executable has no worker
 * file to find.
 */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const memory = workerData.memory;
const jobs = new Map();
parentPort.on('message', (m) => {
  try {
    if (m.op === 'start') {
      jobs.set(m.id, { hash: m.pieceSize ? null : createHash('sha256'), pieceSize: m.pieceSize, piece: m.pieceSize ? createHash('sha256') : null, inPiece: 0, pieces: [] });
      return;
    }
    const job = jobs.get(m.id);
    if (m.op === 'update') {
      const bytes = Buffer.from(memory, m.start, m.length);
      if (job.hash) job.hash.update(bytes);
      for (let at = 0; job.piece && at < bytes.length; ) {
        const take = Math.min(bytes.length - at, job.pieceSize - job.inPiece);
        job.piece.update(bytes.subarray(at, at + take));
        job.inPiece += take;
        at += take;
        if (job.inPiece === job.pieceSize) {
          job.pieces.push(job.piece.digest());
          job.piece = createHash('sha256');
          job.inPiece = 0;
        }
      }
      parentPort.postMessage({ id: m.id });
    } else if (m.op === 'end') {
      jobs.delete(m.id);
      if (job.piece && job.inPiece > 0) job.pieces.push(job.piece.digest());
      parentPort.postMessage({ id: m.id, digest: job.hash ? 'sha256:' + job.hash.digest('hex') : null, pieces: job.piece ? Buffer.concat(job.pieces) : null });
    } else if (m.op === 'drop') {
      jobs.delete(m.id);
    }
  } catch (err) {
    parentPort.postMessage({ id: m.id, error: String((err && err.message) || err) });
  }
});
`;

type Reply = { id: number; error?: string; digest?: string | null; pieces?: Uint8Array | null };
type Message = { op: 'start'; id: number; pieceSize: number } | { op: 'update'; id: number; start: number; length: number } | { op: 'end' | 'drop'; id: number };

let nextId = 0;

/** One hashing thread, started on first use, holding the process open only while someone waits for it. */
class HashThread {
  private worker: Worker | undefined;
  /** Per job, the callers waiting for its replies, in order. */
  private readonly waiting = new Map<number, ((r: Reply) => void)[]>();
  private pending = 0;

  send(message: Message): void {
    if (message.op === 'drop' && !this.worker) return;
    this.start().postMessage(message);
  }

  ask(message: Message): Promise<Reply> {
    const worker = this.start();
    worker.postMessage(message);
    if (this.pending++ === 0) worker.ref();
    return new Promise<Reply>((resolve) => {
      const queue = this.waiting.get(message.id) ?? [];
      queue.push(resolve);
      this.waiting.set(message.id, queue);
    }).then(checked);
  }

  private start(): Worker {
    if (this.worker) return this.worker;
    const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { memory: stageMemory() } });
    worker.on('message', (r: Reply) => {
      const queue = this.waiting.get(r.id);
      const resolve = queue?.shift();
      if (queue?.length === 0) this.waiting.delete(r.id);
      if (!resolve) return; // an answer nobody asked for (a failed start or drop): nothing waits on it
      resolve(r);
      if (--this.pending === 0) worker.unref();
    });
    worker.on('error', (err: Error) => {
      for (const queue of this.waiting.values()) for (const resolve of queue) resolve({ id: -1, error: err.message });
      this.waiting.clear();
      this.pending = 0;
      this.worker = undefined;
    });
    // After the listeners: adding a 'message' listener refs the worker's port again.
    worker.unref();
    return (this.worker = worker);
  }
}

function checked(r: Reply): Reply {
  if (r.error !== undefined) throw new Error(`the hashing thread failed: ${r.error}`);
  return r;
}

/** The blob digests' thread, and the piece hashes' (a second sha256 pass over the same bytes, at the same time). */
const threads = { digest: new HashThread(), pieces: new HashThread() };

/** One blob's hashes, computed on the hashing threads from stages (whose bytes must stay put until `update` resolves). */
export class StageHash {
  private readonly id = ++nextId;
  private ended = false;

  constructor(private readonly pieceSize?: number) {
    threads.digest.send({ op: 'start', id: this.id, pieceSize: 0 });
    if (pieceSize) threads.pieces.send({ op: 'start', id: this.id, pieceSize });
  }

  /** Hashes `bytes`, a view of a stage, after everything sent before. */
  async update(bytes: Buffer): Promise<void> {
    const m: Message = { op: 'update', id: this.id, start: bytes.byteOffset, length: bytes.length };
    await Promise.all([threads.digest.ask(m), this.pieceSize ? threads.pieces.ask(m) : undefined]);
  }

  /** The blob's digest, and its piece hashes when they were asked for. */
  async digest(): Promise<{ digest: Digest; pieces?: Buffer }> {
    this.ended = true;
    const m: Message = { op: 'end', id: this.id };
    const [d, p] = await Promise.all([threads.digest.ask(m), this.pieceSize ? threads.pieces.ask(m) : undefined]);
    if (!d.digest || !isDigest(d.digest)) throw new Error('the hashing thread sent no digest');
    return { digest: d.digest, ...(p?.pieces ? { pieces: Buffer.from(p.pieces.buffer, p.pieces.byteOffset, p.pieces.length) } : {}) };
  }

  /** Forgets the blob (its write was abandoned). */
  drop(): void {
    if (this.ended) return;
    this.ended = true;
    threads.digest.send({ op: 'drop', id: this.id });
    if (this.pieceSize) threads.pieces.send({ op: 'drop', id: this.id });
  }
}
