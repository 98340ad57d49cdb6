import cluster from 'node:cluster';
import { createHash } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { basename, join, resolve } from 'node:path';
import { getRawAsset, isSea } from 'node:sea';
import type { Digest } from '../oci/digest.js';
import type { ContentStore } from '../oci/store.js';

interface MapFile {
  map(fd: number, length: number): ArrayBuffer;
}

/** The SEA asset that holds the addon in the site's single executable (scripts/build-site.ts puts it there). */
export const MAP_FILE_ASSET = 'map_file.node';

/**
 * native/map-file.c. From source or dist/ it is build/Release's, built by `npm ci` (node-gyp). The
 * site's single executable carries its own, built for its arch against its Node's headers, as a SEA
 * asset: a SEA cannot load an addon from its own bytes, so the asset is written once into the store
 * (`mapFileOnDisk`) and loaded from there; that executable never looks in a checkout, so it serves
 * here as it does on site. Loaded on first use, never at import. Without an addon the registry
 * serves blobs from their files; ACPACK_NO_MMAP=1 asks for that anywhere (bench/registry measures
 * both).
 */
let mapFile: MapFile | null | undefined;

function loadMapFile(store: ContentStore): MapFile | null {
  if (mapFile !== undefined) return mapFile;
  if (process.env.ACPACK_NO_MMAP === '1') return (mapFile = null);
  if (isSea()) {
    try {
      const module = { exports: {} as MapFile };
      process.dlopen(module, mapFileOnDisk(store.root, Buffer.from(getRawAsset(MAP_FILE_ASSET))));
      return (mapFile = module.exports);
    } catch (err) {
      // A store on a noexec mount (or read-only) cannot hold it: the files path serves the same bytes.
      if (!cluster.isWorker || cluster.worker?.id === 1) {
        process.stderr.write(`acinstall: blobs are read from their files, not mapped: the mmap addon does not load from ${store.root} (${(err as Error).message.split('\n')[0]})\n`);
      }
      return (mapFile = null);
    }
  }
  try {
    let root = resolve(import.meta.dirname, '..');
    if (basename(root) === 'dist') root = resolve(root, '..');
    mapFile = createRequire(import.meta.url)(join(root, 'build', 'Release', 'map_file.node')) as MapFile;
  } catch {
    mapFile = null;
  }
  return mapFile;
}

/**
 * Where the executable's addon is loaded from: `<store>/.runtime/map_file-<sha256>.node`, written
 * unless it is there whole. Not /tmp, which may be noexec; named by content, so executables of
 * other arches or releases sharing the store each find their own. Written aside and renamed, so a
 * worker starting beside another never loads half a file.
 */
export function mapFileOnDisk(storeRoot: string, bytes: Buffer): string {
  const dir = join(storeRoot, '.runtime');
  const file = join(dir, `map_file-${createHash('sha256').update(bytes).digest('hex')}.node`);
  const there = (() => {
    try {
      return readFileSync(file);
    } catch {
      return undefined;
    }
  })();
  if (there?.equals(bytes)) return file;
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  const tmp = `${file}.${process.pid}`;
  try {
    writeFileSync(tmp, bytes, { mode: 0o755 });
    chmodSync(tmp, 0o755); // whatever the umask took away
    renameSync(tmp, file);
  } finally {
    rmSync(tmp, { force: true });
  }
  return file;
}

/** Mappings of the store's blobs when this runtime can make them, else undefined (serve from files). */
export function mappedBlobs(store: ContentStore, maxBytes?: number): MappedBlobs | undefined {
  const native = loadMapFile(store);
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
