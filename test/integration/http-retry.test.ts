import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { join } from 'node:path';
import { noise } from '../../demo/samples.js';
import { sha256 } from '../../oci/digest.js';
import { readDescriptor } from '../../oci/bundle-reader.js';
import { runCli, tempDir } from '../helpers/env.js';
import { writeManifest } from '../helpers/fixtures.js';

/**
 * The retry interceptor (undici's, on oci/http.ts's agents) against small servers on 127.0.0.1 that
 * fail the way download servers and CDNs do, seen through `acpack bundle` of a binary.
 */
let work: Awaited<ReturnType<typeof tempDir>>;
const servers: Server[] = [];
const file = noise('http-retry', 4 << 20);

beforeAll(async () => {
  work = await tempDir();
});

afterAll(async () => {
  for (const s of servers) {
    s.closeAllConnections();
    s.close();
  }
  await work?.cleanup();
});

async function listen(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<string> {
  const s = createServer(handler);
  servers.push(s);
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return `http://127.0.0.1:${(s.address() as { port: number }).port}`;
}

/** Serves `file`, honouring `Range: bytes=N-[M]`. */
function serve(req: IncomingMessage, res: ServerResponse): void {
  const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
  if (!m) return void res.writeHead(200, { 'content-length': file.length, etag: '"v1"' }).end(file);
  const start = Number(m[1]);
  const end = m[2] ? Number(m[2]) : file.length - 1;
  res.writeHead(206, { 'content-length': end - start + 1, 'content-range': `bytes ${start}-${end}/${file.length}`, etag: '"v1"' }).end(file.subarray(start, end + 1));
}

let n = 0;
async function bundleFrom(url: string) {
  const dir = join(work.dir, `run-${n++}`);
  const m = await writeManifest(dir, { binaries: [{ name: 'tool', version: 'v1', url, sha256: sha256(file).slice(7), install: '/usr/bin/tool' }] });
  const res = await runCli(['bundle', '-f', m, '--arch', 'amd64', '--cache', join(dir, 'cache'), '-o', join(dir, 'o.tar.zst')]);
  return { ...res, out: join(dir, 'o.tar.zst') };
}

describe('retries by undici\'s retry interceptor', () => {
  it('resumes a body cut mid-way in the same run with a Range request from where it stopped', async () => {
    const seen: { range?: string; ifMatch?: string }[] = [];
    const base = await listen((req, res) => {
      seen.push({ range: req.headers.range, ifMatch: req.headers['if-match'] as string | undefined });
      if (seen.length > 1) return serve(req, res);
      // The first answer promises the whole file, sends a third of it and drops the connection.
      res.writeHead(200, { 'content-length': file.length, etag: '"v1"' });
      res.write(file.subarray(0, file.length / 3), () => res.socket?.destroy());
    });
    const res = await bundleFrom(`${base}/tool`);
    expect(res.code, res.stderr).toBe(0);
    expect(seen).toHaveLength(2);
    expect(seen[0].range).toBeUndefined();
    const from = Number(/^bytes=(\d+)-/.exec(seen[1].range ?? '')?.[1]);
    expect(from).toBeGreaterThan(0);
    expect(from).toBeLessThanOrEqual(file.length / 3);
    expect(seen[1].ifMatch).toBe('"v1"'); // the same file, or no resume
    expect((await readDescriptor(res.out)).binaries[0].digest).toBe(sha256(file));
  });

  it('follows a redirect again on each retry: a CDN answering 503 twice, then the file', async () => {
    let cdnHits = 0;
    const cdn = await listen((req, res) => {
      if (++cdnHits <= 2) return void res.writeHead(503).end('busy');
      serve(req, res);
    });
    let originHits = 0;
    const origin = await listen((req, res) => {
      originHits++;
      res.writeHead(302, { location: `${cdn}/tool` }).end();
    });
    const res = await bundleFrom(`${origin}/tool`);
    expect(res.code, res.stderr).toBe(0);
    expect(cdnHits).toBe(3);
    expect(originHits).toBe(3);
  });

  it('gives up on a server that keeps failing after 5 attempts and says what it answered', async () => {
    let hits = 0;
    const base = await listen((req, res) => {
      hits++;
      res.writeHead(502, { 'content-type': 'text/plain' }).end('bad gateway: upstream down');
    });
    const res = await bundleFrom(`${base}/tool`);
    expect(res.code).toBe(1);
    expect(hits).toBe(5);
    expect(res.stderr).toContain('HTTP 502 Bad Gateway: bad gateway: upstream down');
  });
});
