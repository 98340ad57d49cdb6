import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, type Server } from 'node:http';
import { existsSync } from 'node:fs';
import { cp, mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { sha256 } from '../../oci/digest.js';
import { packageChart } from '../../packer/chart-package.js';
import { ROOT, runCli, tempDir } from '../helpers/env.js';
import { writeManifest } from '../helpers/fixtures.js';

/**
 * A Helm repository is content from the network: its index.yaml (and any redirect on the way to a
 * chart) may only lead to http or https URLs. A `file:` URL there once made `acpack bundle` read a
 * local file into the bundle. Only the user's own manifest may name local paths.
 */

let work: Awaited<ReturnType<typeof tempDir>>;
let server: Server;
let url: string;
/** A real chart, kept where a hostile index points: were it read, it would bundle cleanly. */
let secret: string;
let secretTgz: Buffer;
/** index.yaml per repository path, set by each test. */
const indexes = new Map<string, string>();
const requests: string[] = [];

beforeAll(async () => {
  work = await tempDir('acpack-chart-repo-');
  await cp(join(ROOT, 'manifests/demo/charts/hello'), join(work.dir, 'hello'), { recursive: true });
  secretTgz = (await packageChart(join(work.dir, 'hello'), 0)).tgz;
  secret = join(work.dir, 'private', 'hello-0.1.0.tgz');
  await mkdir(join(work.dir, 'private'), { recursive: true });
  await writeFile(secret, secretTgz);
  // A chart repository on 127.0.0.1: /<repo>/index.yaml as the test sets it, /go-local redirects to the file.
  server = createServer((req, res) => {
    const path = new URL(req.url!, 'http://x').pathname;
    requests.push(path);
    const index = indexes.get(path.replace(/\/index\.yaml$/, ''));
    if (path.endsWith('/index.yaml') && index) res.writeHead(200, { 'content-type': 'text/yaml' }).end(index);
    else if (path === '/go-local/hello-0.1.0.tgz') res.writeHead(302, { location: `file://${secret}` }).end();
    else res.writeHead(404).end('not found');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
});

afterAll(async () => {
  await new Promise<void>((r) => {
    server?.closeAllConnections();
    server?.close(() => r());
  });
  await work?.cleanup();
});

function repoIndex(chartUrl: string): string {
  return stringify({
    apiVersion: 'v1',
    entries: { hello: [{ apiVersion: 'v2', name: 'hello', version: '0.1.0', urls: [chartUrl], digest: sha256(secretTgz).slice(7), created: '2024-01-01T00:00:00Z' }] },
  });
}

/** Runs `acpack bundle` for one chart from `repo`; returns the result, the output path and the cache. */
async function bundleFrom(name: string, repo: string) {
  const dir = join(work.dir, name);
  const m = await writeManifest(dir, { charts: [{ name: 'hello', version: '0.1.0', repo }] });
  const out = join(dir, 'b.tar.zst');
  const cache = join(dir, 'cache');
  const res = await runCli(['bundle', '-f', m, '--arch', 'amd64', '--cache', cache, '-o', out]);
  return { res, out, cache };
}

/** Whether the secret's bytes reached the cache store at all. */
async function cached(cache: string): Promise<boolean> {
  const blobs = join(cache, 'blobs/sha256');
  return existsSync(blobs) && (await readdir(blobs)).includes(sha256(secretTgz).slice(7));
}

describe('a chart repository index may only lead to http(s) URLs', () => {
  it.each([
    ['an absolute file: URL', () => `file://${secret}`],
    ['a file: URL with a host', () => `file://localhost${secret}`],
    ['another scheme (ftp:)', () => `ftp://127.0.0.1/hello-0.1.0.tgz`],
  ])('%s in index.yaml is refused, naming the chart and the repository, and nothing is read', async (what, chartUrl) => {
    const repoPath = `/repo-${what.replace(/\W/g, '')}`;
    indexes.set(repoPath, repoIndex(chartUrl()));
    const repo = `${url}${repoPath}`;
    const { res, out, cache } = await bundleFrom(`index-${what.replace(/\W/g, '')}`, repo);
    expect(res.code).toBe(1);
    expect(res.stderr).toContain(`error: chart hello 0.1.0 (`);
    expect(res.stderr).toContain(`${repo}/index.yaml names ${chartUrl()} as its download; a chart repository may only point at http or https URLs`);
    expect(res.stderr).not.toMatch(/unexpected error|\n\s+at /);
    expect(existsSync(out)).toBe(false);
    expect(await cached(cache)).toBe(false);
  });

  it('a redirect to a file: URL is refused at once (not retried), naming the chart, the repository and the target', async () => {
    indexes.set('/redirecting', repoIndex(`${url}/go-local/hello-0.1.0.tgz`));
    const repo = `${url}/redirecting`;
    const before = requests.length;
    const started = Date.now();
    const { res, out, cache } = await bundleFrom('redirect', repo);
    expect(res.code).toBe(1);
    expect(res.stderr).toContain(`chart hello 0.1.0 (`);
    expect(res.stderr).toContain(`from ${repo}: ${url}/go-local/hello-0.1.0.tgz redirected to file://${secret}: only http and https URLs are followed`);
    expect(requests.slice(before).filter((p) => p === '/go-local/hello-0.1.0.tgz')).toHaveLength(1);
    expect(Date.now() - started).toBeLessThan(15_000);
    expect(existsSync(out)).toBe(false);
    expect(await cached(cache)).toBe(false);
  });

  it('a local repository (file: in the manifest) keeps its charts beside its index, but its index cannot reach outside it', async () => {
    const local = join(work.dir, 'local-repo');
    await mkdir(local, { recursive: true });
    await writeFile(join(local, 'hello-0.1.0.tgz'), secretTgz);
    await writeFile(join(local, 'index.yaml'), repoIndex('hello-0.1.0.tgz'));
    const ok = await bundleFrom('local-ok', `file://${local}`);
    expect(ok.res.code, ok.res.stderr).toBe(0);

    await writeFile(join(local, 'index.yaml'), repoIndex('../private/hello-0.1.0.tgz'));
    const escape = await bundleFrom('local-escape', `file://${local}`);
    expect(escape.res.code).toBe(1);
    expect(escape.res.stderr).toContain(`file://${local}/index.yaml names ../private/hello-0.1.0.tgz as its download; a chart repository may only point at http or https URLs, never at a local file`);
    expect(await cached(escape.cache)).toBe(false);
  });
});
