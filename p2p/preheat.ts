import { request } from 'undici';
import { parsePlatform, platformMatches, type Platform } from '../arch/platform.js';
import { sha256, type Digest } from '../oci/digest.js';
import { AcpackError } from '../oci/errors.js';
import { HttpResponse } from '../oci/http.js';
import { isIndexType, MANIFEST_ACCEPT, type Descriptor, type ImageIndex, type ImageManifest } from '../oci/media-types.js';
import { manifestShapeProblem } from '../oci/manifest-shape.js';
import { parseReference } from '../oci/reference.js';
import { manifestMediaType } from '../oci/registry-client.js';
import { PASS_THROUGH_BYTES, type PeerAgent } from './agent.js';

// Preheat, as Dragonfly calls it: the agent takes a node's whole image list at once. containerd
// (and the kubelet, one image at a time by default) asks for an image's layers only once the last
// image is in, so the swarm forms anew for each image with a handful of pieces to share: bench/p2p-sim
// puts 8 nodes at 20 Mbit/s at 1.50·T_phys fetching image by image, at 1.15·T_phys with the
// preheat (the image being read first). The installer preheats the images a node pulls ahead (installer/prepull.ts) while
// containerd pulls them; containerd's requests join the fetches already running.

/** Most a manifest may weigh (as the registry's own limit). */
const MAX_MANIFEST_BYTES = 4 << 20;

export interface PreheatResult {
  images: number;
  /** Layers fetched through the peer cache (or found whole), and their bytes. */
  blobs: number;
  bytes: number;
  /** Layers left out because the cache could not hold them alongside the rest. */
  skipped: number;
  failed: { image: string; error: string }[];
}

/**
 * Fetches every layer of `images` (references as containerd names them, `registry.k8s.io/pause:3.5`)
 * for `platform` into the agent's store, all at once, and resolves when each is whole or failed.
 * Layers of PASS_THROUGH_BYTES or less are left to containerd's own request. At most half the
 * agent's cache is filled, so that a blob preheated first is not dropped before it is used.
 */
export async function preheat(agent: PeerAgent, images: string[], platform: string): Promise<PreheatResult> {
  const want = parsePlatform(platform);
  const result: PreheatResult = { images: images.length, blobs: 0, bytes: 0, skipped: 0, failed: [] };
  const perImage = await Promise.all(
    images.map(async (image) => {
      try {
        return (await layersOf(agent, image, want)).map((l) => ({ ...l, image }));
      } catch (err) {
        result.failed.push({ image, error: (err as Error).message });
        return [];
      }
    }),
  );
  // In the list's order: the agent fetches its blobs in the order it began them, first the first
  // (PiecePicker), and containerd pulls the images in this order too.
  const layers = new Map<Digest, { size: number; seedPath: string; image: string }>();
  for (const l of perImage.flat()) if (!layers.has(l.digest)) layers.set(l.digest, l);
  let budget = agent.store.maxBytes / 2;
  const fetches: Promise<void>[] = [];
  const failed = (image: string, digest: Digest, err: Error) => void result.failed.push({ image, error: `${digest}: ${err.message}` });
  for (const [digest, l] of layers) {
    if (l.size <= PASS_THROUGH_BYTES) continue;
    if (l.size > budget) {
      result.skipped++;
      continue;
    }
    budget -= l.size;
    // Begun one after another (a request to the registry each), so that they queue in list order;
    // then fetched all at once.
    let f;
    try {
      f = await agent.fetch(digest, l.seedPath);
    } catch (err) {
      failed(l.image, digest, err as Error);
      continue;
    }
    const whole = f && f !== 'whole' ? f.done : Promise.resolve();
    fetches.push(
      whole.then(
        () => {
          result.blobs++;
          result.bytes += l.size;
        },
        (err: Error) => failed(l.image, digest, err),
      ),
    );
  }
  await Promise.all(fetches);
  return result;
}

/** The layers of one image for `want`, each with the registry path that serves it. */
async function layersOf(agent: PeerAgent, image: string, want: Platform): Promise<(Descriptor & { seedPath: string })[]> {
  const ref = parseReference(image);
  // The path containerd would ask the agent for: the registry maps `ns` and the repository to its own names.
  const path = (kind: string, id: string) => `/v2/${ref.repository}/${kind}/${id}?ns=${encodeURIComponent(ref.host)}`;
  let manifest = await manifestAt(agent, path('manifests', ref.digest ?? ref.tag!), ref.digest);
  if ('manifests' in manifest) {
    const index: ImageIndex = manifest;
    const entry = index.manifests.find((m) => m.platform && platformMatches(m.platform, want));
    if (!entry) throw new AcpackError('NO_PLATFORM', `${image} has no manifest for ${want.os}/${want.architecture}`);
    manifest = await manifestAt(agent, path('manifests', entry.digest), entry.digest);
    if ('manifests' in manifest) throw new AcpackError('BAD_MANIFEST', `${image}: the manifest for its platform is an index again`);
  }
  return manifest.layers.map((l) => ({ ...l, seedPath: path('blobs', l.digest) }));
}

async function manifestAt(agent: PeerAgent, path: string, digest?: Digest): Promise<ImageManifest | ImageIndex> {
  const url = `${agent.o.registry}${path}`;
  const r = await request(url, { dispatcher: agent.registryClient, headers: { accept: MANIFEST_ACCEPT } });
  const res = HttpResponse.of(url, r);
  const body = await res.bytesUpTo(MAX_MANIFEST_BYTES);
  if (!body) throw new AcpackError('BAD_MANIFEST', `${path}: the registry's answer is larger than a manifest may be`);
  if (r.statusCode !== 200) throw new AcpackError('REGISTRY_FAILED', `${path}: the registry answered ${r.statusCode}: ${body.toString().slice(0, 200)}`);
  if (digest && sha256(body) !== digest) throw new AcpackError('BAD_MANIFEST', `${path}: the registry's answer does not match its digest`);
  const index = isIndexType(manifestMediaType(body, res.header('content-type'), url));
  const parsed: unknown = JSON.parse(body.toString()); // manifestMediaType refused what is not JSON
  const problem = manifestShapeProblem(parsed, index);
  if (problem) throw new AcpackError('BAD_MANIFEST', `${path}: ${problem}`);
  return parsed as ImageManifest | ImageIndex;
}
