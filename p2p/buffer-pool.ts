/**
 * Piece-sized buffers, used again. An agent moves every byte of a blob three times (in from a peer,
 * out to its containerd, out to its peers); allocating a fresh 4 MiB buffer each time made the
 * kernel zero new pages and V8 run a full GC every few dozen pieces (its external memory grows),
 * which took a fifth of the agent's CPU in bench/p2p.
 *
 * A buffer goes back only when nothing holds it any more: after the piece was hashed and written,
 * or after the socket took all of it (a write's callback). Where that is not certain (a request
 * cut midway), it is not given back, and the garbage collector has it.
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
