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
export async function readBase(path: string): Promise<{ ref: BaseRef; blobs: Set<Digest> }> {
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
    return { ref, blobs: new Set(inv.blobs) };
  }
  const head = await readHead(path);
  const d = head.descriptor;
  const ref = { name: d.name, version: d.version, digest: sha256(head.descriptorBytes) };
  if (d.blobs.list) return { ref, blobs: new Set(d.blobs.list.map((b) => b.digest)) };
  const blobs = new Set<Digest>();
  for await (const e of bundleEntries(path)) {
    if (e.kind !== 'blob') continue;
    blobs.add(e.digest); // its bytes are skipped as the next entry is read
  }
  return { ref, blobs };
}
