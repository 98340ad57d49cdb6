import { readFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import type { ErrorObject } from 'ajv';
import { lazyValidator } from '../oci/json-schema.js';
import { LineCounter, parseDocument, isMap, isNode, isScalar, type Document } from 'yaml';
import { parsePlatform, formatPlatform, isArch, type Arch, type Platform } from '../arch/platform.js';
import { AcpackError } from '../oci/errors.js';
import { sha256, type Digest } from '../oci/digest.js';
import { parseReference, formatReference, type Reference } from '../oci/reference.js';
import { bundleManifestSchema } from './schema.js';

export interface ImageSpec {
  ref: Reference;
  /** The normalized full reference, as index.json will name it. */
  name: string;
  /** Only these platforms, when set ("only where it exists or is wanted"). */
  platforms?: Platform[];
  /** manifest.yaml:12 or lists/imageList:3, for messages. */
  where: string;
}

export interface BinarySpec {
  name: string;
  version: string;
  url: string;
  /** The url as the manifest writes it (a relative path stays relative): what the lock file records. */
  urlAsWritten: string;
  sha256: Partial<Record<Arch, string>>;
  platforms?: Platform[];
  install?: string;
  extract?: string;
  mode: string;
  where: string;
}

export type ChartSource = { kind: 'repo'; repo: string } | { kind: 'oci'; ref: Reference } | { kind: 'path'; path: string };

export interface ChartSpec {
  /** Known up front for repo and oci charts; read from Chart.yaml for a local directory. */
  name?: string;
  version?: string;
  source: ChartSource;
  sha256?: string;
  where: string;
}

export interface BundleManifest {
  file: string;
  digest: Digest;
  name: string;
  version: string;
  platforms?: Platform[];
  insecureRegistries: string[];
  /** Per registry host, token services on other hosts that may receive its credentials. */
  tokenHosts: Map<string, string[]>;
  images: ImageSpec[];
  binaries: BinarySpec[];
  charts: ChartSpec[];
}

interface RawManifest {
  metadata: { name: string; version: string };
  spec: {
    platforms?: string[];
    registries?: Record<string, { insecure?: boolean; tokenHosts?: string[] }>;
    images?: (string | { ref: string; platforms?: string[] })[];
    imageLists?: string[];
    binaries?: { name: string; version: string; url: string; sha256?: string | Record<string, string>; platforms?: string[]; install?: string; extract?: string; mode?: string }[];
    charts?: { name?: string; version?: string; repo?: string; oci?: string; path?: string; sha256?: string }[];
  };
}

const validate = lazyValidator(bundleManifestSchema, { allErrors: true, strict: true });

/** Reads, validates and normalizes a bundle manifest; errors carry file:line:column. */
export async function loadManifest(file: string): Promise<BundleManifest> {
  let text: Buffer;
  try {
    text = await readFile(file);
  } catch (err) {
    throw new AcpackError('NOT_FOUND', `cannot read manifest ${file}: ${(err as Error).message}`);
  }
  const lines = new LineCounter();
  const doc = parseDocument(text.toString('utf8'), { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const e = doc.errors[0];
    const pos = lines.linePos(e.pos[0]);
    throw new AcpackError('BAD_MANIFEST', `${file}:${pos.line}:${pos.col}: ${e.message.split('\n')[0]}`);
  }
  const data = doc.toJS() as unknown;
  if (!validate(data)) {
    throw new AcpackError('BAD_MANIFEST', describeSchemaError(file, doc, lines, validate.errors ?? []));
  }
  const raw = data as RawManifest;
  const at = (path: (string | number)[]) => `${file}:${locate(doc, lines, path)}`;
  const fail = (path: (string | number)[], message: string) => new AcpackError('BAD_MANIFEST', `${at(path)}: ${message}`);
  const platformsAt = (list: string[] | undefined, path: (string | number)[]) => {
    if (!list) return undefined;
    return list.map((p, i) => {
      try {
        return parsePlatform(p);
      } catch (err) {
        throw fail([...path, i], (err as Error).message);
      }
    });
  };

  const spec = raw.spec ?? {};
  const images = new Map<string, ImageSpec>();
  const addImage = (text: string, platforms: Platform[] | undefined, where: string) => {
    let ref: Reference;
    try {
      ref = parseReference(text);
    } catch (err) {
      throw new AcpackError('BAD_MANIFEST', `${where}: ${(err as Error).message}`);
    }
    const name = formatReference(ref);
    const seen = images.get(name);
    if (!seen) images.set(name, { ref, name, platforms, where });
    else if (!seen.platforms || !platforms) seen.platforms = undefined;
    else seen.platforms = uniquePlatforms([...seen.platforms, ...platforms]);
  };
  (spec.images ?? []).forEach((item, i) => {
    if (typeof item === 'string') addImage(item, undefined, at(['spec', 'images', i]));
    else addImage(item.ref, platformsAt(item.platforms, ['spec', 'images', i, 'platforms']), at(['spec', 'images', i]));
  });
  for (const [i, list] of (spec.imageLists ?? []).entries()) {
    const listFile = resolve(dirname(file), list);
    let content: string;
    try {
      content = await readFile(listFile, 'utf8');
    } catch (err) {
      throw fail(['spec', 'imageLists', i], `cannot read image list ${listFile}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    content.split('\n').forEach((line, n) => {
      const ref = line.replace(/#.*$/, '').trim();
      if (ref) addImage(ref, undefined, `${listFile}:${n + 1}`);
    });
  }

  const binaryNames = new Set<string>();
  const binaries: BinarySpec[] = (spec.binaries ?? []).map((b, i) => {
    const where = at(['spec', 'binaries', i]);
    if (binaryNames.has(b.name)) throw fail(['spec', 'binaries', i, 'name'], `binary "${b.name}" is listed twice`);
    binaryNames.add(b.name);
    const platforms = platformsAt(b.platforms, ['spec', 'binaries', i, 'platforms']);
    for (const p of platforms ?? []) {
      if (p.os !== 'linux' || !isArch(p.architecture)) throw fail(['spec', 'binaries', i, 'platforms'], `binaries are built for linux/amd64 and linux/arm64, not ${formatPlatform(p)}`);
    }
    if (b.install && b.extract) throw fail(['spec', 'binaries', i], `binary "${b.name}" has both install and extract: a file is either installed as is or unpacked`);
    if (!b.install && !b.extract) throw fail(['spec', 'binaries', i], `binary "${b.name}" needs install (a path for the file) or extract (a directory to unpack it into)`);
    const shaMap = typeof b.sha256 === 'string' ? { amd64: b.sha256, arm64: b.sha256 } : (b.sha256 ?? {});
    if (typeof b.sha256 === 'string' && !b.url.includes('{arch}') && !b.url.includes('{uname}')) {
      // One file for every arch (a script, a noarch tarball): one pin covers it.
    } else if (typeof b.sha256 === 'string') {
      throw fail(['spec', 'binaries', i, 'sha256'], `binary "${b.name}" has a different file per arch ({arch} in its url): pin each, e.g. sha256: {amd64: …, arm64: …}`);
    }
    return {
      name: b.name,
      version: b.version,
      // A plain path is a local file relative to the manifest (kept unencoded: it may hold {arch}).
      url: /^[a-z][a-z0-9+.-]*:/i.test(b.url) ? b.url : `file://${resolve(dirname(file), b.url)}`,
      urlAsWritten: b.url,
      sha256: shaMap as Partial<Record<Arch, string>>,
      platforms,
      install: b.install,
      extract: b.extract,
      mode: (b.mode ?? (b.install ? '0755' : '0644')).padStart(4, '0'),
      where,
    };
  });

  const charts: ChartSpec[] = (spec.charts ?? []).map((c, i) => {
    const where = at(['spec', 'charts', i]);
    const sources = [c.repo, c.oci, c.path].filter((s) => s !== undefined).length;
    if (sources !== 1) throw fail(['spec', 'charts', i], 'a chart needs exactly one of repo, oci or path');
    if (c.path !== undefined) {
      if (c.name || c.version) throw fail(['spec', 'charts', i], 'a local chart takes its name and version from its Chart.yaml: remove name/version');
      return { source: { kind: 'path', path: resolve(dirname(file), c.path) }, sha256: c.sha256, where };
    }
    if (!c.name || !c.version) throw fail(['spec', 'charts', i], `a chart from ${c.repo ? 'a repo' : 'an OCI registry'} needs name and version`);
    if (c.repo !== undefined) return { name: c.name, version: c.version, source: { kind: 'repo', repo: c.repo.replace(/\/+$/, '') }, sha256: c.sha256, where };
    let ref: Reference;
    try {
      ref = parseReference(`${c.oci!.slice('oci://'.length).replace(/\/+$/, '')}:${c.version}`);
    } catch (err) {
      throw fail(['spec', 'charts', i, 'oci'], (err as Error).message);
    }
    return { name: c.name, version: c.version, source: { kind: 'oci', ref }, sha256: c.sha256, where };
  });

  return {
    file,
    digest: sha256(text),
    name: raw.metadata.name,
    version: raw.metadata.version,
    platforms: platformsAt(spec.platforms, ['spec', 'platforms']),
    insecureRegistries: Object.entries(spec.registries ?? {})
      .filter(([, r]) => r.insecure)
      .map(([host]) => host),
    tokenHosts: new Map(Object.entries(spec.registries ?? {}).map(([host, r]) => [host, r.tokenHosts ?? []])),
    images: [...images.values()],
    binaries,
    charts,
  };
}

function uniquePlatforms(list: Platform[]): Platform[] {
  return [...new Map(list.map((p) => [formatPlatform(p), p])).values()];
}

/** line:col of the YAML node at a JSON path (or of its nearest existing parent). */
function locate(doc: Document, lines: LineCounter, path: (string | number)[]): string {
  for (let n = path.length; n >= 0; n--) {
    const node = n === 0 ? doc.contents : doc.getIn(path.slice(0, n), true);
    if (isNode(node) && node.range) {
      const pos = lines.linePos(node.range[0]);
      return `${pos.line}:${pos.col}`;
    }
  }
  return '1:1';
}

function describeSchemaError(file: string, doc: Document, lines: LineCounter, errors: ErrorObject[]): string {
  // anyOf produces one error per branch; the most specific (deepest) one reads best.
  const best = [...errors].sort((a, b) => b.instancePath.length - a.instancePath.length).find((e) => e.keyword !== 'anyOf') ?? errors[0];
  const path = best.instancePath.split('/').slice(1).map((s) => (/^\d+$/.test(s) ? Number(s) : s.replace(/~1/g, '/').replace(/~0/g, '~')));
  const field = path.length ? path.join('.') : 'the manifest';
  let what: string;
  switch (best.keyword) {
    case 'additionalProperties': {
      const key = (best.params as { additionalProperty: string }).additionalProperty;
      const parent = path.length ? doc.getIn(path, true) : doc.contents;
      const pair = isMap(parent) ? parent.items.find((p) => isScalar(p.key) && p.key.value === key) : undefined;
      const at = isScalar(pair?.key) && pair.key.range ? lines.linePos(pair.key.range[0]) : undefined;
      return `${file}:${at ? `${at.line}:${at.col}` : locate(doc, lines, path)}: unknown field "${key}" in ${field}`;
    }
    case 'required':
      what = `${field} needs "${(best.params as { missingProperty: string }).missingProperty}"`;
      break;
    case 'const':
      what = `${field} must be ${JSON.stringify((best.params as { allowedValue: unknown }).allowedValue)}`;
      break;
    case 'pattern':
      what = `${field} has an invalid value ${JSON.stringify(doc.getIn(path))}`;
      break;
    default:
      what = `${field} ${best.message ?? 'is invalid'}`;
  }
  return `${file}:${locate(doc, lines, path)}: ${what}`;
}
