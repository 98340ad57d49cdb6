/**
 * Buffers of one size, used again. Allocating a fresh large buffer for every chunk sent or piece
 * received makes the kernel zero new pages each time and V8 run full collections as its external
 * memory grows: the registry's blob reads (1 MiB chunks) and the peer agent's pieces (1 MiB, in
 * from a peer, out to its containerd and its peers; a fifth or so of the agent's CPU in bench/p2p
 * before) both take theirs from a pool.
 *
 * A buffer goes back only when nothing holds it any more: after it was hashed and written, or after
 * the socket took all of it (a write's callback). Where that is not certain (a request cut midway),
 * it is not given back, and the garbage collector has it.
 */
export class BufferPool {
  private readonly free: ArrayBuffer[] = [];

  constructor(
    readonly size: number,
    /** Buffers kept free at most; more given back are left to the garbage collector. */
    readonly keep: number,
  ) {}

  /** A buffer of `length` bytes (at most `size`; longer ones are allocated apart), its content unset. */
  take(length: number): Buffer {
    if (length > this.size) return Buffer.allocUnsafeSlow(length);
    const ab = this.free.pop() ?? new ArrayBuffer(this.size);
    return Buffer.from(ab, 0, length);
  }

  /** Gives back a buffer from take, which its holder no longer uses. */
  give(buf: Buffer): void {
    const ab = buf.buffer;
    if (ab instanceof ArrayBuffer && ab.byteLength === this.size && buf.byteOffset === 0 && this.free.length < this.keep && !this.free.includes(ab)) this.free.push(ab);
  }
}
