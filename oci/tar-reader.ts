/**
 * A tar archive read by hand from pulled bytes (ZstdReader's): the bundle reader needs only ustar
 * headers and entry bodies, and owns every buffer on the way, so that a multi-gigabyte bundle moves
 * through the same few megabytes of memory. Entry types come back by name (as tar-stream names
 * them) for the caller to refuse; the archive ends at its first zero block, after which only zeros
 * may follow.
 */
const BLOCK = 512;
const EMPTY = Buffer.alloc(0);

/** Bytes pulled: each call returns the next bytes as a view that is valid until the next call. */
export interface ByteSource {
  read(): Promise<Buffer | undefined>;
  /** The next bytes into `dst` (not empty), at most its length: how many, 0 at the end. */
  readInto(dst: Buffer): Promise<number>;
}

export interface TarHeader {
  name: string;
  /** 'file', 'directory', 'symlink', … ('file' is the only one a bundle holds). */
  type: string;
  size: number;
}

/** A malformed or cut archive: what is wrong with it. */
export class TarError extends Error {}

const TYPES: Record<string, string> = {
  '0': 'file',
  '\0': 'file',
  '1': 'link',
  '2': 'symlink',
  '3': 'character-device',
  '4': 'block-device',
  '5': 'directory',
  '6': 'fifo',
  '7': 'contiguous-file',
  x: 'pax-header',
  g: 'pax-global-header',
  K: 'gnu-long-link-path',
  L: 'gnu-long-path',
};

export class TarReader {
  /** What is left of the source's last view. */
  private chunk: Buffer = EMPTY;
  /** Of the current entry: body bytes not read yet, and the padding after them. */
  private left = 0;
  private padding = 0;
  private ended = false;
  private readonly header = Buffer.alloc(BLOCK);

  constructor(private readonly source: ByteSource) {}

  /** The next entry's header (what is left of the entry before is skipped), or undefined at the end of the archive. */
  async next(): Promise<TarHeader | undefined> {
    await this.skip(this.left + this.padding);
    this.left = this.padding = 0;
    if (this.ended) return undefined;
    const block = await this.block();
    if (!block) {
      this.ended = true; // the end of the data at an entry's boundary: what was there is whole
      return undefined;
    }
    if (isZero(block)) {
      this.ended = true;
      await this.onlyZerosFollow();
      return undefined;
    }
    const header = parseHeader(block);
    this.left = header.size;
    this.padding = (BLOCK - (header.size % BLOCK)) % BLOCK;
    return header;
  }

  /** The next bytes of the current entry, or undefined at its end; valid until the next call. */
  async read(): Promise<Buffer | undefined> {
    if (this.left === 0) return undefined;
    if (!(await this.fill())) throw new TarError(`it ends ${this.left} bytes before the end of an entry`);
    const n = Math.min(this.left, this.chunk.length);
    const view = this.chunk.subarray(0, n);
    this.chunk = this.chunk.subarray(n);
    this.left -= n;
    return view;
  }

  /**
   * The current entry's next bytes into `dst` (not empty): how many, 0 at its end. Straight from
   * the source where no pulled bytes are left over, so an entry's body is never copied on the way.
   */
  async readInto(dst: Buffer): Promise<number> {
    if (this.left === 0) return 0;
    const want = Math.min(this.left, dst.length);
    let n: number;
    if (this.chunk.length > 0) {
      n = this.chunk.copy(dst, 0, 0, want);
      this.chunk = this.chunk.subarray(n);
    } else {
      n = await this.source.readInto(dst.subarray(0, want));
      if (n === 0) throw new TarError(`it ends ${this.left} bytes before the end of an entry`);
    }
    this.left -= n;
    return n;
  }

  /** True when `chunk` holds bytes (pulling more if it is empty); false at the end of the source. */
  private async fill(): Promise<boolean> {
    if (this.chunk.length > 0) return true;
    this.chunk = (await this.source.read()) ?? EMPTY;
    return this.chunk.length > 0;
  }

  /** The next 512 bytes, or undefined when the source ends right here. */
  private async block(): Promise<Buffer | undefined> {
    if (!(await this.fill())) return undefined;
    if (this.chunk.length >= BLOCK) {
      const view = this.chunk.subarray(0, BLOCK);
      this.chunk = this.chunk.subarray(BLOCK);
      return view;
    }
    // A header across two of the source's views: copied, as the next pull reuses the first's memory.
    let have = 0;
    while (have < BLOCK) {
      if (!(await this.fill())) throw new TarError('it ends in the middle of a header');
      const n = this.chunk.copy(this.header, have, 0, BLOCK - have);
      this.chunk = this.chunk.subarray(n);
      have += n;
    }
    return this.header;
  }

  private async skip(n: number): Promise<void> {
    while (n > 0) {
      if (!(await this.fill())) throw new TarError(`it ends ${n} bytes before the end of an entry`);
      const k = Math.min(n, this.chunk.length);
      this.chunk = this.chunk.subarray(k);
      n -= k;
    }
  }

  /** The rest of the archive after its end marker: zeros (the second end block, record padding), nothing else. */
  private async onlyZerosFollow(): Promise<void> {
    while (await this.fill()) {
      if (!isZero(this.chunk)) throw new TarError('it holds data after the end of the archive');
      this.chunk = EMPTY;
    }
  }
}

function isZero(b: Buffer): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
}

function parseHeader(b: Buffer): TarHeader {
  const stored = parseOctal(b, 148, 8);
  let sum = 8 * 0x20; // the checksum field counts as spaces
  for (let i = 0; i < BLOCK; i++) if (i < 148 || i >= 156) sum += b[i];
  if (stored !== sum) throw new TarError('a header\'s checksum does not match (the archive is damaged)');
  const flag = String.fromCharCode(b[156]);
  const type = TYPES[flag] ?? `entry of type ${JSON.stringify(flag)}`;
  let name = text(b, 0, 100);
  // POSIX ustar: a long name is split into a prefix and the name.
  if (b.toString('latin1', 257, 263) === 'ustar\0') {
    const prefix = text(b, 345, 155);
    if (prefix) name = `${prefix}/${name}`;
  }
  return { name, type, size: parseSize(b) };
}

function text(b: Buffer, at: number, width: number): string {
  const end = b.indexOf(0, at);
  return b.toString('utf8', at, end < 0 || end > at + width ? at + width : end);
}

function parseOctal(b: Buffer, at: number, width: number): number {
  const field = b.toString('latin1', at, at + width).replace(/[\0 ]+$/, '').replace(/^ +/, '');
  if (!/^[0-7]+$/.test(field)) throw new TarError(`a header has ${JSON.stringify(field)} where a number belongs`);
  return parseInt(field, 8);
}

/** Octal, or GNU's base-256 (a first byte of 0x80) for 8 GiB and more. */
function parseSize(b: Buffer): number {
  if (b[124] === 0x80) {
    let v = 0;
    for (let i = 125; i < 136; i++) v = v * 256 + b[i];
    if (!Number.isSafeInteger(v)) throw new TarError('an entry is larger than this reader can count');
    return v;
  }
  if (b[124] & 0x80) throw new TarError('an entry has a negative size');
  return parseOctal(b, 124, 12);
}
