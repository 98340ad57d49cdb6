import { AcpackError } from './errors.js';
import { isDigest, type Digest } from './digest.js';

/**
 * What a site's store holds, written by `acinstall inventory` and carried back on the medium, so
 * that `acpack bundle --base site.json` leaves out every blob the site has (docs/bundle-format.md,
 * Deltas). Only blobs a recorded manifest reaches are listed: what gc could take is not promised.
 */
export interface Inventory {
  kind: 'acpack-inventory';
  version: 1;
  created: string;
  /** Bundles imported whole: name, version, the sha256 of their bundle.json. */
  bundles: { name: string; version: string; digest: string }[];
  /** Tags, by kind: images under their original names, binaries, charts and the runtime under acpack.local/. */
  images: { ref: string; digest: Digest }[];
  binaries: { ref: string; digest: Digest }[];
  charts: { ref: string; digest: Digest }[];
  blobs: Digest[];
  /**
   * Each blob's size (written since this field was added; version 1 still, as an older acpack reads
   * the rest as before): a delta then need not download a binary the site holds to learn its size.
   */
  sizes?: Record<string, number>;
}

/** An inventory file's blobs and identity, or an error naming what is wrong with it. */
export function parseInventory(text: string, path: string): Inventory {
  let v: Partial<Inventory>;
  try {
    v = JSON.parse(text) as Partial<Inventory>;
  } catch {
    throw new AcpackError('BAD_BASE', `${path} is neither a bundle nor JSON (an inventory from acinstall inventory)`);
  }
  if (v?.kind !== 'acpack-inventory' || v.version !== 1) throw new AcpackError('BAD_BASE', `${path} is JSON but not an acpack inventory (kind acpack-inventory, version 1)`);
  if (!Array.isArray(v.blobs) || !v.blobs.every((d) => typeof d === 'string' && isDigest(d))) throw new AcpackError('BAD_BASE', `${path}: its blobs are not a list of sha256 digests`);
  if (v.sizes !== undefined && (typeof v.sizes !== 'object' || v.sizes === null || !Object.entries(v.sizes).every(([d, n]) => isDigest(d) && Number.isSafeInteger(n) && n >= 0))) {
    throw new AcpackError('BAD_BASE', `${path}: its sizes are not sha256 digests with byte counts`);
  }
  return v as Inventory;
}
