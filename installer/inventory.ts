import { ARTIFACT_HOST } from '../oci/bundle-format.js';
import type { Inventory } from '../oci/inventory.js';
import { ContentStore } from '../oci/store.js';
import { IndexDb } from '../registry/index.js';

/**
 * `acinstall inventory`: what this site's store holds (docs/bundle-format.md, Deltas): the bundles
 * imported, the tags by kind, and the blobs a recorded manifest reaches (present in the store).
 */
export async function siteInventory(storeRoot: string): Promise<Inventory> {
  const store = await ContentStore.open(storeRoot);
  const db = new IndexDb(storeRoot);
  try {
    const present = new Set(await store.list());
    const blobs = [...db.reachableBlobs()].filter((d) => present.has(d)).sort();
    const tags = db.allTags().map((t) => ({ ref: `${t.repo}:${t.tag}`, digest: t.digest }));
    const under = (kind: string) => tags.filter((t) => t.ref.startsWith(`${ARTIFACT_HOST}/${kind}/`));
    return {
      kind: 'acpack-inventory',
      version: 1,
      created: new Date().toISOString(),
      bundles: db.bundles().map((b) => ({ name: b.name, version: b.version, digest: b.key })),
      images: tags.filter((t) => !t.ref.startsWith(`${ARTIFACT_HOST}/`)),
      binaries: [...under('binaries'), ...under('runtime')],
      charts: under('charts'),
      blobs,
      sizes: Object.fromEntries(await Promise.all(blobs.map(async (d) => [d, (await store.size(d))!] as const))),
    };
  } finally {
    db.close();
  }
}
