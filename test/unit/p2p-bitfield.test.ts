import { describe, expect, it } from 'vitest';
import { Bitfield, MAX_PIECES } from '../../p2p/bitfield.js';

describe('bitfield', () => {
  it('sets bits most significant first, as BitTorrent does', () => {
    const f = new Bitfield(10).set(0).set(9);
    expect([...f.bytes]).toEqual([0b1000_0000, 0b0100_0000]);
    expect(f.toArray()).toEqual([0, 9]);
    expect(f.count).toBe(2);
    f.set(9).clear(0).clear(0);
    expect(f.count).toBe(1);
    expect(f.has(9) && !f.has(0) && !f.has(10) && !f.has(-1)).toBe(true);
    expect(() => f.set(10)).toThrow(/outside/);
  });

  it.each([0, 1, 7, 8, 9, 95, 100, 1000])('round-trips through base64 with %i pieces', (n) => {
    const f = new Bitfield(n);
    for (let i = 0; i < n; i += 3) f.set(i);
    const back = Bitfield.fromBase64(f.toBase64(), n);
    expect(back.equals(f)).toBe(true);
    expect(back.count).toBe(f.count);
    expect(Bitfield.full(n).count).toBe(n);
    expect(Bitfield.fromBase64(Bitfield.full(n).toBase64(), n).isFull).toBe(true);
  });

  it('refuses an encoding of the wrong length, with spare bits set, or not canonical base64', () => {
    const text = new Bitfield(20).set(3).toBase64(); // 3 bytes
    expect(() => Bitfield.fromBase64(text, 25)).toThrow(/base64 characters/);
    expect(() => Bitfield.fromBase64(text, 16)).toThrow(/base64 characters|2 bytes/);
    expect(() => Bitfield.fromBase64(Buffer.from([0, 0, 0x01]).toString('base64'), 20)).toThrow(/past its last piece/);
    expect(() => Bitfield.fromBase64('AAA!', 20)).toThrow(/base64/);
    expect(() => Bitfield.fromBase64('AAB=', 16)).toThrow(/canonical/);
    expect(() => Bitfield.fromBase64('A'.repeat(1 << 20), MAX_PIECES + 1)).toThrow(/out of range/);
  });

  it('tells what another set has that this one lacks', () => {
    const mine = new Bitfield(12).set(1).set(2);
    const theirs = new Bitfield(12).set(2).set(11);
    expect(mine.lacksSomeOf(theirs)).toBe(true);
    expect(mine.countMissingFrom(theirs)).toBe(1);
    expect(theirs.copy().clear(11).lacksSomeOf(mine)).toBe(true);
    expect(new Bitfield(12).set(2).lacksSomeOf(new Bitfield(12).set(2))).toBe(false);
    expect(mine.intersects(theirs)).toBe(true);
    expect(() => mine.intersects(new Bitfield(13))).toThrow(/do not compare/);
  });
});
