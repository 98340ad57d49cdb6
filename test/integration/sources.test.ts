import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createServer, type Server } from 'node:http';
import { execFileSync } from 'node:child_process';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import bcrypt from 'bcryptjs';
import { bundle } from '../../packer/index.js';
import { parsePlatformList } from '../../arch/platform.js';
import { readDescriptor } from '../../oci/bundle-reader.js';
import { DOCKER_REGISTRY_BIN, freePort } from '../../demo/source-registry.js';
import { pushImage } from '../../demo/samples.js';
import { spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { silent, tempDir, withRegistry } from '../helpers/env.js';
import { buildFixture, imageRef, pushFixture, writeManifest, type Fixture } from '../helpers/fixtures.js';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.js';

let env: Awaited<ReturnType<typeof withRegistry>>;
let fx: Fixture;
let work: Awaited<ReturnType<typeof tempDir>>;
let proxy: FaultProxy;

beforeAll(async () => {
  env = await withRegistry();
  fx = await buildFixture('sources');
  await pushFixture(env.registry.host, fx);
  work = await tempDir();
  proxy = await startFaultProxy(env.registry.host);
});

afterAll(async () => {
  await proxy?.close();
  await env?.cleanup();
  await work?.cleanup();
});

beforeEach(() => {
  proxy.intercept = [];
  proxy.log.length = 0;
});

let n = 0;
async function packVia(host: string, image = fx.web, extraEnv?: Record<string, string>) {
  const dir = join(work.dir, `run-${n++}`);
  const m = await writeManifest(dir, { images: [`${host}/${image.repository}:${image.tag}`] });
  const out = join(dir, 'o.tar.zst');
  const saved = { ...process.env };
  Object.assign(process.env, extraEnv);
  try {
    await bundle({ manifestFile: m, platforms: parsePlatformList('amd64'), cacheDir: join(dir, 'cache'), reporter: silent, sourceDateEpoch: 0, out });
  } finally {
    process.env = saved;
  }
  return { out, dir };
}

describe('registry sources that push back', () => {
  it('waits out 429 with Retry-After and retries 503, then succeeds', async () => {
    let limited = 0;
    let failed = 0;
    proxy.intercept.push((req, res) => {
      if (req.url!.includes('/manifests/') && limited < 1) {
        limited++;
        res.writeHead(429, { 'retry-after': '1' }).end('slow down');
        return true;
      }
      if (req.url!.includes('/blobs/') && failed < 2) {
        failed++;
        res.writeHead(503).end('busy');
        return true;
      }
      return false;
    });
    const t0 = Date.now();
    const { out } = await packVia(proxy.host);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1000);
    expect(limited).toBe(1);
    expect(failed).toBe(2);
    expect((await readDescriptor(out)).images[0].digest).toBe(fx.web.top.digest);
  });

  it('gives up after a bounded number of attempts on a source that keeps failing', async () => {
    proxy.intercept.push((req, res) => {
      if (!req.url!.includes('/manifests/')) return false;
      res.writeHead(503).end('down');
      return true;
    });
    await expect(packVia(proxy.host)).rejects.toThrow(/HTTP 503/);
    expect(proxy.log.filter((l) => l.url.includes('/manifests/')).length).toBe(5);
  });

  it('follows a 307 for a blob to another host without sending it the token', async () => {
    let storageAuth: (string | undefined)[] = [];
    const storage: Server = createServer(async (req, res) => {
      storageAuth.push(req.headers.authorization);
      const up = await fetch(`http://${env.registry.host}${req.url}`);
      res.writeHead(up.status).end(Buffer.from(await up.arrayBuffer()));
    });
    await new Promise<void>((r) => storage.listen(0, '127.0.0.1', r));
    const storageHost = `127.0.0.1:${(storage.address() as { port: number }).port}`;
    // Bearer-token auth at the proxy: 401 + challenge, a token endpoint that checks basic credentials.
    proxy.intercept.push((req, res) => {
      if (req.url!.startsWith('/token')) {
        const ok = req.headers.authorization === `Basic ${Buffer.from('alice:s3cret').toString('base64')}`;
        const scope = new URL(req.url!, 'http://x').searchParams.get('scope');
        res.writeHead(ok ? 200 : 401, { 'content-type': 'application/json' }).end(ok ? JSON.stringify({ token: `tok-${scope}` }) : '{}');
        return true;
      }
      if (req.url === '/v2/') return false;
      if (!req.headers.authorization?.startsWith('Bearer tok-repository:library/web:pull')) {
        res.writeHead(401, { 'www-authenticate': `Bearer realm="http://${proxy.host}/token",service="test",scope="repository:library/web:pull"` }).end();
        return true;
      }
      if (req.url!.includes('/blobs/sha256:')) {
        res.writeHead(307, { location: `http://${storageHost}${req.url}` }).end();
        return true;
      }
      return false;
    });
    const auth = join(work.dir, 'auth.json');
    await writeFile(auth, JSON.stringify({ auths: { [proxy.host]: { auth: Buffer.from('alice:s3cret').toString('base64') } } }));
    try {
      const { out } = await packVia(proxy.host, fx.web, { REGISTRY_AUTH_FILE: auth });
      expect((await readDescriptor(out)).images[0].digest).toBe(fx.web.top.digest);
    } finally {
      storage.closeAllConnections();
      storage.close();
    }
    expect(storageAuth.length).toBeGreaterThan(0);
    expect(storageAuth.every((a) => a === undefined)).toBe(true);
    expect(proxy.log.some((l) => l.authorization?.startsWith('Bearer tok-'))).toBe(true);
  });

  it('says which credentials are missing when a token is refused', async () => {
    proxy.intercept.push((req, res) => {
      if (req.url!.startsWith('/token')) {
        res.writeHead(401).end();
        return true;
      }
      if (req.url === '/v2/') return false;
      res.writeHead(401, { 'www-authenticate': `Bearer realm="http://${proxy.host}/token",service="test"` }).end();
      return true;
    });
    await expect(packVia(proxy.host, fx.web, { REGISTRY_AUTH_FILE: join(work.dir, 'none.json') })).rejects.toThrow(/refused a token for repository:library\/web:pull/);
  });

  it('refuses a Docker schema 1 image with a clear message', async () => {
    proxy.intercept.push((req, res) => {
      if (!req.url!.endsWith('/manifests/old')) return false;
      res.writeHead(200, { 'content-type': 'application/vnd.docker.distribution.manifest.v1+prettyjws' }).end(JSON.stringify({ schemaVersion: 1, name: 'library/web', tag: 'old', fsLayers: [] }));
      return true;
    });
    await expect(packVia(proxy.host, { ...fx.web, tag: 'old' })).rejects.toMatchObject({ code: 'SCHEMA1', message: expect.stringContaining('schema 1') });
  });
});

describe('fetching', () => {
  it('fetches a base layer shared by images and arches once, however many ask for it at once', async () => {
    const dir = join(work.dir, 'once');
    const m = await writeManifest(dir, { images: [`${proxy.host}/library/web:1.0`, `${proxy.host}/tools/db:2.0`] });
    await bundle({ manifestFile: m, platforms: parsePlatformList('amd64,arm64'), cacheDir: join(dir, 'cache'), reporter: silent, sourceDateEpoch: 0, out: join(dir, 'o.tar.zst') });
    const gets = proxy.log.filter((l) => l.method === 'GET' && l.url.endsWith(`/blobs/${fx.base.descriptor.digest}`));
    expect(gets).toHaveLength(1);
  });

  it('refuses an output directory that does not exist before fetching anything', async () => {
    const dir = join(work.dir, 'noout');
    const m = await writeManifest(dir, { images: [`${proxy.host}/library/web:1.0`] });
    await expect(
      bundle({ manifestFile: m, platforms: parsePlatformList('amd64'), cacheDir: join(dir, 'cache'), reporter: silent, sourceDateEpoch: 0, out: join(dir, 'missing/o.tar.zst') }),
    ).rejects.toThrow(/output directory .*missing does not exist/);
    expect(proxy.log).toEqual([]);
  });
});

describe('basic auth against a real docker-registry with htpasswd', () => {
  it('uses credentials from the docker config, and names the host when they are wrong', async () => {
    const t = await tempDir();
    await writeFile(join(t.dir, 'htpasswd'), `bob:${bcrypt.hashSync('hunter2', 10)}\n`);
    const port = await freePort();
    const host = `127.0.0.1:${port}`;
    await writeFile(
      join(t.dir, 'config.yml'),
      `version: 0.1\nlog: {level: error, accesslog: {disabled: true}}\nstorage: {filesystem: {rootdirectory: ${join(t.dir, 'data')}}}\nauth: {htpasswd: {realm: test, path: ${join(t.dir, 'htpasswd')}}}\nhttp: {addr: '${host}'}\n`,
    );
    const child = spawn(DOCKER_REGISTRY_BIN, ['serve', join(t.dir, 'config.yml')], { stdio: 'ignore' });
    try {
      for (let i = 0; i < 100 && (await fetch(`http://${host}/v2/`).then((r) => r.status, () => 0)) !== 401; i++) await sleep(100);
      // Push with credentials, the way docker would.
      const basic = `Basic ${Buffer.from('bob:hunter2').toString('base64')}`;
      const realFetch = globalThis.fetch;
      globalThis.fetch = ((url: string | URL | Request, init: RequestInit = {}) => realFetch(url, { ...init, headers: { ...(init.headers as object), authorization: basic } })) as typeof fetch;
      try {
        await pushImage(host, fx.db);
      } finally {
        globalThis.fetch = realFetch;
      }
      const dockerConfig = join(t.dir, 'docker');
      await mkdir(dockerConfig);
      await writeFile(join(dockerConfig, 'config.json'), JSON.stringify({ auths: { [`http://${host}`]: { auth: Buffer.from('bob:hunter2').toString('base64') } } }));
      const { out } = await packVia(host, fx.db, { DOCKER_CONFIG: dockerConfig });
      expect((await readDescriptor(out)).images[0].digest).toBe(fx.db.top.digest);

      await writeFile(join(dockerConfig, 'config.json'), JSON.stringify({ auths: { [host]: { auth: Buffer.from('bob:wrong').toString('base64') } } }));
      await expect(packVia(host, fx.db, { DOCKER_CONFIG: dockerConfig })).rejects.toThrow(new RegExp(`${host} refused the credentials`));
    } finally {
      child.kill('SIGKILL');
      await t.cleanup();
    }
  });
});

describe('a full disk', () => {
  it('fails with DISK_FULL and leaves no partial bundle', async () => {
    const mnt = join(work.dir, 'tiny');
    await mkdir(mnt);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', mnt]);
    try {
      const dir = join(work.dir, 'full');
      const m = await writeManifest(dir, { images: [imageRef(env.registry.host, fx.web)] });
      const out = join(mnt, 'o.tar.zst');
      await expect(
        bundle({ manifestFile: m, platforms: parsePlatformList('amd64,arm64'), cacheDir: join(dir, 'cache'), reporter: silent, sourceDateEpoch: 0, out }),
      ).rejects.toMatchObject({ code: 'DISK_FULL' });
      expect(await readdir(mnt)).toEqual([]);
      // The cache on another disk kept what it verified: the next run only writes the bundle.
      expect(existsSync(join(dir, 'cache/blobs/sha256', fx.base.descriptor.digest.slice(7)))).toBe(true);
    } finally {
      execFileSync('umount', [mnt]);
    }
  });
});
