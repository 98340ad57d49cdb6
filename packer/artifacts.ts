import type { Arch } from '../arch/platform.js';
import { sha256 } from '../oci/digest.js';
import { ANNOTATION_TITLE, MT, type Descriptor, type ImageIndex, type ImageManifest } from '../oci/media-types.js';
import type { ContentStore } from '../oci/store.js';
import { bundleJsonBytes } from '../oci/bundle-writer.js';

/** The OCI empty config: `{}`. */
const EMPTY = Buffer.from('{}');
export const EMPTY_CONFIG: Descriptor = { mediaType: MT.ociEmpty, digest: sha256(EMPTY), size: EMPTY.length };

export interface BinaryFile {
  name: string;
  version: string;
  arch: Arch;
  file: Descriptor;
  fileName: string;
  install?: string;
  extract?: string;
  mode: string;
}

/** Stores a small JSON document we generate (deterministic: fixed key order, fixed layout). */
async function putJson(store: ContentStore, value: unknown, mediaType: string, extra: Partial<Descriptor> = {}): Promise<Descriptor> {
  const bytes = bundleJsonBytes(value);
  const digest = await store.put(bytes);
  return { mediaType, digest, size: bytes.length, ...extra };
}

/** One arch of a binary: an artifact manifest whose single layer is the file. */
export async function putBinaryManifest(store: ContentStore, b: BinaryFile): Promise<Descriptor> {
  await store.put(EMPTY);
  const annotations: Record<string, string> = {
    'io.acpack.binary.name': b.name,
    'io.acpack.binary.version': b.version,
    'io.acpack.binary.mode': b.mode,
  };
  if (b.install) annotations['io.acpack.binary.install'] = b.install;
  if (b.extract) annotations['io.acpack.binary.extract'] = b.extract;
  const manifest: ImageManifest = {
    schemaVersion: 2,
    mediaType: MT.ociManifest,
    artifactType: MT.binary,
    config: { ...EMPTY_CONFIG, data: EMPTY.toString('base64') } as Descriptor,
    layers: [{ ...b.file, annotations: { [ANNOTATION_TITLE]: b.fileName } }],
    annotations,
  };
  return putJson(store, manifest, MT.ociManifest, { artifactType: MT.binary, platform: { os: 'linux', architecture: b.arch } });
}

/** All arches of a binary: one index, so a node asks for `kubeadm:v1.22.15` and takes its arch. */
export async function putBinaryIndex(store: ContentStore, name: string, version: string, perArch: Descriptor[]): Promise<Descriptor> {
  const index: ImageIndex = {
    schemaVersion: 2,
    mediaType: MT.ociIndex,
    artifactType: MT.binary,
    manifests: perArch,
    annotations: { 'io.acpack.binary.name': name, 'io.acpack.binary.version': version },
  };
  return putJson(store, index, MT.ociIndex, { artifactType: MT.binary });
}

/** A Helm chart the way `helm push` stores it, so `helm pull oci://…` works against our registry. */
export async function putChartManifest(store: ContentStore, chartMeta: Record<string, unknown>, chart: Descriptor): Promise<{ manifest: Descriptor; config: Descriptor }> {
  const config = await putJson(store, chartMeta, MT.helmConfig);
  const manifest: ImageManifest = {
    schemaVersion: 2,
    mediaType: MT.ociManifest,
    config,
    layers: [{ mediaType: MT.helmChart, digest: chart.digest, size: chart.size }],
  };
  return { manifest: await putJson(store, manifest, MT.ociManifest), config };
}
