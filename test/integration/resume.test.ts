import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, type Server } from 'node:http';
import { readdir, stat } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { buildIndexImage, buildLayer, noise, pushImage, type SampleImage } from '../../demo/samples.js';
import { verifyBundle } from '../../oci/bundle-verify.js';
import { runCli, tempDir, withRegistry } from '../helpers/env.js';
import { writeManifest } from '../helpers/fixtures.js';

/**
 * A proxy in front of docker-registry that can stall one blob halfway (the first run is killed
 * there) and records the Range headers it is asked for.
 */
let env: Awaited<ReturnType<typeof withRegistry>>;
let work: Awaited<ReturnType<typeof tempDir>>;
let proxy: Server;
let proxyHost: string;
let image: SampleImage;
let bigDigest: string;
let bigSize: number;
let stall = true;
const ranges: (string | undefined)[] = [];
let bigBytesServed = 0;

beforeAll(async () => {
  env = await withRegistry();
  work = await tempDir();
  const big = await buildLayer([{ path: 'opt/big.bin', content: noise('resume', 8 << 20) }]);
  bigDigest = big.descriptor.digest;
  bigSize = big.descriptor.size;
  image = buildIndexImage('big/image', '1', { amd64: [big] });
  await pushImage(env.registry.host, image);

  proxy = createServer(async (req, res) => {
    const upstream = await fetch(`http://${env.registry.host}${req.url}`, {
      method: req.method,
      headers: Object.fromEntries(Object.entries(req.headers).filter(([k]) => ['accept', 'range'].includes(k))) as Record<string, string>,
    });
    const headers: Record<string, string> = {};
    upstream.headers.forEach((v, k) => (headers[k] = v));
    const isBig = req.url?.endsWith(`/blobs/${bigDigest}`) && req.method === 'GET';
    const body = Buffer.from(await upstream.arrayBuffer());
    if (isBig) ranges.push(req.headers.range);
    res.writeHead(upstream.status, headers);
    if (isBig && stall) {
      res.write(body.subarray(0, body.length >> 1)); // half, then nothing: the client waits until killed
      bigBytesServed += body.length >> 1;
      return;
    }
    if (isBig) bigBytesServed += body.length;
    res.end(body);
  });
  await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
  proxyHost = `127.0.0.1:${(proxy.address() as { port: number }).port}`;
});

afterAll(async () => {
  proxy?.closeAllConnections();
  await new Promise((r) => proxy?.close(r));
  await env?.cleanup();
  await work?.cleanup();
});

async function ingestBytes(cache: string): Promise<number> {
  const dir = join(cache, 'ingest');
  if (!existsSync(dir)) return 0;
  let n = 0;
  for (const d of await readdir(dir)) n += await stat(join(dir, d, 'data')).then((s) => s.size, () => 0);
  return n;
}

describe('an interrupted bundle run', () => {
  it('resumes a blob cut mid-download with a Range request', async () => {
    const m = await writeManifest(work.dir, { images: [`${proxyHost}/big/image:1`] });
    const cache = join(work.dir, 'cache');
    const out = join(work.dir, 'out.tar.zst');

    const first = runCli(['bundle', '-f', m, '--arch', 'amd64', '--cache', cache, '-o', out]);
    const deadline = Date.now() + 30_000;
    while ((await ingestBytes(cache)) < 2 << 20 && Date.now() < deadline) await sleep(50);
    const partial = await ingestBytes(cache);
    expect(partial).toBeGreaterThanOrEqual(2 << 20);
    first.kill('SIGKILL');
    expect((await first).code).toBe(null);
    expect(existsSync(out)).toBe(false);

    stall = false;
    bigBytesServed = 0;
    const second = await runCli(['bundle', '-f', m, '--arch', 'amd64', '--cache', cache, '-o', out]);
    expect(second.code, second.stderr).toBe(0);
    expect(ranges[0]).toBeUndefined();
    const resumedFrom = Number(/^bytes=(\d+)-$/.exec(ranges[1] ?? '')?.[1]);
    expect(resumedFrom).toBeGreaterThanOrEqual(2 << 20);
    expect(resumedFrom).toBeLessThanOrEqual(bigSize >> 1);
    expect(bigBytesServed).toBe(bigSize - resumedFrom);
    const report = await verifyBundle(out);
    expect(report.descriptor.images[0].digest).toBe(image.top.digest);
    expect(await readdir(join(cache, 'ingest'))).toEqual([]);
  });
});
