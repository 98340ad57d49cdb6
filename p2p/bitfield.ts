/**
 * A set of piece indexes as bits, one per piece: what a node has, what it is fetching. Bit i is bit
 * (7 − i mod 8) of byte ⌊i/8⌋, most significant first as in BitTorrent's bitfield message, and the
 * spare bits of the last byte are zero. A 400 MB blob in 1 MiB pieces is 48 bytes, 64 in base64:
 * this is what keeps the tracker's memory and the announces small.
 */
import { AcpackError } from '../oci/errors.js';

/** More pieces than any blob the site carries has (256 GiB in 1 MiB pieces); bounds what a peer can make us allocate. */
export const MAX_PIECES = 1 << 18;

const POPCOUNT = new Uint8Array(256);
for (let i = 1; i < 256; i++) POPCOUNT[i] = (i & 1) + POPCOUNT[i >> 1];

export class Bitfield {
  readonly bytes: Uint8Array;
  private ones = 0;

  constructor(
    readonly length: number,
    bytes?: Uint8Array,
  ) {
    checkLength(length);
    const n = byteLength(length);
    if (bytes === undefined) {
      this.bytes = new Uint8Array(n);
      return;
    }
    if (bytes.length !== n) throw new AcpackError('BAD_BITFIELD', `a bitfield of ${length} pieces has ${n} bytes, not ${bytes.length}`);
    const spare = n * 8 - length;
    if (spare > 0 && (bytes[n - 1] & ((1 << spare) - 1)) !== 0) {
      throw new AcpackError('BAD_BITFIELD', `a bitfield of ${length} pieces has bits set past its last piece`);
    }
    this.bytes = bytes;
    for (const b of bytes) this.ones += POPCOUNT[b];
  }

  /** Every piece set. */
  static full(length: number): Bitfield {
    const f = new Bitfield(length);
    f.bytes.fill(0xff);
    const spare = f.bytes.length * 8 - length;
    if (spare > 0) f.bytes[f.bytes.length - 1] = (0xff << spare) & 0xff;
    f.ones = length;
    return f;
  }

  /** Decodes the wire form (base64 of the bytes), refusing one whose length does not fit `length` pieces. */
  static fromBase64(text: string, length: number): Bitfield {
    if (typeof text !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0) {
      throw new AcpackError('BAD_BITFIELD', 'a bitfield is not padded base64');
    }
    checkLength(length);
    // Checked before decoding so that a huge string costs nothing: 4 characters per 3 bytes.
    const n = byteLength(length);
    if (text.length !== Math.ceil(n / 3) * 4) {
      throw new AcpackError('BAD_BITFIELD', `a bitfield of ${length} pieces is ${Math.ceil(n / 3) * 4} base64 characters, not ${text.length}`);
    }
    const bytes = Buffer.from(text, 'base64');
    if (bytes.toString('base64') !== text) throw new AcpackError('BAD_BITFIELD', 'a bitfield is not canonical base64');
    // A copy of its own: a small decoded Buffer is a view into Node's shared 8 KiB pool, which a
    // long-lived bitfield would otherwise keep alive.
    return new Bitfield(length, new Uint8Array(bytes));
  }

  toBase64(): string {
    return Buffer.from(this.bytes.buffer, this.bytes.byteOffset, this.bytes.length).toString('base64');
  }

  /** How many pieces are set. */
  get count(): number {
    return this.ones;
  }

  get isFull(): boolean {
    return this.ones === this.length;
  }

  get isEmpty(): boolean {
    return this.ones === 0;
  }

  has(i: number): boolean {
    return i >= 0 && i < this.length && (this.bytes[i >> 3] & (0x80 >> (i & 7))) !== 0;
  }

  set(i: number): this {
    this.check(i);
    const m = 0x80 >> (i & 7);
    if ((this.bytes[i >> 3] & m) === 0) {
      this.bytes[i >> 3] |= m;
      this.ones++;
    }
    return this;
  }

  clear(i: number): this {
    this.check(i);
    const m = 0x80 >> (i & 7);
    if ((this.bytes[i >> 3] & m) !== 0) {
      this.bytes[i >> 3] &= ~m;
      this.ones--;
    }
    return this;
  }

  copy(): Bitfield {
    return new Bitfield(this.length, this.bytes.slice());
  }

  equals(other: Bitfield): boolean {
    if (other.length !== this.length || other.ones !== this.ones) return false;
    for (let i = 0; i < this.bytes.length; i++) if (this.bytes[i] !== other.bytes[i]) return false;
    return true;
  }

  /** Whether both sets share a piece. */
  intersects(other: Bitfield): boolean {
    this.sameLength(other);
    for (let i = 0; i < this.bytes.length; i++) if ((this.bytes[i] & other.bytes[i]) !== 0) return true;
    return false;
  }

  /** Whether `other` has a piece this one lacks (a peer with something for us). */
  lacksSomeOf(other: Bitfield): boolean {
    this.sameLength(other);
    for (let i = 0; i < this.bytes.length; i++) if ((other.bytes[i] & ~this.bytes[i]) !== 0) return true;
    return false;
  }

  /** How many pieces of `other` this one lacks. */
  countMissingFrom(other: Bitfield): number {
    this.sameLength(other);
    let n = 0;
    for (let i = 0; i < this.bytes.length; i++) n += POPCOUNT[other.bytes[i] & ~this.bytes[i] & 0xff];
    return n;
  }

  /** The set indexes, in order. */
  *[Symbol.iterator](): IterableIterator<number> {
    for (let b = 0; b < this.bytes.length; b++) {
      const byte = this.bytes[b];
      if (byte === 0) continue;
      for (let bit = 0; bit < 8; bit++) if (byte & (0x80 >> bit)) yield b * 8 + bit;
    }
  }

  /** The indexes, as an array (for tests and messages). */
  toArray(): number[] {
    return [...this];
  }

  private check(i: number): void {
    if (!Number.isInteger(i) || i < 0 || i >= this.length) throw new AcpackError('BAD_PIECE', `piece ${i} is outside a bitfield of ${this.length}`);
  }

  private sameLength(other: Bitfield): void {
    if (other.length !== this.length) throw new AcpackError('BAD_BITFIELD', `bitfields of ${this.length} and ${other.length} pieces do not compare`);
  }
}

function checkLength(length: number): void {
  if (!Number.isInteger(length) || length < 0 || length > MAX_PIECES) {
    throw new AcpackError('BAD_BITFIELD', `a bitfield of ${length} pieces is out of range (0 to ${MAX_PIECES})`);
  }
}

function byteLength(pieces: number): number {
  return (pieces + 7) >> 3;
}
