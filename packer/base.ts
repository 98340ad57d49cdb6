import { open, readFile } from 'node:fs/promises';
import { bundleEntries, readHead } from '../oci/bundle-reader.js';
import { sha256, type Digest } from '../oci/digest.js';
import { parseInventory } from '../oci/inventory.js';
import { AcpackError } from '../oci/errors.js';

/** What bundle.json's `base` says of the base a delta was made against. */
export interface BaseRef {
  name: string;
  version: string;
  /** The sha256 of the inventory file, or of the base bundle's bundle.json. */
  digest: Digest;
}

/**
 * `acpack bundle --base`: the blobs a site holds, from its inventory (acinstall inventory) or from
 * a bundle it imported (a single file, or any volume of a set: bundle.json lists them all; a
 * format 1 bundle is read through for its blob entries).
 */
/** The blobs a delta's base holds, with the size of those whose size it says. */
export interface BaseBlobs {
  blobs: Set<Digest>;
  sizes: Map<Digest, number>;
}

export async function readBase(path: string): Promise<{ ref: BaseRef } & BaseBlobs> {
  // A bundle starts with zstd's magic number; anything else is taken for an inventory.
  const fh = await open(path, 'r').catch((err: NodeJS.ErrnoException) => {
    throw new AcpackError('BAD_BASE', `--base ${path} cannot be read (${err.code === 'ENOENT' ? 'no such file' : err.code}): give the site's inventory (acinstall inventory -o site.json) or a bundle it imported; nothing was fetched`, { cause: err });
  });
  const magic = Buffer.alloc(4);
  await fh.read(magic, 0, 4, 0).finally(() => fh.close());
  if (magic.readUInt32LE(0) !== 0xfd2fb528) {
    const bytes = await readFile(path);
    const inv = parseInventory(bytes.toString('utf8'), path);
    const last = inv.bundles.at(-1);
    const ref = { name: last ? `site inventory (${last.name})` : 'site inventory', version: last?.version ?? inv.created, digest: sha256(bytes) };
    return { ref, blobs: new Set(inv.blobs), sizes: new Map(Object.entries(inv.sizes ?? {}) as [Digest, number][]) };
  }
  const head = await readHead(path);
  const d = head.descriptor;
  const ref = { name: d.name, version: d.version, digest: sha256(head.descriptorBytes) };
  if (d.blobs.list) return { ref, blobs: new Set(d.blobs.list.map((b) => b.digest)), sizes: new Map(d.blobs.list.map((b) => [b.digest, b.size])) };
  const sizes = new Map<Digest, number>();
  for await (const e of bundleEntries(path)) {
    if (e.kind !== 'blob') continue;
    sizes.set(e.digest, e.size); // its bytes are skipped as the next entry is read
  }
  return { ref, blobs: new Set(sizes.keys()), sizes };
}
