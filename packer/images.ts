import { formatPlatform, platformMatches, type Platform } from '../arch/platform.js';
import { AcpackError } from '../oci/errors.js';
import type { Digest } from '../oci/digest.js';
import { isIndexType, isManifestType, type Descriptor, type ImageIndex, type ImageManifest } from '../oci/media-types.js';
import type { Reference } from '../oci/reference.js';
import type { ContentStore } from '../oci/store.js';
import type { RegistryClient } from '../oci/registry-client.js';
import type { ImageSpec } from '../manifests/index.js';
import type { Fetcher } from './fetcher.js';

/** Where manifests come from: the registry client, or with --locked the cache alone (packer/locked.ts). */
export type ManifestSource = Pick<RegistryClient, 'getManifest'>;

/** One bundled platform of an image: its manifest, config and layers. */
export interface PlatformPart {
  platform: string;
  manifest: Descriptor;
  blobs: Descriptor[];
}

export interface ResolvedImage {
  spec: ImageSpec;
  top: Descriptor;
  parts: PlatformPart[];
}

/** The platforms an image is bundled for: the bundle's, narrowed by the image's own list. */
export function platformsFor(spec: { platforms?: Platform[] }, bundle: Platform[]): Platform[] {
  if (!spec.platforms) return bundle;
  return bundle.filter((want) => spec.platforms!.some((p) => platformMatches(p, want) || platformMatches(want, p)));
}

/**
 * Resolves an image for the wanted platforms and stores its manifests byte-for-byte. A multi-arch
 * index is kept whole (its digest is what users pin) while only the wanted children are stored.
 * Returns undefined when the image's own platform list excludes every wanted platform.
 */
export async function resolveImage(
  spec: ImageSpec,
  bundlePlatforms: Platform[],
  client: ManifestSource,
  store: ContentStore,
  fetcher: Fetcher,
  pinned?: Digest,
): Promise<ResolvedImage | undefined> {
  const wanted = platformsFor(spec, bundlePlatforms);
  if (wanted.length === 0) return undefined;
  const { ref, name } = spec;
  const top = await client.getManifest(ref, pinned ?? ref.digest);
  if (ref.digest && top.digest !== ref.digest) throw new AcpackError('DIGEST_MISMATCH', `${name}: the registry returned ${top.digest}`);
  await store.put(top.bytes, { digest: top.digest, source: name });
  const topDesc: Descriptor = { mediaType: top.mediaType, digest: top.digest, size: top.bytes.length };

  if (isIndexType(top.mediaType)) {
    const index = JSON.parse(top.bytes.toString('utf8')) as ImageIndex;
    const available = (index.manifests ?? []).filter((m) => m.platform && m.platform.os !== 'unknown');
    const parts: PlatformPart[] = [];
    for (const want of wanted) {
      const child = available.find((m) => platformMatches(m.platform!, want));
      if (!child) {
        const has = [...new Set(available.map((m) => formatPlatform(m.platform!)))].join(', ') || 'none';
        throw new AcpackError(
          'NO_PLATFORM',
          `${name} (${spec.where}) has no ${formatPlatform(want)} image (it has ${has}): bundle it only where it exists with {ref: ${name}, platforms: [...]}, or leave that arch out of --arch`,
        );
      }
      if (!isManifestType(child.mediaType)) {
        throw new AcpackError('UNSUPPORTED_MEDIA_TYPE', `${name}: the ${formatPlatform(want)} entry is a ${child.mediaType}, not an image manifest`);
      }
      parts.push({ platform: formatPlatform(want), ...(await resolveManifest(ref, name, child.digest, client, store)) });
    }
    return { spec, top: topDesc, parts };
  }

  if (!isManifestType(top.mediaType)) {
    throw new AcpackError('UNSUPPORTED_MEDIA_TYPE', `${name} is a ${top.mediaType}, which acpack cannot bundle as an image`);
  }
  const manifest = parseManifest(top.bytes, name);
  await fetcher.ensure({ kind: 'registry', ref, digest: manifest.config.digest, size: manifest.config.size });
  const config = JSON.parse((await store.readBytes(manifest.config.digest)).toString('utf8')) as { os?: string; architecture?: string; variant?: string };
  const own: Platform = { os: config.os ?? 'linux', architecture: config.architecture ?? 'unknown', ...(config.variant ? { variant: config.variant } : {}) };
  const missing = wanted.filter((w) => !platformMatches(own, w));
  if (missing.length > 0) {
    throw new AcpackError(
      'NO_PLATFORM',
      `${name} (${spec.where}) is a single-platform image for ${formatPlatform(own)}, so it has no ${missing.map(formatPlatform).join(', ')}: restrict it with {ref: ${name}, platforms: [${formatPlatform(own)}]}`,
    );
  }
  const part = { manifest: topDesc, blobs: [manifest.config, ...manifest.layers] };
  return { spec, top: topDesc, parts: wanted.map((w) => ({ platform: formatPlatform(w), ...part })) };
}

/** Fetches and stores one image (or artifact) manifest by digest; returns it with its blobs. */
export async function resolveManifest(ref: Reference, name: string, digest: Digest | undefined, client: ManifestSource, store: ContentStore) {
  const got = await client.getManifest(ref, digest);
  if (!isManifestType(got.mediaType)) throw new AcpackError('UNSUPPORTED_MEDIA_TYPE', `${name}: expected an image manifest, got ${got.mediaType}`);
  await store.put(got.bytes, { digest: got.digest, source: name });
  const m = parseManifest(got.bytes, name);
  return { manifest: { mediaType: got.mediaType, digest: got.digest, size: got.bytes.length } as Descriptor, blobs: [m.config, ...m.layers] };
}

function parseManifest(bytes: Buffer, name: string): ImageManifest {
  const m = JSON.parse(bytes.toString('utf8')) as ImageManifest;
  if (!m.config?.digest || !Array.isArray(m.layers)) throw new AcpackError('BAD_MANIFEST', `${name}: the manifest has no config or layers`);
  for (const l of m.layers) {
    if (l.urls?.length) throw new AcpackError('UNSUPPORTED_MEDIA_TYPE', `${name} has a foreign layer (${l.mediaType}) that lives outside the registry; it cannot be carried offline`);
  }
  return m;
}
