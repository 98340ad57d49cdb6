import { open, rm } from 'node:fs/promises';
import { digestOfHash, newHash, READ_CHUNK, shortDigest, type Digest } from '../oci/digest.js';
import { AcpackError } from '../oci/errors.js';
import { bundleJsonBytes, writeVolumes, type EntryBlob, type WriteBundleOptions } from '../oci/bundle-writer.js';
import type { BundleDescriptor, ListedBlob } from '../oci/bundle-format.js';
import type { ImageIndex } from '../oci/media-types.js';
import type { ContentStore } from '../oci/store.js';
import type { Resolution } from './pack.js';
import { planVolumes, tarBytes, volumePaths, volumesPast, type VolumePlan } from './volumes.js';

/**
 * `acpack bundle --volume-size`: the bundle as NAME.001.tar.zst, NAME.002.tar.zst, … Every file
 * carries the same bundle.json (the blob list says which volume holds each blob, or each part of a
 * blob larger than a volume; each image platform says which volumes it needs), so that any one shows
 * the whole bundle and verifies alone. Part digests go into bundle.json, which comes first in every
 * file: the blobs to split are waited for and read (and hashed) once before anything is written;
 * the others are written as their downloads finish, as in a single file. Files of an
 * earlier, longer set under the same name past the new last volume are removed (and named).
 */
export async function writeVolumeSet(
  r: Resolution,
  descriptor: BundleDescriptor,
  index: ImageIndex,
  blobs: { digest: Digest; size: number; manifest: boolean }[],
  out: string,
  volumeSize: number,
  opts: WriteBundleOptions,
): Promise<{ paths: string[]; descriptor: BundleDescriptor; removed: string[] }> {
  // bundle.json grows with the plan (volume numbers, parts): plan again with its real size until it fits.
  let reserve = 64 << 10;
  let plan: VolumePlan;
  let sized: BundleDescriptor;
  for (;;) {
    plan = planVolumes(blobs, volumeSize, reserve);
    const placeholder = `sha256:${'0'.repeat(64)}` as Digest;
    sized = withVolumes(r, descriptor, plan, () => placeholder);
    const metadata = tarBytes(bundleJsonBytes(sized).length) + tarBytes(bundleJsonBytes(index).length) + tarBytes(1024) + 3 * 1024;
    if (metadata <= reserve) break;
    reserve = metadata + (16 << 10);
  }
  const partDigests = await hashParts(r.store, plan, opts.ready);
  const final = withVolumes(r, descriptor, plan, (blob, i) => partDigests.get(blob)![i]);
  const perVolume: EntryBlob[][] = Array.from({ length: plan.volumes }, () => []);
  for (const b of plan.blobs) {
    if (!b.parts) perVolume[b.volume - 1].push({ digest: b.digest, size: b.size });
    else b.parts.forEach((p, i) => perVolume[p.volume - 1].push({ digest: partDigests.get(b.digest)![i], size: p.size, of: { digest: b.digest, offset: p.offset } }));
  }
  const paths = volumePaths(out, plan.volumes);
  await writeVolumes(r.store, final, index, perVolume, paths, volumeSize, opts);
  // Once the new set is whole: volumes an earlier, longer set left under these names go.
  const removed = await volumesPast(out, plan.volumes);
  for (const stale of removed) await rm(stale, { force: true });
  return { paths, descriptor: final, removed };
}

/** bundle.json for a plan: the list with volumes and parts, and the volumes each image platform needs. */
function withVolumes(r: Resolution, d: BundleDescriptor, plan: VolumePlan, partDigest: (blob: Digest, i: number) => Digest): BundleDescriptor {
  const volumesOf = new Map<Digest, number[]>();
  const placed = new Map<Digest, ListedBlob>();
  for (const b of plan.blobs) {
    if (!b.parts) {
      volumesOf.set(b.digest, [b.volume]);
      placed.set(b.digest, { digest: b.digest, size: b.size, volume: b.volume });
    } else {
      volumesOf.set(b.digest, b.parts.map((p) => p.volume));
      placed.set(b.digest, { digest: b.digest, size: b.size, parts: b.parts.map((p, i) => ({ digest: partDigest(b.digest, i), size: p.size, volume: p.volume })) });
    }
  }
  // The blobs a delta leaves to its base stay listed, carried by no volume.
  const list = (d.blobs.list ?? []).map((b) => placed.get(b.digest) ?? b);
  const needs = (digests: Digest[]) => [...new Set(digests.flatMap((x) => volumesOf.get(x) ?? []))].sort((a, b) => a - b);
  const images = d.images.map((img, i) => ({
    ...img,
    platforms: img.platforms.map((p, j) => {
      const part = r.images[i].parts[j];
      return { ...p, volumes: needs([part.manifest.digest, ...part.blobs.map((b) => b.digest as Digest)]) };
    }),
  }));
  return { ...d, images, volumes: plan.volumes, blobs: { ...d.blobs, list } };
}

/** The sha256 of each part of each split blob, read from the store. */
async function hashParts(store: ContentStore, plan: VolumePlan, ready: WriteBundleOptions['ready']): Promise<Map<Digest, Digest[]>> {
  const out = new Map<Digest, Digest[]>();
  const buf = Buffer.allocUnsafe(READ_CHUNK * 4);
  for (const b of plan.blobs) {
    if (!b.parts) continue;
    await ready?.(b.digest);
    const fh = await open(store.path(b.digest), 'r');
    try {
      // The whole blob in the same pass: a part of a damaged blob must not be written as good.
      const whole = newHash();
      const digests: Digest[] = [];
      for (const p of b.parts) {
        const hash = newHash();
        for (let at = 0; at < p.size; ) {
          const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, p.size - at), p.offset + at);
          if (bytesRead === 0) break;
          hash.update(buf.subarray(0, bytesRead));
          whole.update(buf.subarray(0, bytesRead));
          at += bytesRead;
        }
        digests.push(digestOfHash(hash));
      }
      if (digestOfHash(whole) !== b.digest) {
        throw new AcpackError('DIGEST_MISMATCH', `blob ${shortDigest(b.digest)} in the content store (${store.root}) is corrupt: delete it and run again`);
      }
      out.set(b.digest, digests);
    } finally {
      await fh.close();
    }
  }
  return out;
}
