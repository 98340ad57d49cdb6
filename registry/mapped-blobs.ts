import { open } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { basename, join, resolve } from 'node:path';
import { isSea } from 'node:sea';
import type { Digest } from '../oci/digest.js';
import type { ContentStore } from '../oci/store.js';

interface MapFile {
  map(fd: number, length: number): ArrayBuffer;
}

/**
 * native/map-file.c, built by `npm ci` (node-gyp) into build/Release; the same from dist/ and from
 * source. Loaded on first use, never at import: the site's single executable has no addon, and
 * without one the registry serves blobs from their files. That executable never looks for it, even
 * run from a checkout that has one, so that it serves here as it does on site. ACPACK_NO_MMAP=1
 * asks for the file path anywhere (bench/registry measures both).
 */
let mapFile: MapFile | null | undefined;

function loadMapFile(): MapFile | null {
  if (mapFile !== undefined) return mapFile;
  if (process.env.ACPACK_NO_MMAP === '1' || isSea()) return (mapFile = null);
  try {
    let root = resolve(import.meta.dirname, '..');
    if (basename(root) === 'dist') root = resolve(root, '..');
    mapFile = createRequire(import.meta.url)(join(root, 'build', 'Release', 'map_file.node')) as MapFile;
  } catch {
    mapFile = null;
  }
  return mapFile;
}

/** Mappings of the store's blobs when this runtime can make them, else undefined (serve from files). */
export function mappedBlobs(store: ContentStore, maxBytes?: number): MappedBlobs | undefined {
  const native = loadMapFile();
  return native ? new MappedBlobs(store, native, maxBytes) : undefined;
}

/**
 * Committed blobs, each mapped into memory once and kept (most recently used last) up to `maxBytes` of
 * address space. Serving a slice of a mapping costs no read and no copy in the process; the page cache
 * holds the bytes either way. A mapping dropped from here is unmapped once no response still uses it.
 */
export class MappedBlobs {
  private readonly maps = new Map<Digest, Buffer>();
  private readonly opening = new Map<Digest, Promise<Buffer>>();
  private bytes = 0;

  constructor(
    private readonly store: ContentStore,
    private readonly native: MapFile,
    private readonly maxBytes = 16 * 2 ** 30,
  ) {}

  /** The whole blob of `size` bytes (size > 0, as the caller just read it from the store). */
  async get(digest: Digest, size: number): Promise<Buffer> {
    const hit = this.maps.get(digest);
    if (hit && hit.length === size) {
      this.maps.delete(digest);
      this.maps.set(digest, hit);
      return hit;
    }
    let pending = this.opening.get(digest);
    if (!pending) {
      pending = this.map(digest, size).finally(() => this.opening.delete(digest));
      this.opening.set(digest, pending);
    }
    return pending;
  }

  private async map(digest: Digest, size: number): Promise<Buffer> {
    const file = await open(this.store.path(digest), 'r');
    let mapped: Buffer;
    try {
      mapped = Buffer.from(this.native.map(file.fd, size));
    } finally {
      await file.close();
    }
    this.forget(digest);
    this.maps.set(digest, mapped);
    this.bytes += size;
    for (const [oldest, buf] of this.maps) {
      if (this.bytes <= this.maxBytes || oldest === digest) break;
      this.maps.delete(oldest);
      this.bytes -= buf.length;
    }
    return mapped;
  }

  forget(digest: Digest): void {
    const old = this.maps.get(digest);
    if (!old) return;
    this.maps.delete(digest);
    this.bytes -= old.length;
  }
}
