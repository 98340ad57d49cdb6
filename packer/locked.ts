import { AcpackError } from '../oci/errors.js';
import { sha256, type Digest } from '../oci/digest.js';
import { formatReference, type Reference } from '../oci/reference.js';
import { manifestMediaType, type FetchedManifest } from '../oci/registry-client.js';
import type { ContentStore } from '../oci/store.js';
import type { ManifestSource } from './images.js';

/*
 * `acpack bundle --locked` builds what the lock file pins. An image, binary or chart the cache already
 * holds whole is built from the cache without asking upstream, so that a locked rebuild needs no network
 * (the run says how many were not checked); only what is missing goes upstream, and there the lock is
 * checked first (a moved tag, a changed file).
 */

/** Manifests by digest from the cache, never from the network: NOT_CACHED when one is not there. */
export class CachedManifests implements ManifestSource {
  constructor(private readonly store: ContentStore) {}

  async getManifest(ref: Reference, digest?: Digest): Promise<FetchedManifest> {
    if (!digest || !(await this.store.has(digest))) throw new AcpackError('NOT_CACHED', `${formatReference(ref)} ${digest ?? '(by tag)'} is not in the cache`);
    const bytes = await this.store.readBytes(digest);
    // A manifest is small: check it as if it had just arrived (a damaged cache goes upstream instead).
    if (sha256(bytes) !== digest) throw new AcpackError('NOT_CACHED', `the cache's copy of ${digest} is damaged`);
    return { bytes, digest, mediaType: manifestMediaType(bytes, null, `the cache (${digest})`) };
  }
}

/** `build`'s result when the cache alone was enough, else undefined (something it needs threw NOT_CACHED). */
export async function fromCache<T>(build: () => Promise<T>): Promise<{ value: T } | undefined> {
  try {
    return { value: await build() };
  } catch (err) {
    if (err instanceof AcpackError && err.code === 'NOT_CACHED') return undefined;
    throw err;
  }
}

/** Throws NOT_CACHED unless the store holds every one of `digests`. */
export async function requireCached(store: ContentStore, digests: Iterable<Digest>, what: string): Promise<void> {
  for (const d of digests) if (!(await store.has(d))) throw new AcpackError('NOT_CACHED', `${what}: ${d} is not in the cache`);
}
