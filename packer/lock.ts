import { readFile } from 'node:fs/promises';
import { writeFileAtomic } from '../oci/atomic-file.js';
import { parse as parseYaml, stringify } from 'yaml';
import { AcpackError } from '../oci/errors.js';
import { isDigest, type Digest } from '../oci/digest.js';
import type { BinaryPin } from './binaries.js';

/** M.lock: every tag, URL and chart of manifest M resolved to a digest. */
export interface LockFile {
  images: Record<string, Digest>;
  binaries: Record<string, Record<string, BinaryPin>>;
  charts: Record<string, Digest>;
}

export function lockPath(manifestFile: string): string {
  return `${manifestFile}.lock`;
}

export function chartKey(name: string, version: string): string {
  return `${name}@${version}`;
}

export async function readLock(manifestFile: string): Promise<LockFile | undefined> {
  const path = lockPath(manifestFile);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  let raw: Partial<LockFile> & { kind?: string };
  try {
    raw = parseYaml(text) ?? {};
  } catch (err) {
    throw new AcpackError('BAD_LOCK', `${path} is not valid YAML (${(err as Error).message.split('\n')[0]}): delete it and run acpack lock`);
  }
  if (raw.kind !== 'Lock') throw new AcpackError('BAD_LOCK', `${path} is not an acpack lock file (kind: Lock)`);
  const lock: LockFile = { images: raw.images ?? {}, binaries: raw.binaries ?? {}, charts: raw.charts ?? {} };
  for (const [k, d] of [...Object.entries(lock.images), ...Object.entries(lock.charts)]) {
    if (!isDigest(d)) throw new AcpackError('BAD_LOCK', `${path}: ${k} is locked to "${d}", which is not a sha256 digest`);
  }
  return lock;
}

export async function writeLock(manifestFile: string, lock: LockFile, manifestDigest: Digest): Promise<string> {
  const path = lockPath(manifestFile);
  const sorted = <T>(o: Record<string, T>) => Object.fromEntries(Object.entries(o).sort(([a], [b]) => a.localeCompare(b)));
  const body = stringify(
    {
      apiVersion: 'acpack/v1',
      kind: 'Lock',
      manifest: manifestDigest,
      images: sorted(lock.images),
      binaries: sorted(lock.binaries),
      charts: sorted(lock.charts),
    },
    { lineWidth: 0 },
  );
  await writeFileAtomic(path, `# Written by \`acpack lock\`: commit it beside the manifest. \`acpack bundle --locked\` refuses anything that moved.\n${body}`);
  return path;
}
