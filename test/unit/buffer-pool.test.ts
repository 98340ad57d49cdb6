import { describe, expect, it } from 'vitest';
import { BufferPool } from '../../oci/buffer-pool.js';

describe('the agent buffer pool', () => {
  it('gives back the memory of a buffer returned to it, at the length asked for', () => {
    const pool = new BufferPool(16, 2);
    const a = pool.take(16);
    a.fill(7);
    pool.give(a);
    const b = pool.take(5);
    expect(b.length).toBe(5);
    expect(b.buffer).toBe(a.buffer);
    // Not given back yet: the next one is other memory.
    expect(pool.take(16).buffer).not.toBe(a.buffer);
  });

  it('keeps no more than it was told, keeps a buffer once however often it is given, and leaves longer ones alone', () => {
    const pool = new BufferPool(16, 1);
    const [a, b] = [pool.take(16), pool.take(16)];
    pool.give(a);
    pool.give(a);
    pool.give(b);
    expect(pool.take(16).buffer).toBe(a.buffer);
    expect(pool.take(16).buffer).not.toBe(a.buffer);
    expect(pool.take(16).buffer).not.toBe(b.buffer);

    const long = pool.take(40);
    expect(long.length).toBe(40);
    pool.give(long);
    expect(pool.take(16).buffer).not.toBe(long.buffer);
  });
});
