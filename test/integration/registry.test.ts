import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { readFile, readdir, writeFile, mkdir, cp, open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { bundle } from '../../packer/index.js';
import { parsePlatformList } from '../../arch/platform.js';
import { sha256 } from '../../oci/digest.js';
import { importBundle, IndexDb, startRegistry, type RunningRegistry } from '../../registry/index.js';
import { ROOT, silent, tempDir, withRegistry } from '../helpers/env.js';
import { buildFixture, imageRef, pushFixture, writeManifest, type Fixture } from '../helpers/fixtures.js';
import { startContainerd, writeHostsToml } from '../helpers/containerd.js';
import { helmBinary } from '../helpers/helm.js';
import { readDescriptor } from '../../oci/bundle-reader.js';
import { buildIndexImage, buildLayer, noise, pushImage, type Layer, type SampleImage } from '../../demo/samples.js';
import { connect } from 'node:net';
import { createHash } from 'node:crypto';

const run = promisify(execFile);

let fx: Fixture;
let work: Awaited<ReturnType<typeof tempDir>>;
let bundlePath: string;
let upstream: string; // the host the images were bundled from (stopped before anything is pulled)
let storeRoot: string;
let reg: RunningRegistry;
let big: SampleImage;
let bigLayer: Layer;
const access: { path: string; status: number }[] = [];

beforeAll(async () => {
  work = await tempDir();
  const source = await withRegistry();
  upstream = source.registry.host;
  fx = await buildFixture('site');
  await pushFixture(upstream, fx);
  bigLayer = await buildLayer([{ path: 'big', content: noise('site-big', 6 << 20) }]);
  big = buildIndexImage('big/one', '1', { amd64: [bigLayer], arm64: [bigLayer] });
  await pushImage(upstream, big);
  await cp(join(ROOT, 'manifests/demo/charts/hello'), join(work.dir, 'chart'), { recursive: true });
  await mkdir(join(work.dir, 'bin'));
  await writeFile(join(work.dir, 'bin/tool-amd64'), 'tool amd64\n');
  await writeFile(join(work.dir, 'bin/tool-arm64'), 'tool arm64\n');
  const m = await writeManifest(work.dir, {
    images: [imageRef(upstream, fx.web), imageRef(upstream, fx.db), imageRef(upstream, big)],
    binaries: [{ name: 'tool', version: 'v1', url: 'bin/tool-{arch}', sha256: { amd64: sha256('tool amd64\n').slice(7), arm64: sha256('tool arm64\n').slice(7) }, install: '/usr/bin/tool' }],
    charts: [{ path: 'chart' }],
  });
  bundlePath = join(work.dir, 'b.tar.zst');
  await bundle({ manifestFile: m, platforms: parsePlatformList('amd64,arm64'), cacheDir: join(work.dir, 'cache'), reporter: silent, sourceDateEpoch: 0, out: bundlePath });
  await source.cleanup(); // the site has no upstream
  storeRoot = join(work.dir, 'site');
  await importBundle(bundlePath, storeRoot);
  reg = await startRegistry({ storeRoot, listen: '127.0.0.1:0', log: (l) => access.push(l as { path: string; status: number }) });
});

afterAll(async () => {
  await reg?.close();
  await work?.cleanup();
});

const hostPrefixed = (img: { repository: string; tag: string }) => `${upstream.replace(':', '_')}/${img.repository}:${img.tag}`;

describe('acinstall import', () => {
  it('is a no-op the second time', async () => {
    const again = await importBundle(bundlePath, storeRoot);
    expect(again.added).toBe(0);
    expect(again.refs).toBe(5);
  });

  it('refuses a truncated bundle and leaves the store as it was', async () => {
    const fresh = join(work.dir, 'fresh-store');
    const bytes = await readFile(bundlePath);
    const cut = join(work.dir, 'cut.tar.zst');
    await writeFile(cut, bytes.subarray(0, Math.floor(bytes.length * 0.8)));
    await expect(importBundle(cut, fresh)).rejects.toThrow(/nothing was imported/);
    expect(await readdir(join(fresh, 'blobs/sha256'))).toEqual([]);
  });
});

describe('acinstall serve, with real clients', () => {
  it('skopeo reads an image by its host-prefixed name with the original index digest', async () => {
    const { stdout } = await run('skopeo', ['inspect', '--tls-verify=false', '--raw', `docker://${reg.host}/${hostPrefixed(fx.web)}`]);
    expect(sha256(stdout)).toBe(fx.web.top.digest);
  });

  it('skopeo copies every bundled arch out, digests preserved', async () => {
    const dir = join(work.dir, 'copy');
    await run('skopeo', ['copy', '--all', '--preserve-digests', '--src-tls-verify=false', `docker://${reg.host}/${hostPrefixed(fx.db)}`, `oci:${dir}:x`]);
    const index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8'));
    expect(index.manifests[0].digest).toBe(fx.db.top.digest);
    const blobs = await readdir(join(dir, 'blobs/sha256'));
    expect(blobs).toContain(fx.base.descriptor.digest.slice(7));
  });

  it('answers re-rooted names when unambiguous', async () => {
    const { stdout } = await run('skopeo', ['inspect', '--tls-verify=false', '--raw', `docker://${reg.host}/${fx.web.repository}:${fx.web.tag}`]);
    expect(sha256(stdout)).toBe(fx.web.top.digest);
  });

  it('containerd pulls by the ORIGINAL name through hosts.toml (mirror mode, ?ns=)', async () => {
    const dir = join(work.dir, 'containerd');
    const ctrd = await startContainerd(dir);
    try {
      const hostsDir = join(dir, 'certs.d');
      await writeHostsToml(hostsDir, upstream, reg.host);
      const ref = imageRef(upstream, fx.web);
      await run('ctr', ['--address', ctrd.socket, '-n', 'acpack', 'content', 'fetch', '--hosts-dir', hostsDir, '--platform', 'linux/arm64', ref], { timeout: 60_000 });
      const { stdout } = await run('ctr', ['--address', ctrd.socket, '-n', 'acpack', 'images', 'ls']);
      expect(stdout).toContain(ref);
      expect(stdout).toContain(fx.web.top.digest);
      const content = await run('ctr', ['--address', ctrd.socket, '-n', 'acpack', 'content', 'ls', '-q']);
      expect(content.stdout).toContain(fx.base.descriptor.digest);
      // It really came through mirror mode: the upstream host named in ?ns=.
      expect(access.some((l) => l.path === `/v2/${fx.web.repository}/manifests/${fx.web.tag}?ns=${encodeURIComponent(upstream)}` && l.status === 200)).toBe(true);
    } finally {
      await ctrd.stop();
    }
  });

  it('helm pulls a bundled chart over oci://, the same .tgz that was bundled', async () => {
    const d = (await readDescriptor(bundlePath)).charts[0];
    const dest = join(work.dir, 'helm');
    await mkdir(dest, { recursive: true });
    await run(helmBinary(), ['pull', `oci://${reg.host}/acpack.local/charts/${d.name}`, '--version', d.version, '--plain-http', '-d', dest], {
      env: { ...process.env, HELM_CONFIG_HOME: join(dest, 'config'), HELM_CACHE_HOME: join(dest, 'cache'), HELM_DATA_HOME: join(dest, 'data') },
    });
    expect(sha256(await readFile(join(dest, `${d.name}-${d.version}.tgz`)))).toBe(d.chart);
  });

  it('podman pulls an image', async () => {
    const dir = join(work.dir, 'podman');
    const ref = `${reg.host}/${hostPrefixed(fx.db)}`;
    const common = ['--root', join(dir, 'root'), '--runroot', join(dir, 'run'), '--storage-driver', 'vfs', '--cgroup-manager', 'cgroupfs', '--events-backend', 'file'];
    await run('podman', [...common, 'pull', '--tls-verify=false', '--arch', 'arm64', ref], { timeout: 60_000 });
    const { stdout } = await run('podman', [...common, 'images', '--digests', '--format', '{{.Repository}}:{{.Tag}} {{.Digest}}']);
    expect(stdout).toContain(fx.db.top.digest);
  });
});

describe('the distribution API', () => {
  const get = (path: string, headers: Record<string, string> = {}, method = 'GET') => fetch(`${reg.url}${path}`, { method, headers });

  it('serves blobs with Range: partial, open, suffix, unsatisfiable', async () => {
    const blob = fx.base;
    const path = `/v2/${upstream.replace(':', '_')}/${fx.web.repository}/blobs/${blob.descriptor.digest}`;
    const size = blob.descriptor.size;
    const part = await get(path, { range: 'bytes=10-19' });
    expect(part.status).toBe(206);
    expect(part.headers.get('content-range')).toBe(`bytes 10-19/${size}`);
    expect(Buffer.from(await part.arrayBuffer()).equals(blob.data.subarray(10, 20))).toBe(true);
    const open = await get(path, { range: `bytes=${size - 5}-` });
    expect(Buffer.from(await open.arrayBuffer()).equals(blob.data.subarray(size - 5))).toBe(true);
    const suffix = await get(path, { range: 'bytes=-7' });
    expect(Buffer.from(await suffix.arrayBuffer()).equals(blob.data.subarray(size - 7))).toBe(true);
    const bad = await get(path, { range: `bytes=${size}-` });
    expect(bad.status).toBe(416);
    expect(bad.headers.get('content-range')).toBe(`bytes */${size}`);
    const head = await get(path, {}, 'HEAD');
    expect(head.status).toBe(200);
    expect(head.headers.get('content-length')).toBe(String(size));
    expect(head.headers.get('docker-content-digest')).toBe(blob.descriptor.digest);
    // The access log (and the bytes metric, from the same hook) counts bodies sent, not headers.
    const logged = (access as unknown as { path: string; method: string; status: number; bytes: number }[]).filter((l) => l.path === path);
    expect(logged.find((l) => l.method === 'HEAD')?.bytes).toBe(0);
    expect(logged.find((l) => l.method === 'GET' && l.status === 206)?.bytes).toBe(10);
    expect(logged.find((l) => l.method === 'GET' && l.status === 416)?.bytes).toBeGreaterThan(0); // the error body
  });

  it('serves a blob larger than a Buffer can hold (streamed from the file)', async () => {
    // A sparse file of 4 GiB + 100 bytes placed in the store: zeros, then a marker at the very end.
    const digest = `sha256:${'c'.repeat(64)}` as const;
    const file = join(storeRoot, 'blobs/sha256', 'c'.repeat(64));
    const size = 2 ** 32 + 100;
    const fh = await open(file, 'w');
    await fh.write(Buffer.from('the end'), 0, 7, size - 7);
    await fh.close();
    const db = new IndexDb(storeRoot);
    db.record({ blobLinks: [{ repo: `${upstream}/${fx.web.repository}`, digest }] });
    db.close();
    try {
      const path = `/v2/${fx.web.repository}/blobs/${digest}`;
      const head = await get(path, {}, 'HEAD');
      expect(head.headers.get('content-length')).toBe(String(size));
      const tail = await get(path, { range: 'bytes=-10' });
      expect(tail.status).toBe(206);
      expect(Buffer.from(await tail.arrayBuffer()).toString('latin1')).toBe('\0\0\0the end');
    } finally {
      await rm(file);
    }
  });

  it('answers errors in the spec format', async () => {
    const cases: [string, number, string][] = [
      [`/v2/${fx.web.repository}/manifests/nope`, 404, 'MANIFEST_UNKNOWN'],
      [`/v2/no/such/manifests/1`, 404, 'NAME_UNKNOWN'],
      [`/v2/UPPER/manifests/1`, 400, 'NAME_INVALID'],
      [`/v2/${fx.web.repository}/blobs/sha256:123`, 400, 'DIGEST_INVALID'],
      [`/v2/${fx.web.repository}/blobs/sha256:${'0'.repeat(64)}`, 404, 'BLOB_UNKNOWN'],
    ];
    for (const [path, status, code] of cases) {
      const res = await get(path);
      expect(res.status, path).toBe(status);
      expect((await res.json()).errors[0].code, path).toBe(code);
    }
  });

  it('negotiates on Accept: a client that takes no index is told to pick one of the bundled platforms', async () => {
    const path = `/v2/${upstream.replace(':', '_')}/${fx.web.repository}/manifests/${fx.web.tag}`;
    const any = await get(path, { accept: '*/*' });
    expect(any.headers.get('docker-content-digest')).toBe(fx.web.top.digest);
    const old = await get(path, { accept: 'application/vnd.docker.distribution.manifest.v2+json' });
    expect(old.status).toBe(404);
    const { message } = (await old.json()).errors[0];
    for (const child of fx.web.manifests) expect(message).toContain(child.digest);
  });

  it('lists tags and the catalog with pagination', async () => {
    const tags = await (await get(`/v2/acpack.local/binaries/tool/tags/list`)).json();
    expect(tags).toEqual({ name: 'acpack.local/binaries/tool', tags: ['v1'] });
    const first = await get('/v2/_catalog?n=2');
    expect((await first.json()).repositories).toHaveLength(2);
    const link = first.headers.get('link')!;
    expect(link).toMatch(/rel="next"/);
    const next = await (await get(link.slice(1, link.indexOf('>')))).json();
    expect(next.repositories).toHaveLength(2);
  });
});

describe('under load and abuse', () => {
  it('serves 200 concurrent pulls of mixed blobs and manifests with zero errors', async () => {
    const prefix = `/v2/${upstream.replace(':', '_')}`;
    const targets: { path: string; digest: string }[] = [
      ...fx.web.blobs.map((b) => ({ path: `${prefix}/${fx.web.repository}/blobs/${b.descriptor.digest}`, digest: b.descriptor.digest })),
      ...fx.db.blobs.map((b) => ({ path: `${prefix}/${fx.db.repository}/blobs/${b.descriptor.digest}`, digest: b.descriptor.digest })),
      { path: `${prefix}/${big.repository}/blobs/${bigLayer.descriptor.digest}`, digest: bigLayer.descriptor.digest },
      { path: `${prefix}/${fx.web.repository}/manifests/${fx.web.tag}`, digest: fx.web.top.digest },
    ];
    const results = await Promise.all(
      Array.from({ length: 200 }, async (_, i) => {
        const t = targets[i % targets.length];
        const res = await fetch(`${reg.url}${t.path}`, { headers: { accept: 'application/vnd.oci.image.index.v1+json' } });
        const body = Buffer.from(await res.arrayBuffer());
        return res.status === 200 && `sha256:${createHash('sha256').update(body).digest('hex')}` === t.digest;
      }),
    );
    expect(results.filter((ok) => !ok)).toHaveLength(0);
  });

  it('stays up when a client disconnects mid-blob', async () => {
    const path = `/v2/${big.repository}/blobs/${bigLayer.descriptor.digest}`;
    for (let i = 0; i < 5; i++) {
      await new Promise<void>((resolve, reject) => {
        const [host, port] = [reg.host.split(':')[0], Number(reg.host.split(':')[1])];
        const sock = connect(port, host, () => sock.write(`GET ${path} HTTP/1.1\r\nHost: ${reg.host}\r\n\r\n`));
        let got = 0;
        sock.on('data', (c) => {
          got += c.length;
          if (got > 64 * 1024) {
            sock.destroy();
            resolve();
          }
        });
        sock.on('error', reject);
      });
    }
    const res = await fetch(`${reg.url}${path}`);
    const body = Buffer.from(await res.arrayBuffer());
    expect(body.equals(bigLayer.data)).toBe(true);
  });

  it('answers absurd requests with 4xx and keeps serving', async () => {
    const absurd = await fetch(`${reg.url}/v2/${fx.web.repository}/blobs/uploads/`, { method: 'POST' });
    expect(absurd.status).toBeGreaterThanOrEqual(400);
    expect(absurd.status).toBeLessThan(500);
    const range = await fetch(`${reg.url}/v2/${fx.web.repository}/blobs/${fx.base.descriptor.digest}`, { headers: { range: 'bytes=99999999999-1' } });
    expect(range.status).toBe(416);
    const garbage = await fetch(`${reg.url}/v2/${'a/'.repeat(200)}x/manifests/1`);
    expect(garbage.status).toBe(400);
    expect((await fetch(`${reg.url}/v2/`)).status).toBe(200);
  });
});
