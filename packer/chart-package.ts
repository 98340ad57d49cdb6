import { readdir, readFile, stat } from 'node:fs/promises';
import { join, relative, sep } from 'node:path';
import { createGzip } from 'node:zlib';
import tar from 'tar-stream';
import { parse as parseYaml } from 'yaml';
import { AcpackError } from '../oci/errors.js';

export interface PackagedChart {
  name: string;
  version: string;
  meta: Record<string, unknown>;
  tgz: Buffer;
}

/** Lines of .helmignore that we honour: plain names and simple globs (*, ?), a trailing / for directories. */
function ignoreMatcher(lines: string[]): (rel: string, isDir: boolean) => boolean {
  const rules = lines
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => {
      const dirOnly = l.endsWith('/');
      const pat = l.replace(/\/+$/, '').replace(/^\//, '');
      const re = new RegExp(`^${pat.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*').replace(/\?/g, '[^/]')}$`);
      return { re, dirOnly, anchored: pat.includes('/') };
    });
  return (rel, isDir) =>
    rules.some((r) => (!r.dirOnly || isDir) && (r.anchored ? r.re.test(rel) : r.re.test(rel.split('/').pop()!)));
}

/**
 * Packages a chart directory like `helm package`, but deterministically: entries sorted, mtime
 * fixed, mode 0644, gzip without a timestamp. The same directory always gives the same digest.
 */
export async function packageChart(dir: string, mtimeSeconds: number): Promise<PackagedChart> {
  let chartYaml: string;
  try {
    chartYaml = await readFile(join(dir, 'Chart.yaml'), 'utf8');
  } catch {
    throw new AcpackError('BAD_CHART', `${dir} is not a chart directory: it has no Chart.yaml`);
  }
  const meta = parseYaml(chartYaml) as Record<string, unknown>;
  const name = meta?.name;
  const version = meta?.version;
  if (typeof name !== 'string' || typeof version !== 'string' && typeof version !== 'number') {
    throw new AcpackError('BAD_CHART', `${join(dir, 'Chart.yaml')} needs a name and a version`);
  }
  const ignoreFile = await readFile(join(dir, '.helmignore'), 'utf8').catch(() => '');
  const ignored = ignoreMatcher(['.git/', ...ignoreFile.split('\n')]);

  const files: string[] = [];
  const walk = async (d: string) => {
    const entries = (await readdir(d, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of entries) {
      const full = join(d, e.name);
      const rel = relative(dir, full).split(sep).join('/');
      if (ignored(rel, e.isDirectory())) continue;
      if (e.isDirectory()) await walk(full);
      else if (e.isFile()) files.push(rel);
    }
  };
  await walk(dir);

  const pack = tar.pack();
  const gzip = createGzip({ level: 9 });
  const chunks: Buffer[] = [];
  gzip.on('data', (c: Buffer) => chunks.push(c));
  const done = new Promise<void>((resolve, reject) => {
    gzip.on('end', resolve);
    gzip.on('error', reject);
  });
  pack.pipe(gzip);
  const mtime = new Date(mtimeSeconds * 1000);
  for (const rel of files) {
    const full = join(dir, ...rel.split('/'));
    const data = await readFile(full);
    const mode = (await stat(full)).mode & 0o111 ? 0o755 : 0o644;
    await new Promise<void>((resolve, reject) =>
      pack.entry({ name: `${name}/${rel}`, size: data.length, mode, mtime, uid: 0, gid: 0, uname: '', gname: '' }, data, (err) => (err ? reject(err) : resolve())),
    );
  }
  pack.finalize();
  await done;
  return { name, version: String(version), meta, tgz: Buffer.concat(chunks) };
}
