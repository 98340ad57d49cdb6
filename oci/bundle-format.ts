import type { Platform } from '../arch/platform.js';
import type { Digest } from './digest.js';

/** Format v1 of bundle.tar.zst; see DESIGN.md. Entries appear in this order. */
export const BUNDLE_FORMAT = 1;
export const OCI_LAYOUT_ENTRY = 'oci-layout';
export const BUNDLE_JSON_ENTRY = 'bundle.json';
export const BUNDLE_SIG_ENTRY = 'bundle.json.sig';
export const INDEX_ENTRY = 'index.json';
export const BLOB_PREFIX = 'blobs/sha256/';
export const OCI_LAYOUT_BYTES = Buffer.from('{"imageLayoutVersion":"1.0.0"}');

/** The reference host under which binaries and charts are named in index.json. */
export const ARTIFACT_HOST = 'acpack.local';

export interface BundledPlatformManifest {
  platform: string;
  digest: Digest;
  /** The manifest, its config and its layers. */
  size: number;
}

export interface BundledImage {
  ref: string;
  digest: Digest;
  mediaType: string;
  platforms: BundledPlatformManifest[];
}

export interface BundledBinary {
  name: string;
  version: string;
  arch: string;
  /** The file (or tarball) itself. */
  digest: Digest;
  size: number;
  /** The per-arch artifact manifest, and the index that covers all arches of this binary. */
  manifest: Digest;
  index: Digest;
  ref: string;
  install?: string;
  extract?: string;
  mode: string;
}

export interface BundledChart {
  name: string;
  version: string;
  ref: string;
  digest: Digest;
  /** The chart .tgz. */
  chart: Digest;
  size: number;
}

/** bundle.json: what the bundle holds, readable before a single blob. */
export interface BundleDescriptor {
  format: typeof BUNDLE_FORMAT;
  name: string;
  version: string;
  /** sha256 of the manifest file the bundle was built from. */
  source: Digest;
  platforms: string[];
  images: BundledImage[];
  binaries: BundledBinary[];
  charts: BundledChart[];
  blobs: { count: number; bytes: number };
  /** For a delta bundle: the bundle whose blobs it leaves out. */
  base?: { name: string; version: string; digest: Digest };
}

/** Every manifest and index digest the bundle promises, for verification and import. */
export function manifestDigests(d: BundleDescriptor): Set<Digest> {
  const out = new Set<Digest>();
  for (const i of d.images) {
    out.add(i.digest);
    for (const p of i.platforms) out.add(p.digest);
  }
  for (const b of d.binaries) {
    out.add(b.index);
    out.add(b.manifest);
  }
  for (const c of d.charts) out.add(c.digest);
  return out;
}

export type { Platform };
