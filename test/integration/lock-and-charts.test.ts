import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdir, readFile, writeFile, cp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { stringify, parse } from 'yaml';
import { bundle, lock } from '../../packer/index.js';
import { parsePlatformList } from '../../arch/platform.js';
import { sha256 } from '../../oci/digest.js';
import { MT } from '../../oci/media-types.js';
import { bundleEntries, readDescriptor } from '../../oci/bundle-reader.js';
import { verifyBundle } from '../../oci/bundle-verify.js';
import { packageChart } from '../../packer/chart-package.js';
import { buildIndexImage, buildLayer, pushHelmChart, pushImage } from '../../demo/samples.js';
import { runCli, ROOT, silent, tempDir, withRegistry } from '../helpers/env.js';
import { serveFiles, type FileServer } from '../helpers/http-files.js';
import { buildFixture, imageRef, pushFixture, writeManifest, type Fixture } from '../helpers/fixtures.js';

let env: Awaited<ReturnType<typeof withRegistry>>;
let fx: Fixture;
let work: Awaited<ReturnType<typeof tempDir>>;
let files: FileServer;
let host: string;
let chartTgz: Buffer;

beforeAll(async () => {
  env = await withRegistry();
  host = env.registry.host;
  fx = await buildFixture('lock');
  await pushFixture(host, fx);
  work = await tempDir();
  // An HTTP server with per-arch binaries and a Helm repo (index.yaml + chart .tgz).
  const www = join(work.dir, 'www');
  await mkdir(join(www, 'bin/amd64'), { recursive: true });
  await mkdir(join(www, 'bin/arm64'), { recursive: true });
  await writeFile(join(www, 'bin/amd64/kubeadm'), 'kubeadm for amd64\n');
  await writeFile(join(www, 'bin/arm64/kubeadm'), 'kubeadm for arm64\n');
  await cp(join(ROOT, 'manifests/demo/charts/hello'), join(work.dir, 'hello'), { recursive: true });
  chartTgz = (await packageChart(join(work.dir, 'hello'), 0)).tgz;
  await mkdir(join(www, 'charts'), { recursive: true });
  await writeFile(join(www, 'charts/hello-0.1.0.tgz'), chartTgz);
  await writeFile(
    join(www, 'charts/index.yaml'),
    stringify({
      apiVersion: 'v1',
      entries: { hello: [{ apiVersion: 'v2', name: 'hello', version: '0.1.0', appVersion: 'v0.8.8', urls: ['hello-0.1.0.tgz'], digest: sha256(chartTgz).slice(7), created: '2024-01-01T00:00:00Z' }] },
    }),
  );
  files = await serveFiles(www);
});

afterAll(async () => {
  await files?.close();
  await env?.cleanup();
  await work?.cleanup();
});

// The manifest below carries a kubeadm (a per-arch file, to test pinning) and nothing else of a
// cluster: these tests are about the lock, so they bundle it with --allow-incomplete.
function spec(extra: Record<string, unknown> = {}) {
  return {
    images: [imageRef(host, fx.web)],
    binaries: [{ name: 'kubeadm', version: 'v1.22.15', url: `${files.url}/bin/{arch}/kubeadm`, install: '/usr/bin/kubeadm' }],
    charts: [{ name: 'hello', version: '0.1.0', repo: `${files.url}/charts` }],
    ...extra,
  };
}

describe('acpack lock and --locked', () => {
  it('pins tags, binaries and charts; --locked builds a whole cache without asking upstream, and refuses a moved tag it must fetch, naming it', async () => {
    const dir = join(work.dir, 'locked');
    const m = await writeManifest(dir, spec());
    const cache = join(dir, 'cache');
    const { path, lock: l } = await lock({ manifestFile: m, platforms: parsePlatformList('amd64,arm64'), cacheDir: cache, reporter: silent, sourceDateEpoch: 0 });
    expect(path).toBe(`${m}.lock`);
    const onDisk = parse(await readFile(path, 'utf8'));
    expect(onDisk.images[imageRef(host, fx.web)]).toBe(fx.web.top.digest);
    expect(onDisk.binaries.kubeadm.arm64).toEqual({ url: `${files.url}/bin/arm64/kubeadm`, sha256: sha256('kubeadm for arm64\n').slice(7) });
    expect(l.charts['hello@0.1.0']).toBe(sha256(chartTgz));

    // Unpinned in the manifest, the binary is pinned by the lock: bundling works.
    const out = join(dir, 'a.tar.zst');
    const res = await runCli(['bundle', '-f', m, '--arch', 'amd64,arm64', '--cache', cache, '-o', out, '--locked', '--allow-incomplete']);
    expect(res.code, res.stderr).toBe(0);
    const d = await readDescriptor(out);
    expect(d.binaries.map((b) => `${b.name}/${b.arch}/${b.digest}`)).toEqual([
      `kubeadm/amd64/${sha256('kubeadm for amd64\n')}`,
      `kubeadm/arm64/${sha256('kubeadm for arm64\n')}`,
    ]);

    // Re-tag web:1.0 to new content upstream. With everything in the cache, --locked builds what the
    // lock pins without asking upstream, and says so; what it must fetch, it checks: it names what moved.
    const moved = buildIndexImage(fx.web.repository, fx.web.tag, { amd64: [await buildLayer([{ path: 'x', content: 'new' }])], arm64: [await buildLayer([{ path: 'x', content: 'new arm' }])] });
    await pushImage(host, moved);
    const cached = await runCli(['bundle', '-f', m, '--arch', 'amd64,arm64', '--cache', cache, '-o', join(dir, 'b0.tar.zst'), '--locked', '--allow-incomplete']);
    expect(cached.code, cached.stderr).toBe(0);
    expect(cached.stderr).toContain('3 from cache, upstream not checked (1 image, 1 binary, 1 chart, as m.yaml.lock pins them');
    expect((await readDescriptor(join(dir, 'b0.tar.zst'))).images[0].digest).toBe(fx.web.top.digest);
    const drift = await runCli(['bundle', '-f', m, '--arch', 'amd64,arm64', '--cache', join(dir, 'fresh-cache'), '-o', join(dir, 'b.tar.zst'), '--locked', '--allow-incomplete']);
    expect(drift.code).toBe(1);
    expect(drift.stderr).toContain(`${imageRef(host, fx.web)}: moved from ${fx.web.top.digest} to ${moved.top.digest}`);

    // Without --locked the lock still pins: the bundle holds the locked content, not the new tag.
    const pinned = await bundle({ manifestFile: m, platforms: parsePlatformList('amd64'), cacheDir: cache, reporter: silent, sourceDateEpoch: 0, out: join(dir, 'c.tar.zst'), allowIncomplete: true });
    expect(pinned.images).toBe(1);
    expect((await readDescriptor(join(dir, 'c.tar.zst'))).images[0].digest).toBe(fx.web.top.digest);
    await pushImage(host, fx.web); // restore for other tests
  });

  it('--locked refuses a changed binary upstream', async () => {
    const dir = join(work.dir, 'bin-drift');
    await mkdir(join(dir, 'files'), { recursive: true });
    await writeFile(join(dir, 'files/tool-amd64'), 'v1');
    const m = await writeManifest(dir, { binaries: [{ name: 'tool', version: 'v1', url: 'files/tool-{arch}', install: '/usr/bin/tool' }] });
    await lock({ manifestFile: m, platforms: parsePlatformList('amd64'), cacheDir: join(dir, 'cache'), reporter: silent, sourceDateEpoch: 0 });
    await writeFile(join(dir, 'files/tool-amd64'), 'v2');
    const res = await runCli(['bundle', '-f', m, '--arch', 'amd64', '--cache', join(dir, 'cache2'), '-o', join(dir, 'o.tar.zst'), '--locked']);
    expect(res.code).toBe(1);
    expect(res.stderr).toMatch(/binary tool v1 for amd64: .*does not match its pinned sha256/);
  });
});

describe('a locked project moved elsewhere', () => {
  it('keeps a local binary\'s url as written in the lock, so a copy of the project still bundles --locked', async () => {
    const dir = join(work.dir, 'project');
    await mkdir(join(dir, 'files'), { recursive: true });
    await writeFile(join(dir, 'files/tool-amd64'), 'tool v1');
    const m = await writeManifest(dir, { binaries: [{ name: 'tool', version: 'v1', url: 'files/tool-{arch}', install: '/usr/bin/tool' }] });
    await lock({ manifestFile: m, platforms: parsePlatformList('amd64'), cacheDir: join(dir, 'cache'), reporter: silent, sourceDateEpoch: 0 });
    expect(parse(await readFile(`${m}.lock`, 'utf8')).binaries.tool.amd64.url).toBe('files/tool-amd64');
    const moved = join(work.dir, 'project-clone');
    await cp(dir, moved, { recursive: true });
    await rm(dir, { recursive: true });
    const res = await runCli(['bundle', '-f', join(moved, 'm.yaml'), '--arch', 'amd64', '--cache', join(moved, 'cache2'), '-o', join(moved, 'o.tar.zst'), '--locked']);
    expect(res.code, res.stderr).toBe(0);
    expect((await readDescriptor(join(moved, 'o.tar.zst'))).binaries[0].digest).toBe(sha256('tool v1'));
  });
});

describe('charts', () => {
  it('bundles a repo chart, an OCI chart and a local chart with Helm media types', async () => {
    // An OCI chart, pushed the way helm push stores one.
    const ociTgz = (await packageChart(join(work.dir, 'hello'), 1)).tgz;
    const ociManifest = await pushHelmChart(host, 'charts/hello', '0.2.0', ociTgz, { name: 'hello', version: '0.2.0' });

    const dir = join(work.dir, 'charts');
    await cp(join(work.dir, 'hello'), join(dir, 'local-chart'), { recursive: true });
    await writeFile(join(dir, 'local-chart/Chart.yaml'), 'apiVersion: v2\nname: local\nversion: 1.2.3\n');
    await writeFile(join(dir, 'local-chart/.helmignore'), '*.bak\n');
    await writeFile(join(dir, 'local-chart/notes.bak'), 'ignored');
    const m = await writeManifest(dir, {
      charts: [
        { name: 'hello', version: '0.1.0', repo: `${files.url}/charts` },
        { name: 'hello', version: '0.2.0', oci: `oci://${host}/charts/hello` },
        { path: 'local-chart' },
      ],
    });
    const out = join(dir, 'o.tar.zst');
    await bundle({ manifestFile: m, platforms: parsePlatformList('amd64'), cacheDir: join(dir, 'cache'), reporter: silent, sourceDateEpoch: 0, out });
    const d = await readDescriptor(out);
    expect(d.charts.map((c) => `${c.name}:${c.version}:${c.ref}`)).toEqual([
      'hello:0.1.0:acpack.local/charts/hello:0.1.0',
      'hello:0.2.0:acpack.local/charts/hello:0.2.0',
      'local:1.2.3:acpack.local/charts/local:1.2.3',
    ]);
    expect(d.charts[0].chart).toBe(sha256(chartTgz));
    expect(d.charts[1].digest).toBe(ociManifest);

    const blobs = new Map<string, Buffer>();
    for await (const e of bundleEntries(out)) {
      if (e.kind !== 'blob') continue;
      const chunks: Buffer[] = [];
      for await (const c of e.chunks) chunks.push(Buffer.from(c));
      blobs.set(e.digest, Buffer.concat(chunks));
    }
    for (const c of d.charts) {
      const manifest = JSON.parse(blobs.get(c.digest)!.toString());
      expect(manifest.config.mediaType).toBe(MT.helmConfig);
      expect(manifest.layers[0].mediaType).toBe(MT.helmChart);
      expect(blobs.has(manifest.layers[0].digest)).toBe(true);
    }
    // The local chart is packaged without the ignored file, under <name>/.
    const localTgz = blobs.get(JSON.parse(blobs.get(d.charts[2].digest)!.toString()).layers[0].digest)!;
    const names: string[] = [];
    const tar = (await import('tar-stream')).default.extract();
    const { Readable } = await import('node:stream');
    const { createGunzip } = await import('node:zlib');
    Readable.from([localTgz]).pipe(createGunzip()).pipe(tar);
    for await (const entry of tar) {
      names.push(entry.header.name);
      entry.resume();
    }
    expect(names.sort()).toEqual(['local/.helmignore', 'local/Chart.yaml', 'local/templates/deployment.yaml', 'local/values.yaml']);
    await verifyBundle(out);
  });

  it('names a chart version missing from the repo', async () => {
    const dir = join(work.dir, 'nochart');
    const m = await writeManifest(dir, { charts: [{ name: 'hello', version: '9.9.9', repo: `${files.url}/charts` }] });
    await expect(bundle({ manifestFile: m, platforms: parsePlatformList('amd64'), cacheDir: join(dir, 'cache'), reporter: silent, sourceDateEpoch: 0, out: join(dir, 'o') })).rejects.toThrow(
      /chart hello 9\.9\.9 .* is not in .*index\.yaml \(it has 0\.1\.0\)/,
    );
  });
});
