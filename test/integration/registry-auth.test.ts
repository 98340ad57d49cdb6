import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { RegistryClient, MAX_TOKEN_BYTES } from '../../oci/registry-client.js';
import { parseReference } from '../../oci/reference.js';
import { readDescriptor } from '../../oci/bundle-reader.js';
import { runCli, tempDir, withRegistry } from '../helpers/env.js';
import { buildFixture, pushFixture, writeManifest, type Fixture } from '../helpers/fixtures.js';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.js';
import { startAuthRegistry } from '../helpers/auth-registry.js';

/**
 * Where the registry client sends credentials, against real servers on 127.0.0.1: docker-registry
 * (open behind a proxy that plays the registry's auth, or with htpasswd), and small servers written
 * here for what a hostile or odd peer does. "Another host" is another port of 127.0.0.1: a token
 * realm must be on the registry's own host *and port* to receive its credentials.
 */
let env: Awaited<ReturnType<typeof withRegistry>>;
let fx: Fixture;
let work: Awaited<ReturnType<typeof tempDir>>;
let proxy: FaultProxy;
const servers: Server[] = [];

const ALICE = `Basic ${Buffer.from('alice:s3cret').toString('base64')}`;

beforeAll(async () => {
  env = await withRegistry();
  fx = await buildFixture('auth');
  await pushFixture(env.registry.host, fx);
  work = await tempDir();
  proxy = await startFaultProxy(env.registry.host);
  await writeFile(join(work.dir, 'alice.json'), JSON.stringify({ auths: { [proxy.host]: { auth: Buffer.from('alice:s3cret').toString('base64') } } }));
});

afterAll(async () => {
  for (const s of servers) {
    s.closeAllConnections();
    s.close();
  }
  await proxy?.close();
  await env?.cleanup();
  await work?.cleanup();
});

beforeEach(() => {
  proxy.intercept = [];
  proxy.log.length = 0;
});

/** A node:http server on 127.0.0.1 (a port of its own: "another host" here); closed after the file. */
async function listen(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<string> {
  const s = createServer(handler);
  servers.push(s);
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return `127.0.0.1:${(s.address() as { port: number }).port}`;
}

/** The proxy demands `Bearer good` for the API (except the version check) and names `realm` in its challenge. */
function demandToken(realm: string): void {
  proxy.intercept.push((req, res) => {
    if (req.url === '/v2/' || req.url!.startsWith('/token')) return false;
    if (req.headers.authorization === 'Bearer good') return false;
    res.writeHead(401, { 'www-authenticate': `Bearer realm="${realm}",service="test"` }).end();
    return true;
  });
}

/** A token endpoint that records what it was sent and gives `good` to alice (or to anyone, if `open`). */
function tokenEndpoint(seen: (string | undefined)[], open = false) {
  return (req: IncomingMessage, res: ServerResponse) => {
    seen.push(req.headers.authorization);
    const ok = open || req.headers.authorization === ALICE;
    res.writeHead(ok ? 200 : 401, { 'content-type': 'application/json' }).end(ok ? JSON.stringify({ token: 'good' }) : '{}');
  };
}

let n = 0;
/** `acpack bundle` of web:1.0 through `host`, as a user runs it. */
async function bundleVia(host: string, env: Record<string, string>, registries?: Record<string, unknown>) {
  const dir = join(work.dir, `run-${n++}`);
  const m = await writeManifest(dir, { images: [`${host}/${fx.web.repository}:${fx.web.tag}`], ...(registries ? { registries } : {}) });
  const out = join(dir, 'o.tar.zst');
  const res = await runCli(['bundle', '-f', m, '--arch', 'amd64', '--cache', join(dir, 'cache'), '-o', out], { env });
  return { ...res, out };
}

describe('token responses are capped', () => {
  it('cuts off a token endpoint that sends an endless body at 1 MiB and closes the connection', async () => {
    let sent = 0;
    let closed = false;
    const host = await listen((req, res) => {
      if (!req.url!.startsWith('/token')) return void res.writeHead(401, { 'www-authenticate': `Bearer realm="http://${host}/token"` }).end();
      res.on('close', () => (closed = true));
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write('{"token":"');
      const chunk = Buffer.alloc(64 << 10, 'a');
      // Endless to the client (bounded here at 1 GiB, so that a client that never stops cannot hang the test).
      const pump = () => {
        while (!closed && sent < 1 << 30) {
          sent += chunk.length;
          if (!res.write(chunk)) return void res.once('drain', pump);
        }
      };
      pump();
    });
    const client = new RegistryClient({ credentials: new Map() });
    await expect(client.getManifest(parseReference(`${host}/library/web:1.0`))).rejects.toMatchObject({
      code: 'AUTH_FAILED',
      message: expect.stringMatching(new RegExp(`the token from ${host} .* is larger than 1\\.05 MB`)),
    });
    for (let i = 0; i < 100 && !closed; i++) await sleep(50);
    expect(closed).toBe(true);
    // What the server got out: the cap, plus what the sockets' buffers took before the close.
    expect(sent).toBeGreaterThan(MAX_TOKEN_BYTES);
    expect(sent).toBeLessThan(32 << 20);
  });

  it('refuses a token response that announces more than the cap without reading it', async () => {
    const host = await listen((req, res) => {
      if (!req.url!.startsWith('/token')) return void res.writeHead(401, { 'www-authenticate': `Bearer realm="http://${host}/token"` }).end();
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(10 * 2 ** 30) });
      res.write('{"token":"');
    });
    const client = new RegistryClient({ credentials: new Map() });
    await expect(client.getManifest(parseReference(`${host}/library/web:1.0`))).rejects.toMatchObject({ code: 'AUTH_FAILED', message: expect.stringContaining('larger than') });
  });
});

describe('basic credentials go to a token realm on the registry\'s own host and port, or one the user listed', () => {
  it('sends them to a realm on the registry\'s host and port', async () => {
    const seen: (string | undefined)[] = [];
    proxy.intercept.push((req, res) => {
      if (!req.url!.startsWith('/token')) return false;
      tokenEndpoint(seen)(req, res);
      return true;
    });
    demandToken(`http://${proxy.host}/token`);
    const res = await bundleVia(proxy.host, { REGISTRY_AUTH_FILE: join(work.dir, 'alice.json') });
    expect(res.code, res.stderr).toBe(0);
    expect(seen).toContain(ALICE);
  });

  it('withholds them from a realm on another port, says how to allow it, and sends them once the manifest lists it', async () => {
    const seen: (string | undefined)[] = [];
    const realmHost = await listen(tokenEndpoint(seen));
    demandToken(`http://${realmHost}/token`);
    const refused = await bundleVia(proxy.host, { REGISTRY_AUTH_FILE: join(work.dir, 'alice.json') });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain(`${proxy.host} sends token requests to ${realmHost}, another host, so acpack did not send it the credentials for ${proxy.host}`);
    expect(refused.stderr).toContain(`spec.registries["${proxy.host}"].tokenHosts`);
    expect(seen.length).toBeGreaterThan(0);
    expect(seen.every((a) => a === undefined)).toBe(true);

    seen.length = 0;
    const allowed = await bundleVia(proxy.host, { REGISTRY_AUTH_FILE: join(work.dir, 'alice.json') }, { [proxy.host]: { tokenHosts: [realmHost] } });
    expect(allowed.code, allowed.stderr).toBe(0);
    expect(seen).toEqual([ALICE]);
    expect((await readDescriptor(allowed.out)).images[0].digest).toBe(fx.web.top.digest);
  });

  it('still pulls public content through a realm elsewhere that gives anonymous tokens', async () => {
    const seen: (string | undefined)[] = [];
    const realmHost = await listen(tokenEndpoint(seen, true));
    demandToken(`http://${realmHost}/token`);
    const res = await bundleVia(proxy.host, { REGISTRY_AUTH_FILE: join(work.dir, 'alice.json') });
    expect(res.code, res.stderr).toBe(0);
    expect(seen.length).toBeGreaterThan(0);
    expect(seen.every((a) => a === undefined)).toBe(true);
  });
});

describe('redirects never carry credentials', () => {
  it('a blob redirected to another port after basic auth gets no Authorization, nor does a token request redirected away', async () => {
    const storageSeen: (string | undefined)[] = [];
    const storage = await listen(async (req, res) => {
      storageSeen.push(req.headers.authorization);
      const up = await fetch(`http://${env.registry.host}${req.url}`);
      res.writeHead(up.status).end(Buffer.from(await up.arrayBuffer()));
    });
    // Basic auth at the registry (the proxy), blobs sent to storage on another port.
    proxy.intercept.push((req, res) => {
      if (req.url === '/v2/') return false;
      if (req.headers.authorization !== ALICE) {
        res.writeHead(401, { 'www-authenticate': 'Basic realm="test"' }).end();
        return true;
      }
      if (!req.url!.includes('/blobs/sha256:')) return false;
      res.writeHead(307, { location: `http://${storage}${req.url}` }).end();
      return true;
    });
    const basic = await bundleVia(proxy.host, { REGISTRY_AUTH_FILE: join(work.dir, 'alice.json') });
    expect(basic.code, basic.stderr).toBe(0);
    expect(proxy.log.some((l) => l.authorization === ALICE)).toBe(true);
    expect(storageSeen.length).toBeGreaterThan(0);
    expect(storageSeen.every((a) => a === undefined)).toBe(true);

    // A realm on the registry's own host and port (trusted) that redirects the token request to another port.
    proxy.intercept = [];
    const tokenSeen: (string | undefined)[] = [];
    const elsewhere = await listen(tokenEndpoint(tokenSeen, true));
    proxy.intercept.push((req, res) => {
      if (!req.url!.startsWith('/token')) return false;
      res.writeHead(307, { location: `http://${elsewhere}${req.url}` }).end();
      return true;
    });
    demandToken(`http://${proxy.host}/token`);
    const token = await bundleVia(proxy.host, { REGISTRY_AUTH_FILE: join(work.dir, 'alice.json') });
    expect(token.code, token.stderr).toBe(0);
    expect(proxy.log.filter((l) => l.url.startsWith('/token')).every((l) => l.authorization === ALICE)).toBe(true);
    expect(tokenSeen.length).toBeGreaterThan(0);
    expect(tokenSeen.every((a) => a === undefined)).toBe(true);
  });
});

describe('credential helpers named in docker\'s config.json', () => {
  let registry: { host: string; stop(): Promise<void> };
  let bin: string;
  let log: string;

  beforeAll(async () => {
    const dir = join(work.dir, 'htpasswd');
    await mkdir(dir, { recursive: true });
    registry = await startAuthRegistry(dir, { bob: 'hunter2' }, [fx.web]);
    // Fake docker-credential-<name> helpers, as docker runs them: `get`, the server on stdin, JSON out.
    bin = join(work.dir, 'bin');
    log = join(work.dir, 'helpers.log');
    await mkdir(bin, { recursive: true });
    for (const [name, password] of [['fake', 'hunter2'], ['stale', 'wrong'], ['empty', '']]) {
      const answer = password
        ? `printf '{"ServerURL":"%s","Username":"bob","Secret":"${password}"}' "$server"`
        : 'echo "credentials not found in native keychain"; exit 1';
      const script = `#!/bin/sh\nread -r server\necho "${name} $1 $server" >> "$HELPER_LOG"\n[ "$1" = get ] || exit 2\n${answer}\n`;
      await writeFile(join(bin, `docker-credential-${name}`), script);
      await chmod(join(bin, `docker-credential-${name}`), 0o755);
    }
  });

  afterAll(async () => {
    await registry?.stop();
  });

  async function withConfig(config: Record<string, unknown>, host = registry.host) {
    const dockerConfig = join(work.dir, `docker-${n++}`);
    await mkdir(dockerConfig, { recursive: true });
    await writeFile(join(dockerConfig, 'config.json'), JSON.stringify(config));
    await writeFile(log, '');
    const res = await bundleVia(host, { DOCKER_CONFIG: dockerConfig, PATH: `${bin}:${process.env.PATH}`, HELPER_LOG: log });
    return { ...res, config: join(dockerConfig, 'config.json'), calls: (await readFile(log, 'utf8')).trim().split('\n').filter(Boolean) };
  }

  it('credsStore: runs docker-credential-<name> get with the server on stdin and uses its answer', async () => {
    const res = await withConfig({ auths: { [registry.host]: {} }, credsStore: 'fake' });
    expect(res.code, res.stderr).toBe(0);
    expect(res.calls).toEqual([`fake get ${registry.host}`]);
    expect((await readDescriptor(res.out)).images[0].digest).toBe(fx.web.top.digest);
  });

  it('credHelpers: the host\'s own helper wins over credsStore', async () => {
    const res = await withConfig({ credsStore: 'stale', credHelpers: { [registry.host]: 'fake' } });
    expect(res.code, res.stderr).toBe(0);
    expect(res.calls).toEqual([`fake get ${registry.host}`]);
  });

  it('names the helper when its credentials are refused, and says "log in" when it has none', async () => {
    const stale = await withConfig({ credsStore: 'stale' });
    expect(stale.code).toBe(1);
    expect(stale.stderr).toContain(`${registry.host} refused the credentials for library/web: check them in docker-credential-stale (named in ${stale.config})`);
    const none = await withConfig({ credsStore: 'empty' });
    expect(none.code).toBe(1);
    expect(none.stderr).toContain(`${registry.host} needs credentials for library/web: log in`);
    expect(none.calls).toEqual([`empty get ${registry.host}`]);
  });

  it('a helper that is not installed is a clear error naming it and the config file', async () => {
    const res = await withConfig({ credsStore: 'missing' });
    expect(res.code).toBe(1);
    expect(res.stderr).toContain(`${res.config} sends the credentials for ${registry.host} to the helper "missing", but docker-credential-missing is not on the PATH`);
    expect(res.stderr).not.toContain('unexpected');
  });

  it('is not run for a registry that asks for no credentials', async () => {
    const res = await withConfig({ credsStore: 'fake' }, env.registry.host);
    expect(res.code, res.stderr).toBe(0);
    expect(res.calls).toEqual([]);
  });
});
