import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { X509Certificate } from 'node:crypto';
import { ensureTls, startRegistry, tlsDir, type RunningRegistry } from '../../registry/index.js';
import { sha256 } from '../../oci/digest.js';
import { MT } from '../../oci/media-types.js';
import { buildIndexImage, buildLayer, noise } from '../../demo/samples.js';
import { Agent, request } from 'undici';
import { ACINSTALL, tempDir } from '../helpers/env.js';

const run = promisify(execFile);
let work: Awaited<ReturnType<typeof tempDir>>;
let reg: RunningRegistry;
let store: string;
let certDir: string;

beforeAll(async () => {
  work = await tempDir();
  store = join(work.dir, 'store');
  const tls = await ensureTls(store, { hostnames: ['registry.site.example'], ips: ['127.0.0.1'] });
  const bcrypt = (await import('bcryptjs')).default;
  await writeFile(join(work.dir, 'htpasswd'), `ops:${bcrypt.hashSync('pw', 10)}\n`);
  reg = await startRegistry({ storeRoot: store, listen: '127.0.0.1:0', tls, htpasswd: join(work.dir, 'htpasswd') });
  certDir = join(work.dir, 'certs');
  await mkdir(certDir);
  await writeFile(join(certDir, 'ca.crt'), tls.ca);
});

afterAll(async () => {
  await reg?.close();
  await work?.cleanup();
});

describe('--tls auto', () => {
  it('makes a CA and a server certificate for the names asked, and reuses them', async () => {
    const server = new X509Certificate(await readFile(join(tlsDir(store), 'server.crt')));
    const ca = new X509Certificate(await readFile(join(tlsDir(store), 'ca.crt')));
    expect(server.checkIssued(ca)).toBe(true);
    expect(server.verify(ca.publicKey)).toBe(true);
    expect(server.subjectAltName).toContain('DNS:registry.site.example');
    expect(server.subjectAltName).toContain('IP Address:127.0.0.1');
    const again = await ensureTls(store, { hostnames: ['registry.site.example'], ips: ['127.0.0.1'] });
    expect(again.cert).toBe(await readFile(join(tlsDir(store), 'server.crt'), 'utf8'));
    // A new name gets a new certificate from the same CA.
    const wider = await ensureTls(store, { hostnames: ['other.example'], ips: [] });
    expect(new X509Certificate(wider.cert).subjectAltName).toContain('DNS:other.example');
    expect(wider.ca).toBe(again.ca);
  });

  it('skopeo pushes and pulls over TLS trusting the site CA, and refuses without it', async () => {
    const layer = await buildLayer([{ path: 'x', content: 'tls' }]);
    const img = buildIndexImage('tls/app', '1', { amd64: [layer] });
    const layout = join(work.dir, 'layout');
    await mkdir(join(layout, 'blobs/sha256'), { recursive: true });
    for (const b of [...img.blobs.map((x) => x.data), ...img.manifests.map((x) => x.data), img.top.data]) await writeFile(join(layout, 'blobs/sha256', sha256(b).slice(7)), b);
    await writeFile(join(layout, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
    await writeFile(join(layout, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: MT.ociIndex, digest: img.top.digest, size: img.top.data.length, annotations: { 'org.opencontainers.image.ref.name': 'app' } }] }));
    await run('skopeo', ['copy', '--all', '--preserve-digests', '--dest-cert-dir', certDir, '--dest-creds', 'ops:pw', `oci:${layout}:app`, `docker://${reg.host}/tls/app:1`]);
    const { stdout } = await run('skopeo', ['inspect', '--raw', '--cert-dir', certDir, `docker://${reg.host}/tls/app:1`]);
    expect(sha256(stdout)).toBe(img.top.digest);
    await mkdir(join(work.dir, 'empty'));
    await expect(run('skopeo', ['inspect', '--raw', '--cert-dir', join(work.dir, 'empty'), `docker://${reg.host}/tls/app:1`])).rejects.toThrow(/x509|certificate signed by unknown authority/);
  });

  it('serves a large blob over TLS byte for byte (in slices), whole and by range, and outlives a client that drops mid-blob', async () => {
    const big = noise('tls-big', 5 << 20);
    const digest = sha256(big);
    const auth = { authorization: `Basic ${Buffer.from('ops:pw').toString('base64')}` };
    const agent = new Agent({ connect: { ca: await readFile(join(certDir, 'ca.crt')) } });
    try {
      const put = await request(`${reg.url}/v2/tls/big/blobs/uploads/?digest=${digest}`, { method: 'POST', body: big, headers: auth, dispatcher: agent });
      expect(put.statusCode).toBe(201);
      await put.body.dump();
      const url = `${reg.url}/v2/tls/big/blobs/${digest}`;
      // A client that reads 100 KB and goes away.
      const dropped = await request(url, { dispatcher: agent });
      for await (const chunk of dropped.body) if ((chunk as Buffer).length) break;
      dropped.body.destroy();
      const whole = await request(url, { dispatcher: agent });
      expect(sha256(Buffer.from(await whole.body.arrayBuffer()))).toBe(digest);
      const part = await request(url, { headers: { range: 'bytes=3000000-3999999' }, dispatcher: agent });
      expect(part.statusCode).toBe(206);
      expect(Buffer.from(await part.body.arrayBuffer()).equals(big.subarray(3_000_000, 4_000_000))).toBe(true);
    } finally {
      await agent.close();
    }
  });

  it('acinstall ca prints the site CA', async () => {
    const { stdout } = await run(ACINSTALL, ['ca', '--store', store]);
    expect(stdout).toBe(await readFile(join(tlsDir(store), 'ca.crt'), 'utf8'));
  });
});
