import { AcpackError } from './errors.js';
import { isDigest, shortDigest, type Digest } from './digest.js';
import { manifestDigests, type BundleDescriptor } from './bundle-format.js';
import { isIndexType, type Descriptor, type ImageIndex, type ImageManifest } from './media-types.js';

/** What a walk asks of where the blobs are: a bundle being read, or a store being imported into. */
export interface BlobSource {
  /** The size of a blob held, undefined when it is not there. */
  size(d: Digest): Promise<number | undefined>;
  /** A manifest or index held, parsed; undefined when it is not to be walked into. */
  manifest(d: Digest): Promise<(ImageIndex & ImageManifest) | undefined>;
}

/**
 * Walks everything index.json references: each manifest (an index's children only where bundle.json
 * says that platform was bundled), its config and layers (foreign layers, with `urls`, are not
 * carried). Every descriptor's digest is checked before it names a file, and every blob must be
 * held with the size its parent says. `onManifest` hears each manifest reached and the reference
 * name it was reached from. Throws at the first fault, naming `where`.
 */
export async function walkBundle(
  where: string,
  descriptor: BundleDescriptor,
  index: ImageIndex,
  src: BlobSource,
  onManifest: (d: Descriptor, refName: string | undefined) => void = () => {},
): Promise<void> {
  const bundled = manifestDigests(descriptor);
  const need = async (d: Descriptor, from: string) => {
    if (typeof d?.digest !== 'string' || !isDigest(d.digest)) throw new AcpackError('BAD_BUNDLE', `${where}: ${from} has a descriptor without a valid digest`);
    const size = await src.size(d.digest);
    if (size === undefined) throw new AcpackError('MISSING_BLOB', `${where}: ${from} needs blob ${d.digest} (${d.mediaType}), which is not in the bundle`);
    if (size !== d.size) throw new AcpackError('MISSING_BLOB', `${where}: ${from} says blob ${shortDigest(d.digest)} has ${d.size} bytes, the bundle holds ${size}`);
  };
  const walk = async (d: Descriptor, from: string, refName: string | undefined, depth: number): Promise<void> => {
    await need(d, from);
    if (depth > 4) return;
    onManifest(d, refName);
    const m = await src.manifest(d.digest);
    if (!m) return;
    const here = `manifest ${shortDigest(d.digest)} of ${from}`;
    if (isIndexType(d.mediaType) || m.manifests !== undefined) {
      for (const child of Array.isArray(m.manifests) ? m.manifests : []) {
        if (bundled.has(child?.digest)) await walk(child, `index ${shortDigest(d.digest)} of ${from}`, refName, depth + 1);
      }
    } else {
      if (m.config) await need(m.config, here);
      for (const layer of Array.isArray(m.layers) ? m.layers : []) {
        if (!layer?.urls?.length) await need(layer, here);
      }
    }
  };
  for (const m of index.manifests ?? []) {
    const refName = m.annotations?.['org.opencontainers.image.ref.name'];
    await walk(m, refName ?? shortDigest(m.digest), refName, 0);
  }
}

/**
 * The part of a manifest or index a walk reads (its children's media types, digests, sizes and
 * urls), to keep for many manifests without holding their whole documents (annotations and all).
 */
export function graphOf(m: ImageManifest | ImageIndex): ImageIndex & ImageManifest {
  const slim = (d: Descriptor): Descriptor => ({ mediaType: d.mediaType, digest: d.digest, size: d.size, ...(d.urls?.length ? { urls: d.urls } : {}) });
  const out: Partial<ImageIndex & ImageManifest> = { schemaVersion: 2 };
  if ('manifests' in m && Array.isArray(m.manifests)) out.manifests = m.manifests.map(slim);
  else {
    const im = m as ImageManifest;
    if (im.config) out.config = slim(im.config);
    if (Array.isArray(im.layers)) out.layers = im.layers.map(slim);
  }
  return out as ImageIndex & ImageManifest;
}
