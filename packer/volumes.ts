import { readdir } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { AcpackError, formatBytes } from '../oci/errors.js';
import type { Digest } from '../oci/digest.js';

/**
 * Splitting a bundle over volumes (`acpack bundle --volume-size`): which blob goes in which file, and
 * which blobs are too large for any and go in parts. Each volume is a whole bundle file (the same
 * metadata, then its blobs), so a volume's size is bounded here by its blobs' tar entries, the
 * metadata, and what zstd can add to bytes it cannot compress.
 */

/** Sizes a medium takes, each with room for the disc's file system. */
export const VOLUME_PRESETS: Record<string, number> = {
  /** DVD±R: 4,707,319,808 bytes. */
  dvd: 4_700_000_000,
  /** DVD±R DL: 8,543,666,176 bytes. */
  'dvd-dl': 8_500_000_000,
  /** BD-R 25 GB: 25,025,314,816 bytes. */
  bd25: 25_000_000_000,
  /** A FAT32 file is at most 4 GiB − 1. */
  fat32: 2 ** 32 - 1,
};

const UNITS: Record<string, number> = { '': 1, K: 1e3, M: 1e6, G: 1e9, T: 1e12 };
/** Volumes no smaller than this: below, the metadata every volume repeats would be most of it. */
const MIN_VOLUME = 1_000_000;

/** `--volume-size`: a preset, or a decimal size (`4.7G` = 4.7·10⁹ bytes, `650M`, `1000000`). */
export function parseVolumeSize(text: string): number {
  const preset = VOLUME_PRESETS[text.toLowerCase()];
  if (preset) return preset;
  const m = /^(\d+(?:\.\d+)?)\s*([KMGT]?)B?$/i.exec(text.trim());
  if (!m) throw new AcpackError('BAD_ARGUMENT', `--volume-size "${text}" is not a size: give bytes with an optional K, M, G or T (decimal: 4.7G = 4.7·10⁹ bytes), or one of ${Object.keys(VOLUME_PRESETS).join(', ')}`);
  const bytes = Math.floor(Number(m[1]) * UNITS[m[2].toUpperCase()]);
  if (bytes < MIN_VOLUME) throw new AcpackError('BAD_ARGUMENT', `--volume-size ${text} is ${formatBytes(bytes)}; a volume must hold at least ${formatBytes(MIN_VOLUME)}`);
  return bytes;
}

/** What a tar entry of `size` bytes takes: its header and the data padded to 512. */
export const tarBytes = (size: number) => 512 + Math.ceil(size / 512) * 512;

/**
 * What zstd may add to `bytes` it cannot compress: it stores such a block raw, behind a 3-byte
 * header per 128 KiB block; the frame's header and checksum are a few bytes more. Bounded with room
 * to spare.
 */
export const zstdSlack = (bytes: number) => Math.ceil(bytes / 10_000) + (64 << 10);

export interface PlannedBlob {
  digest: Digest;
  size: number;
  /** The volume that holds it whole, or 0 when it is in parts. */
  volume: number;
  /** A blob larger than a volume: byte ranges, in order, each in a volume of its own or at the end of one. */
  parts?: { offset: number; size: number; volume: number }[];
}

export interface VolumePlan {
  volumes: number;
  blobs: PlannedBlob[];
}

/**
 * Places `blobs` in order (manifests first, as the single file has them) into volumes of
 * `volumeSize` bytes, each starting with `metadataBytes` of metadata (its tar entries). A blob goes
 * whole into the current volume if it fits, else whole into the next; one larger than an empty
 * volume's room is split: its first part fills the current volume, then a volume per part. A
 * manifest is never split (a reader takes it in one piece).
 */
export function planVolumes(blobs: { digest: Digest; size: number; manifest?: boolean }[], volumeSize: number, metadataBytes: number): VolumePlan {
  const room = volumeSize - metadataBytes - 1024 - zstdSlack(volumeSize);
  if (room < 64 << 10) {
    throw new AcpackError('BAD_ARGUMENT', `--volume-size ${formatBytes(volumeSize)} leaves no room for blobs after the ${formatBytes(metadataBytes)} of metadata every volume carries`);
  }
  let volume = 1;
  let left = room;
  const out: PlannedBlob[] = [];
  const next = () => {
    volume++;
    left = room;
  };
  for (const b of blobs) {
    const cost = tarBytes(b.size);
    if (cost <= left) {
      out.push({ digest: b.digest, size: b.size, volume });
      left -= cost;
      continue;
    }
    if (cost <= room) {
      next();
      out.push({ digest: b.digest, size: b.size, volume });
      left -= cost;
      continue;
    }
    if (b.manifest) throw new AcpackError('BAD_ARGUMENT', `manifest ${b.digest} (${formatBytes(b.size)}) does not fit in a volume of ${formatBytes(volumeSize)}: choose a larger --volume-size`);
    // Parts are whole 512-byte blocks, so a part's entry takes exactly its size plus a header.
    const parts: PlannedBlob['parts'] = [];
    let offset = 0;
    while (offset < b.size) {
      if (left < 512 + (64 << 10)) next();
      const size = Math.min(b.size - offset, Math.floor((left - 512) / 512) * 512);
      parts.push({ offset, size, volume });
      left -= tarBytes(size);
      offset += size;
    }
    out.push({ digest: b.digest, size: b.size, volume: 0, parts });
  }
  return { volumes: volume, blobs: out };
}

const stemOf = (out: string) => (out.endsWith('.tar.zst') ? out.slice(0, -'.tar.zst'.length) : out);

/** NAME.001.tar.zst, … for `-o NAME.tar.zst`. */
export function volumePaths(out: string, volumes: number): string[] {
  return Array.from({ length: volumes }, (_, i) => `${stemOf(out)}.${String(i + 1).padStart(3, '0')}.tar.zst`);
}

/**
 * Files named as volumes of `out` past the last of a set of `volumes`: what an earlier, longer set
 * left. `acinstall import NAME.*.tar.zst` would take them too (and refuse them as foreign).
 */
export async function volumesPast(out: string, volumes: number): Promise<string[]> {
  const stem = basename(stemOf(out));
  const names = await readdir(dirname(out)).catch(() => [] as string[]);
  return names
    .filter((n) => n.startsWith(`${stem}.`) && /^\d{3,}\.tar\.zst$/.test(n.slice(stem.length + 1)) && Number(n.slice(stem.length + 1, -'.tar.zst'.length)) > volumes)
    .sort()
    .map((n) => join(dirname(out), n));
}
