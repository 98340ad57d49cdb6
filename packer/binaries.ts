import { basename } from 'node:path';
import { expandTemplate, type Arch, type Platform } from '../arch/platform.js';
import { AcpackError } from '../oci/errors.js';
import type { Digest } from '../oci/digest.js';
import { MT, type Descriptor } from '../oci/media-types.js';
import type { ContentStore } from '../oci/store.js';
import type { BinarySpec } from '../manifests/index.js';
import { ARTIFACT_HOST } from '../oci/bundle-format.js';
import type { BaseBlobs } from './base.js';
import type { Fetcher } from './fetcher.js';
import { putBinaryIndex, putBinaryManifest, type BinaryFile } from './artifacts.js';
import { platformsFor } from './images.js';

export interface ResolvedBinaryArch extends BinaryFile {
  url: string;
  /** The url as the manifest writes it, expanded for this arch: the lock file's record (it moves with the project). */
  pinUrl: string;
  manifest: Descriptor;
}

export interface ResolvedBinary {
  spec: BinarySpec;
  ref: string;
  index: Descriptor;
  arches: ResolvedBinaryArch[];
}

/** A binary pin from the lock file: the URL it was locked for and the file's sha256. */
export interface BinaryPin {
  url: string;
  sha256: string;
}

export function binaryRef(spec: BinarySpec): string {
  return `${ARTIFACT_HOST}/binaries/${spec.name}:${spec.version}`;
}

export function binaryArches(spec: BinarySpec, bundlePlatforms: Platform[]): Arch[] {
  return platformsFor(spec, bundlePlatforms.filter((p) => p.os === 'linux')).map((p) => p.architecture as Arch);
}

/**
 * Downloads a binary for each wanted arch, verifying its pin (manifest first, then the lock),
 * and stores it as an OCI artifact. With `trustOnFirstUse` (acpack lock) an unpinned file is
 * accepted and its hash becomes the pin. A file `present` holds (a delta's base: the site has it,
 * the bundle will not carry it) is not downloaded when its pin and size are known: its artifact
 * names it, the file itself stays out of the build cache.
 */
export async function resolveBinary(
  spec: BinarySpec,
  bundlePlatforms: Platform[],
  store: ContentStore,
  fetcher: Fetcher,
  lockPins: Partial<Record<string, BinaryPin>>,
  trustOnFirstUse = false,
  present?: BaseBlobs,
): Promise<ResolvedBinary | undefined> {
  const arches = binaryArches(spec, bundlePlatforms);
  if (arches.length === 0) return undefined;
  const resolved: ResolvedBinaryArch[] = [];
  for (const arch of arches) {
    const url = expandTemplate(spec.url, { arch, version: spec.version });
    const pinUrl = expandTemplate(spec.urlAsWritten, { arch, version: spec.version });
    // Locks written before urls were kept as written hold the resolved url: both still match.
    const lockedUrl = lockPins[arch]?.url;
    const locked = lockedUrl === pinUrl || lockedUrl === url ? lockPins[arch]?.sha256 : undefined;
    const pin = spec.sha256[arch] ?? locked;
    if (!pin && !trustOnFirstUse) {
      throw new AcpackError(
        'NOT_PINNED',
        `binary ${spec.name} ${spec.version} for ${arch} (${spec.where}) has no sha256: add sha256: {${arch}: <hex>} to the manifest, or pin what ${url} serves now with: acpack lock -f ${spec.where.replace(/:\d+(:\d+)?$/, '')} --arch ${arches.join(',')}`,
      );
    }
    const expected = pin ? (`sha256:${pin}` as Digest) : undefined;
    const held = expected && present?.blobs.has(expected) ? present.sizes.get(expected) : undefined;
    let digest: Digest;
    try {
      digest = held !== undefined && !(await store.has(expected!)) ? expected! : await fetcher.ensure({ kind: 'url', url, digest: expected, what: `binary ${spec.name} ${spec.version} for ${arch}` });
    } catch (err) {
      if (err instanceof AcpackError && err.code === 'DIGEST_MISMATCH') {
        throw new AcpackError(
          'DIGEST_MISMATCH',
          `binary ${spec.name} ${spec.version} for ${arch}: ${url} does not match its pinned sha256 ${pin} (${spec.where}): the file changed upstream or the pin is wrong; nothing was stored`,
        );
      }
      throw err;
    }
    const size = (await store.size(digest)) ?? held!;
    const file: BinaryFile = {
      name: spec.name,
      version: spec.version,
      arch,
      file: { mediaType: spec.extract ? MT.binaryArchive : MT.binaryFile, digest, size },
      fileName: basename(new URL(url).pathname) || spec.name,
      install: spec.install,
      extract: spec.extract,
      mode: spec.mode,
    };
    resolved.push({ ...file, url, pinUrl, manifest: await putBinaryManifest(store, file) });
  }
  const index = await putBinaryIndex(
    store,
    spec.name,
    spec.version,
    resolved.map((r) => r.manifest),
  );
  return { spec, ref: binaryRef(spec), index, arches: resolved };
}

