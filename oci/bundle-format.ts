import type { Platform } from '../arch/platform.js';
import type { Digest } from './digest.js';

/** The format acpack writes (docs/bundle-format.md); readers take v1 too. Entries appear in this order. */
export const BUNDLE_FORMAT = 2;
/** Formats a reader takes. */
export const READ_FORMATS: readonly number[] = [1, 2];
export const OCI_LAYOUT_ENTRY = 'oci-layout';
export const BUNDLE_JSON_ENTRY = 'bundle.json';
export const BUNDLE_SIG_ENTRY = 'bundle.json.sig';
/** In each file of a volume set: its number, as text. */
export const VOLUME_ENTRY = 'volume';
export const INDEX_ENTRY = 'index.json';
export const BLOB_PREFIX = 'blobs/sha256/';
export const OCI_LAYOUT_BYTES = Buffer.from('{"imageLayoutVersion":"1.0.0"}');

/** The reference host under which binaries, charts and acinstall's runtime are named in index.json. */
export const ARTIFACT_HOST = 'acpack.local';

export interface BundledPlatformManifest {
  platform: string;
  digest: Digest;
  /** The manifest, its config and its layers. */
  size: number;
  /** Format 2, a volume set: the volumes that hold the manifest and its blobs. */
  volumes?: number[];
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

/**
 * acinstall's runtime for one arch (its single executable, gzip -9): a binary artifact like the
 * others, listed apart since no manifest asks for it. Only bundles that lay a cluster down carry it.
 */
export interface BundledRuntime {
  arch: string;
  /** acpack's version and the Node release it runs on: `0.1.0+node24.22.3`. */
  version: string;
  /** The gzipped executable. */
  digest: Digest;
  size: number;
  manifest: Digest;
  index: Digest;
  ref: string;
}

/**
 * One blob of a v2 bundle, as bundle.json lists it. `volume`: the file (1, 2, …) whose entry holds
 * it. A blob larger than a volume has `parts` instead, each an entry of its own named by its
 * digest. With neither, the bundle does not carry it (a delta): the site's store must hold it.
 */
export interface ListedBlob {
  digest: Digest;
  size: number;
  volume?: number;
  parts?: { digest: Digest; size: number; volume: number }[];
}

/** bundle.json: what the bundle holds, readable before a single blob. */
export interface BundleDescriptor {
  format: 1 | 2;
  name: string;
  version: string;
  /** sha256 of the manifest file the bundle was built from. */
  source: Digest;
  platforms: string[];
  images: BundledImage[];
  binaries: BundledBinary[];
  charts: BundledChart[];
  /** Absent from bundles that lay no cluster down (and from those of an acpack before it). */
  runtime?: BundledRuntime[];
  /**
   * The blobs the bundle carries, over all its volumes: how many and their bytes. Format 2 lists
   * them too (`list`), every blob the bundle's content needs, carried or not: bundle.json then
   * names every byte of the bundle, which is what its signature covers.
   */
  blobs: { count: number; bytes: number; list?: ListedBlob[] };
  /** Format 2: index.json's digest and size (its entry is checked against them). */
  index?: { digest: Digest; size: number };
  /** Format 2: how many files the bundle is written as (1 unless `--volume-size`). */
  volumes?: number;
  /** For a delta bundle: the bundle whose blobs it leaves out. */
  base?: { name: string; version: string; digest: Digest };
}

/**
 * A bundle's identity on site, the key of the journal's "done for this bundle": its name, version,
 * source manifest and platforms. The platforms belong to it: the same manifest bundled again for
 * other arches (a corrected bundle) is another bundle, whose steps are not skipped as already done.
 */
export function bundleIdentity(d: Pick<BundleDescriptor, 'name' | 'version' | 'source' | 'platforms'>): string {
  return `${d.name} ${d.version} ${d.source} ${[...d.platforms].sort().join(',')}`;
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
  for (const r of d.runtime ?? []) {
    out.add(r.index);
    out.add(r.manifest);
  }
  return out;
}

/** A bundle (or its manifest) that carries kubeadm is meant to lay a cluster down: the packer's lint holds it to that. */
export function laysClusterDown(d: { binaries: readonly { name: string }[] }): boolean {
  return d.binaries.some((b) => b.name === 'kubeadm');
}

export type { Platform };

/**
 * What a reader accepts, whoever wrote the bundle: bounds that no honest bundle comes near, so that a
 * hostile one costs little memory and time before it is refused (see docs/bundle-format.md).
 */
export const BUNDLE_LIMITS = {
  /** oci-layout and bundle.json.sig. */
  smallEntryBytes: 64 << 10,
  /** bundle.json and index.json (a 10,000-image bundle's are ~5 MB). */
  metadataBytes: 16 << 20,
  /** One manifest or index blob, read into memory to learn its children's sizes. */
  manifestBytes: 4 << 20,
  /** Nesting of any JSON a reader parses (OCI manifests nest 5 deep, bundle.json 4). */
  jsonDepth: 64,
  /** Values (objects, arrays, elements) in one JSON document. */
  jsonValues: 1_000_000,
  /** Blobs in one bundle (bundle.json's blobs.count). */
  blobs: 1_000_000,
} as const;

const digestSchema = { type: 'string', pattern: '^sha256:[a-f0-9]{64}$' } as const;
const sizeSchema = { type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER } as const;
const textSchema = { type: 'string', maxLength: 4096 } as const;

/** An OCI descriptor as a reader needs it; other fields are allowed and ignored. */
export const descriptorSchema = {
  type: 'object',
  required: ['mediaType', 'digest', 'size'],
  properties: {
    mediaType: textSchema,
    digest: digestSchema,
    size: sizeSchema,
    urls: { type: 'array', items: { type: 'string' } },
    annotations: { type: 'object', additionalProperties: { type: 'string' } },
    platform: { type: 'object' },
  },
} as const;

const listedPartSchema = {
  type: 'object',
  required: ['digest', 'size', 'volume'],
  properties: { digest: digestSchema, size: sizeSchema, volume: { type: 'integer', minimum: 1 } },
} as const;

/** bundle.json, format v1 or v2 (its `format` is checked first, so a newer format is named as such; v2's own fields are required in parseDescriptor). */
export const bundleJsonSchema = {
  type: 'object',
  required: ['format', 'name', 'version', 'source', 'platforms', 'images', 'binaries', 'charts', 'blobs'],
  properties: {
    format: { enum: READ_FORMATS },
    name: textSchema,
    version: textSchema,
    source: digestSchema,
    platforms: { type: 'array', items: textSchema },
    images: {
      type: 'array',
      items: {
        type: 'object',
        required: ['ref', 'digest', 'mediaType', 'platforms'],
        properties: {
          ref: textSchema,
          digest: digestSchema,
          mediaType: textSchema,
          platforms: {
            type: 'array',
            items: {
              type: 'object',
              required: ['platform', 'digest', 'size'],
              properties: { platform: textSchema, digest: digestSchema, size: sizeSchema, volumes: { type: 'array', items: { type: 'integer', minimum: 1 } } },
            },
          },
        },
      },
    },
    binaries: {
      type: 'array',
      items: {
        type: 'object',
        required: ['name', 'version', 'arch', 'digest', 'size', 'manifest', 'index', 'ref', 'mode'],
        properties: {
          name: textSchema,
          version: textSchema,
          arch: textSchema,
          digest: digestSchema,
          size: sizeSchema,
          manifest: digestSchema,
          index: digestSchema,
          ref: textSchema,
          install: textSchema,
          extract: textSchema,
          mode: { type: 'string', pattern: '^[0-7]{3,4}$' },
        },
      },
    },
    charts: {
      type: 'array',
      items: {
        type: 'object',
        required: ['name', 'version', 'ref', 'digest', 'chart', 'size'],
        properties: { name: textSchema, version: textSchema, ref: textSchema, digest: digestSchema, chart: digestSchema, size: sizeSchema },
      },
    },
    runtime: {
      type: 'array',
      items: {
        type: 'object',
        required: ['arch', 'version', 'digest', 'size', 'manifest', 'index', 'ref'],
        properties: { arch: textSchema, version: textSchema, digest: digestSchema, size: sizeSchema, manifest: digestSchema, index: digestSchema, ref: textSchema },
      },
    },
    blobs: {
      type: 'object',
      required: ['count', 'bytes'],
      properties: {
        count: { type: 'integer', minimum: 0, maximum: BUNDLE_LIMITS.blobs },
        bytes: sizeSchema,
        list: {
          type: 'array',
          maxItems: BUNDLE_LIMITS.blobs,
          items: {
            type: 'object',
            required: ['digest', 'size'],
            properties: { digest: digestSchema, size: sizeSchema, volume: { type: 'integer', minimum: 1 }, parts: { type: 'array', items: listedPartSchema } },
          },
        },
      },
    },
    index: { type: 'object', required: ['digest', 'size'], properties: { digest: digestSchema, size: sizeSchema } },
    volumes: { type: 'integer', minimum: 1, maximum: 9999 },
    base: { type: 'object', required: ['name', 'version', 'digest'], properties: { name: textSchema, version: textSchema, digest: digestSchema } },
  },
} as const;

/** index.json: an OCI index whose entries name the bundle's top-level manifests. */
export const indexJsonSchema = {
  type: 'object',
  required: ['schemaVersion', 'manifests'],
  properties: {
    schemaVersion: { const: 2 },
    manifests: { type: 'array', items: descriptorSchema },
  },
} as const;
