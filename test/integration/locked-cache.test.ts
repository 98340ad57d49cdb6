import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer as createTcpServer, connect, type Server, type Socket } from 'node:net';
import { cp, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { sha256 } from '../../oci/digest.js';
import { pushHelmChart } from '../../demo/samples.js';
import { readDescriptor } from '../../oci/bundle-reader.js';
import { packageChart } from '../../packer/chart-package.js';
import { freePort } from '../../demo/source-registry.js';
import { ROOT, runCli, tempDir, withRegistry } from '../helpers/env.js';
import { serveFiles, type FileServer } from '../helpers/http-files.js';
import { buildFixture, imageRef, pushFixture, writeManifest, type Fixture } from '../helpers/fixtures.js';

/**
 * What `acpack bundle --locked` asks upstream when the cache holds everything (nothing: the
 * connections reaching the registry and the file server are counted by TCP proxies in front of them),
 * and what a run without --locked says when a cached file's URL has gone dead.
 */

/** A TCP proxy on 127.0.0.1 that counts the connections it passes to `target`. */
interface CountingProxy {
  host: string;
  connections: number;
  close(): Promise<void>;
}

async function countingProxy(target: string): Promise<CountingProxy> {
  const [targetHost, targetPort] = target.split(':');
  const sockets = new Set<Socket>();
  const proxy: CountingProxy = { host: '', connections: 0, close: async () => {} };
  const server: Server = createTcpServer((client) => {
    proxy.connections++;
    const upstream = connect(Number(targetPort), targetHost);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => {
        client.destroy();
        upstream.destroy();
        sockets.delete(s);
      });
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  proxy.host = `127.0.0.1:${(server.address() as { port: number }).port}`;
  proxy.close = () =>
    new Promise((r) => {
      for (const s of sockets) s.destroy();
      server.close(() => r());
    });
  return proxy;
}

let env: Awaited<ReturnType<typeof withRegistry>>;
let fx: Fixture;
let work: Awaited<ReturnType<typeof tempDir>>;
let files: FileServer;
let registryProxy: CountingProxy;
let filesProxy: CountingProxy;
let www: string;

beforeAll(async () => {
  env = await withRegistry();
  fx = await buildFixture('locked-cache');
  await pushFixture(env.registry.host, fx);
  work = await tempDir();
  www = join(work.dir, 'www');
  await mkdir(join(www, 'bin/amd64'), { recursive: true });
  await writeFile(join(www, 'bin/amd64/tool'), 'tool for amd64\n');
  const tgz = (await packageChart(join(ROOT, 'manifests/demo/charts/hello'), 0)).tgz;
  await mkdir(join(www, 'charts'), { recursive: true });
  await writeFile(join(www, 'charts/hello-0.1.0.tgz'), tgz);
  await writeFile(
    join(www, 'charts/index.yaml'),
    stringify({ apiVersion: 'v1', entries: { hello: [{ apiVersion: 'v2', name: 'hello', version: '0.1.0', urls: ['hello-0.1.0.tgz'], digest: sha256(tgz).slice(7) }] } }),
  );
  // An OCI chart, pushed the way helm push stores one.
  await pushHelmChart(env.registry.host, 'charts/oci-hello', '0.2.0', tgz, { name: 'oci-hello', version: '0.2.0' });
  files = await serveFiles(www);
  registryProxy = await countingProxy(env.registry.host);
  filesProxy = await countingProxy(new URL(files.url).host);
});

afterAll(async () => {
  await registryProxy?.close();
  await filesProxy?.close();
  await files?.close();
  await env?.cleanup();
  await work?.cleanup();
});

function bundleArgs(m: string, cache: string, out: string, ...extra: string[]) {
  return ['bundle', '-f', m, '--arch', 'amd64', '--cache', cache, '-o', out, ...extra];
}

describe('acpack bundle --locked with everything in the cache', () => {
  it('makes no network request, says "N from cache, upstream not checked", and writes the same bundle', async () => {
    const dir = join(work.dir, 'all-cached');
    // A local chart too: it has no upstream, so it is packaged again and not counted.
    await cp(join(ROOT, 'manifests/demo/charts/hello'), join(dir, 'local-chart'), { recursive: true });
    await writeFile(join(dir, 'local-chart/Chart.yaml'), 'apiVersion: v2\nname: local\nversion: 1.2.3\n');
    const m = await writeManifest(dir, {
      images: [imageRef(registryProxy.host, fx.web)],
      binaries: [{ name: 'tool', version: 'v1', url: `http://${filesProxy.host}/bin/{arch}/tool`, install: '/usr/bin/tool' }],
      charts: [
        { name: 'hello', version: '0.1.0', repo: `http://${filesProxy.host}/charts` },
        { name: 'oci-hello', version: '0.2.0', oci: `oci://${registryProxy.host}/charts/oci-hello` },
        { path: 'local-chart' },
      ],
    });
    const cache = join(dir, 'cache');
    const locked = await runCli(['lock', '-f', m, '--arch', 'amd64', '--cache', cache]);
    expect(locked.code, locked.stderr).toBe(0);
    const first = await runCli(bundleArgs(m, cache, join(dir, 'first.tar.zst'), '--locked'));
    expect(first.code, first.stderr).toBe(0);
    expect(registryProxy.connections).toBeGreaterThan(0); // the layers came from upstream

    registryProxy.connections = 0;
    filesProxy.connections = 0;
    const second = await runCli(bundleArgs(m, cache, join(dir, 'second.tar.zst'), '--locked'));
    expect(second.code, second.stderr).toBe(0);
    expect(registryProxy.connections).toBe(0);
    expect(filesProxy.connections).toBe(0);
    expect(second.stderr).toContain('4 from cache, upstream not checked (1 image, 1 binary, 2 charts, as m.yaml.lock pins them');
    expect(second.stderr).not.toContain('warning');
    // Built from the cache alone, the bundle is the one built from upstream, byte for byte.
    expect(sha256(await readFile(join(dir, 'second.tar.zst')))).toBe(sha256(await readFile(join(dir, 'first.tar.zst'))));

    // --json says it as an event a script can read.
    const json = await runCli(bundleArgs(m, cache, join(dir, 'third.tar.zst'), '--locked', '--json'));
    expect(json.code, json.stderr).toBe(0);
    const events = json.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(events).toContainEqual(expect.objectContaining({ event: 'info', fromCache: 4, upstreamChecked: false }));
    expect(registryProxy.connections + filesProxy.connections).toBe(0);

    // Only what the cache lacks goes upstream: with the binary's file gone from the cache, only the file server is asked.
    await rm(join(cache, 'blobs/sha256', sha256('tool for amd64\n').slice(7)));
    const partial = await runCli(bundleArgs(m, cache, join(dir, 'fourth.tar.zst'), '--locked'));
    expect(partial.code, partial.stderr).toBe(0);
    expect(partial.stderr).toContain('3 from cache, upstream not checked (1 image, 0 binaries, 2 charts');
    expect(registryProxy.connections).toBe(0);
    expect(filesProxy.connections).toBeGreaterThan(0);
  });
});

describe('acpack bundle without --locked, when a cached file\'s URL no longer serves it', () => {
  const content = 'pinned tool\n';
  const pin = sha256(content).slice(7);

  async function bundleTool(name: string, url: string) {
    const dir = join(work.dir, name);
    const m = await writeManifest(dir, { binaries: [{ name: 'tool', version: 'v1', url, sha256: pin, install: '/usr/bin/tool' }] });
    return runCli(bundleArgs(m, join(work.dir, 'shared-cache'), join(dir, 'o.tar.zst')));
  }

  it('warns naming the URL and that the cached copy was used: a 404, a host that does not answer, a file that changed', async () => {
    await writeFile(join(www, 'bin/amd64/pinned'), content);
    const url = `${files.url}/bin/amd64/pinned`;
    const live = await bundleTool('live', url);
    expect(live.code, live.stderr).toBe(0);
    expect(live.stderr).not.toContain('warning');

    await rename(join(www, 'bin/amd64/pinned'), join(www, 'bin/amd64/pinned.moved'));
    const gone = await bundleTool('gone', url);
    expect(gone.code, gone.stderr).toBe(0);
    expect(gone.stderr).toContain(
      `warning: binary tool v1 for amd64: ${url} answered HTTP 404 Not Found; used the cached copy sha256:${pin.slice(0, 12)}`,
    );
    expect(gone.stderr).toContain('a build without this cache (another machine, a CI runner) would fail here');

    const deadUrl = `http://127.0.0.1:${await freePort()}/tool`;
    const dead = await bundleTool('dead', deadUrl);
    expect(dead.code, dead.stderr).toBe(0);
    expect(dead.stderr).toContain(`warning: binary tool v1 for amd64: ${deadUrl} did not answer (ECONNREFUSED`);

    await writeFile(join(www, 'bin/amd64/pinned'), 'another tool, longer\n');
    const changed = await bundleTool('changed', url);
    expect(changed.code, changed.stderr).toBe(0);
    expect(changed.stderr).toContain(`${url} now serves 21 bytes, not the ${content.length} of the pinned file: it changed upstream; used the cached copy`);
    expect((await readDescriptor(join(work.dir, 'changed/o.tar.zst'))).binaries[0].digest).toBe(`sha256:${pin}`);
  });
});
