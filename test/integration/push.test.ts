import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import bcrypt from 'bcryptjs';
import { startRegistry, type RunningRegistry } from '../../registry/index.js';
import { freePort } from '../../demo/source-registry.js';
import { sha256 } from '../../oci/digest.js';
import { MT } from '../../oci/media-types.js';
import { buildIndexImage, buildLayer, noise } from '../../demo/samples.js';
import { ACINSTALL, tempDir } from '../helpers/env.js';
import { ContentStore } from '../../oci/store.js';
import { IndexDb } from '../../registry/index-db.js';
import { collectGarbage, GC_MIN_AGE_MS, sweepUploads, UPLOAD_MAX_AGE_MS } from '../../registry/gc.js';

const run = promisify(execFile);
let work: Awaited<ReturnType<typeof tempDir>>;
let reg: RunningRegistry;
let htpasswd: string;
const auth = { authorization: `Basic ${Buffer.from('bob:hunter2').toString('base64')}` };

beforeAll(async () => {
  work = await tempDir();
  htpasswd = join(work.dir, 'htpasswd');
  await writeFile(htpasswd, `bob:${bcrypt.hashSync('hunter2', 10)}\neve:${bcrypt.hashSync('sesame', 10)}\n`);
  reg = await startRegistry({ storeRoot: join(work.dir, 'store'), listen: '127.0.0.1:0', htpasswd });
});

const spawned: import('node:child_process').ChildProcess[] = [];

afterAll(async () => {
  for (const c of spawned) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await reg?.close();
  await work?.cleanup();
});

const url = (p: string) => `${reg.url}${p}`;
const req = (method: string, p: string, body?: Buffer | string, headers: Record<string, string> = {}) =>
  fetch(url(p), { method, body: body === undefined ? undefined : typeof body === 'string' ? body : new Uint8Array(body), headers: { ...auth, ...headers } });

async function pushBlob(name: string, data: Buffer): Promise<string> {
  const res = await req('POST', `/v2/${name}/blobs/uploads/?digest=${sha256(data)}`, data, { 'content-type': 'application/octet-stream' });
  expect(res.status).toBe(201);
  return sha256(data);
}

describe('push, every upload mode of the spec', () => {
  const data = noise('push', 300_000);
  const digest = sha256(data);

  it('monolithic POST with the body', async () => {
    await pushBlob('mono/a', Buffer.from('monolithic'));
    const head = await fetch(url(`/v2/mono/a/blobs/${sha256('monolithic')}`), { method: 'HEAD' });
    expect(head.status).toBe(200);
  });

  it('POST then PUT with the body', async () => {
    const start = await req('POST', '/v2/two/step/blobs/uploads/');
    expect(start.status).toBe(202);
    const loc = start.headers.get('location')!;
    const put = await req('PUT', `${loc}?digest=${digest}`, data, { 'content-type': 'application/octet-stream' });
    expect(put.status).toBe(201);
    expect(put.headers.get('docker-content-digest')).toBe(digest);
    const got = Buffer.from(await (await fetch(url(`/v2/two/step/blobs/${digest}`))).arrayBuffer());
    expect(got.equals(data)).toBe(true);
  });

  it('chunked PATCHes with Content-Range, an out-of-order chunk refused with 416 and the range, then PUT', async () => {
    const d = noise('chunks', 250_000);
    const loc = (await req('POST', '/v2/chunked/x/blobs/uploads/')).headers.get('location')!;
    const first = await req('PATCH', loc, d.subarray(0, 100_000), { 'content-range': '0-99999', 'content-type': 'application/octet-stream' });
    expect(first.status).toBe(202);
    expect(first.headers.get('range')).toBe('0-99999');
    const skip = await req('PATCH', loc, d.subarray(150_000, 200_000), { 'content-range': '150000-199999', 'content-type': 'application/octet-stream' });
    expect(skip.status).toBe(416);
    expect(skip.headers.get('range')).toBe('0-99999');
    const status = await req('GET', loc);
    expect(status.status).toBe(204);
    expect(status.headers.get('range')).toBe('0-99999');
    const second = await req('PATCH', loc, d.subarray(100_000), { 'content-range': '100000-249999', 'content-type': 'application/octet-stream' });
    expect(second.status).toBe(202);
    const put = await req('PUT', `${loc}?digest=${sha256(d)}`);
    expect(put.status).toBe(201);
  });

  it('a streamed PATCH without Content-Range', async () => {
    const d = noise('stream', 120_000);
    const loc = (await req('POST', '/v2/streamed/x/blobs/uploads/')).headers.get('location')!;
    expect((await req('PATCH', loc, d, { 'content-type': 'application/octet-stream' })).status).toBe(202);
    expect((await req('PUT', `${loc}?digest=${sha256(d)}`)).status).toBe(201);
  });

  it('a digest that does not match is refused and nothing appears', async () => {
    const wrong = sha256('something else');
    const res = await req('POST', `/v2/bad/x/blobs/uploads/?digest=${wrong}`, 'the real bytes');
    expect(res.status).toBe(400);
    expect((await res.json()).errors[0].code).toBe('DIGEST_INVALID');
    expect((await fetch(url(`/v2/bad/x/blobs/${wrong}`), { method: 'HEAD' })).status).toBe(404);
  });

  it('cancel forgets the upload', async () => {
    const loc = (await req('POST', '/v2/cancel/x/blobs/uploads/')).headers.get('location')!;
    expect((await req('DELETE', loc)).status).toBe(204);
    expect((await req('GET', loc)).status).toBe(404);
  });

  it('mounts a blob from another repository', async () => {
    const d = await pushBlob('mount/src', Buffer.from('shared layer'));
    const res = await req('POST', `/v2/mount/dst/blobs/uploads/?mount=${d}&from=mount/src`);
    expect(res.status).toBe(201);
    expect(res.headers.get('location')).toBe(`/v2/mount/dst/blobs/${d}`);
  });

  it('keeps manifest bytes exactly, checks references, and deletes', async () => {
    const layer = await buildLayer([{ path: 'f', content: 'x' }]);
    const img = buildIndexImage('app/one', '1.0', { amd64: [layer] });
    for (const b of img.blobs) await pushBlob('app/one', b.data);
    // An index before its child is refused; the child first, then the index under a tag.
    const early = await req('PUT', '/v2/app/one/manifests/1.0', img.top.data, { 'content-type': MT.ociIndex });
    expect(early.status).toBe(404);
    expect((await early.json()).errors[0].code).toBe('MANIFEST_BLOB_UNKNOWN');
    const child = img.manifests[0];
    expect((await req('PUT', `/v2/app/one/manifests/${child.digest}`, child.data, { 'content-type': MT.ociManifest })).status).toBe(201);
    const put = await req('PUT', '/v2/app/one/manifests/1.0', img.top.data, { 'content-type': MT.ociIndex });
    expect(put.status).toBe(201);
    expect(put.headers.get('docker-content-digest')).toBe(img.top.digest);
    const got = await fetch(url('/v2/app/one/manifests/1.0'), { headers: { accept: MT.ociIndex } });
    expect(Buffer.from(await got.arrayBuffer()).equals(img.top.data)).toBe(true);
    expect(got.headers.get('content-type')).toBe(MT.ociIndex);
    // A client that takes no index gets the one platform's manifest.
    const plain = await fetch(url('/v2/app/one/manifests/1.0'), { headers: { accept: `${MT.ociManifest}, ${MT.dockerManifest}` } });
    expect(plain.status).toBe(200);
    expect(plain.headers.get('docker-content-digest')).toBe(child.digest);
    expect(Buffer.from(await plain.arrayBuffer()).equals(child.data)).toBe(true);
    // A wrong digest in the URL is refused.
    expect((await req('PUT', `/v2/app/one/manifests/${sha256('x')}`, child.data, { 'content-type': MT.ociManifest })).status).toBe(400);
    // Tags are listed page by page.
    for (const tag of ['b', 'a', 'c']) expect((await req('PUT', `/v2/app/one/manifests/${tag}`, child.data, { 'content-type': MT.ociManifest })).status).toBe(201);
    const first = await fetch(url('/v2/app/one/tags/list?n=2'));
    expect((await first.json()).tags).toEqual(['1.0', 'a']);
    const link = first.headers.get('link')!;
    expect(link).toBe('</v2/app/one/tags/list?n=2&last=a>; rel="next"');
    const second = await fetch(url(link.slice(1, link.indexOf('>'))));
    expect((await second.json()).tags).toEqual(['b', 'c']);
    expect(second.headers.get('link')).toBeNull();
    // Bodies that parse as JSON but are no manifest: 400 MANIFEST_INVALID, never a 500.
    for (const [body, type] of [
      ['null', MT.ociManifest],
      [JSON.stringify({ schemaVersion: 2, mediaType: MT.ociManifest, config: JSON.parse(child.data.toString()).config, layers: 5 }), MT.ociManifest],
      [JSON.stringify({ schemaVersion: 2, mediaType: MT.ociIndex, manifests: {} }), MT.ociIndex],
      [JSON.stringify({ schemaVersion: 2, mediaType: MT.ociIndex, manifests: [{}] }), MT.ociIndex],
    ]) {
      const bad = await req('PUT', '/v2/app/one/manifests/broken', body, { 'content-type': type });
      expect(bad.status, body).toBe(400);
      expect((await bad.json()).errors[0].code).toBe('MANIFEST_INVALID');
    }
    expect((await req('DELETE', `/v2/app/one/manifests/${img.top.digest}`)).status).toBe(202);
    expect((await fetch(url('/v2/app/one/manifests/1.0'))).status).toBe(404);
  });
});

describe('content management', () => {
  it('a blob DELETE unlinks it from its repository; a collection frees what no manifest reaches, and old uploads', async () => {
    const layer = await buildLayer([{ path: 'f', content: 'to be deleted' }]);
    const img = buildIndexImage('gone/app', '1', { amd64: [layer] });
    for (const b of img.blobs) await pushBlob('gone/app', b.data);
    const child = img.manifests[0];
    expect((await req('PUT', `/v2/gone/app/manifests/${child.digest}`, child.data, { 'content-type': MT.ociManifest })).status).toBe(201);
    const layerDigest = sha256(layer.data);
    const kept = buildIndexImage('keep/app', '1', { amd64: [await buildLayer([{ path: 'f', content: 'kept' }])] });
    for (const b of kept.blobs) await pushBlob('keep/app', b.data);
    expect((await req('PUT', `/v2/keep/app/manifests/${kept.manifests[0].digest}`, kept.manifests[0].data, { 'content-type': MT.ociManifest })).status).toBe(201);

    // As in distribution: the link goes even while a manifest uses the blob; the blob itself stays.
    expect((await req('DELETE', `/v2/gone/app/blobs/${layerDigest}`)).status).toBe(202);
    expect((await fetch(url(`/v2/gone/app/blobs/${layerDigest}`))).status).toBe(404);
    expect((await req('DELETE', `/v2/gone/app/blobs/${layerDigest}`)).status).toBe(404);
    expect((await fetch(url(`/v2/gone/app/manifests/${child.digest}`))).status).toBe(200);

    const delManifest = await req('DELETE', `/v2/gone/app/manifests/${child.digest}`);
    expect(delManifest.status, await delManifest.clone().text()).toBe(202);

    // The config blob is orphaned too; a collection takes it (once old enough), and nothing still in use.
    const store = await ContentStore.open(join(work.dir, 'store'));
    const db = new IndexDb(join(work.dir, 'store'));
    try {
      const configDigest = JSON.parse(child.data.toString()).config.digest;
      const usedBefore = db.reachableBlobs();
      expect(usedBefore.has(kept.manifests[0].digest)).toBe(true);
      expect(usedBefore.has(layerDigest)).toBe(false);
      expect(await collectGarbage(store, db, { now: Date.now() })).toMatchObject({ blobs: 0 }); // too young
      const later = Date.now() + GC_MIN_AGE_MS + 1000;
      const dry = await collectGarbage(store, db, { now: later, dryRun: true });
      expect(dry.blobs).toBeGreaterThan(0);
      expect(await store.has(configDigest)).toBe(true);
      const done = await collectGarbage(store, db, { now: later });
      expect(done.blobs).toBe(dry.blobs);
      expect(await store.has(configDigest)).toBe(false);
      expect(await store.has(layerDigest)).toBe(false);
      for (const d of usedBefore) expect(await store.has(d), `${d} is still in use`).toBe(true);
      expect((await fetch(url(`/v2/keep/app/manifests/${kept.manifests[0].digest}`))).status).toBe(200);

      // An upload left half-done is kept for a day, then swept.
      const loc = (await req('POST', '/v2/gone/app/blobs/uploads/')).headers.get('location')!;
      expect((await req('PATCH', loc, 'half', { 'content-type': 'application/octet-stream' })).status).toBe(202);
      await sweepUploads(store);
      expect((await req('GET', loc)).status).toBe(204);
      expect(await sweepUploads(store, { now: Date.now() + UPLOAD_MAX_AGE_MS + 1000 })).toBeGreaterThanOrEqual(1);
      expect((await req('GET', loc)).status).toBe(404);
    } finally {
      db.close();
    }
  });
});

describe('uploads and blobs belong to a repository', () => {
  const eve = { authorization: `Basic ${Buffer.from('eve:sesame').toString('base64')}` };

  it('serves a blob only under a repository it was pushed, mounted or imported to', async () => {
    const d = await pushBlob('own/a', Buffer.from('belongs to own/a'));
    expect((await fetch(url(`/v2/own/a/blobs/${d}`))).status).toBe(200);
    const elsewhere = await fetch(url(`/v2/own/b/blobs/${d}`));
    expect(elsewhere.status).toBe(404);
    expect((await elsewhere.json()).errors[0].code).toBe('BLOB_UNKNOWN');
    await pushBlob('own/b', Buffer.from('something else in own/b'));
    expect((await fetch(url(`/v2/own/b/blobs/${d}`), { method: 'HEAD' })).status).toBe(404);
  });

  it('mounts only from a repository that holds the blob; otherwise starts an upload', async () => {
    const d = await pushBlob('mnt/src', Buffer.from('mount me'));
    const notThere = await req('POST', `/v2/mnt/dst/blobs/uploads/?mount=${d}&from=mnt/other`);
    expect(notThere.status).toBe(202);
    const noFrom = await req('POST', `/v2/mnt/dst/blobs/uploads/?mount=${d}`);
    expect(noFrom.status).toBe(202);
    expect((await fetch(url(`/v2/mnt/dst/blobs/${d}`))).status).toBe(404);
    const mounted = await req('POST', `/v2/mnt/dst/blobs/uploads/?mount=${d}&from=mnt/src`);
    expect(mounted.status).toBe(201);
    expect((await fetch(url(`/v2/mnt/dst/blobs/${d}`))).status).toBe(200);
  });

  it('keeps an upload to the repository and the user that started it', async () => {
    const loc = (await req('POST', '/v2/up/mine/blobs/uploads/')).headers.get('location')!;
    expect((await req('PATCH', loc, 'abc', { 'content-type': 'application/octet-stream' })).status).toBe(202);
    const uuid = loc.split('/').pop();
    for (const [path, headers] of [
      [`/v2/up/theirs/blobs/uploads/${uuid}`, {}],
      [loc, eve],
    ] as const) {
      expect((await req('PATCH', path, 'EVIL', { 'content-type': 'application/octet-stream', ...headers })).status).toBe(404);
      expect((await req('PUT', `${path}?digest=${sha256('abcEVIL')}`, '', headers)).status).toBe(404);
      expect((await req('GET', path, undefined, headers)).status).toBe(404);
      expect((await req('DELETE', path, undefined, headers)).status).toBe(404);
    }
    const done = await req('PUT', `${loc}?digest=${sha256('abc')}`, '');
    expect(done.status).toBe(201);
  });

  it('refuses a chunk whose Content-Range does not match the bytes sent, and keeps the upload as it was', async () => {
    const loc = (await req('POST', '/v2/up/range/blobs/uploads/')).headers.get('location')!;
    expect((await req('PATCH', loc, 'hello', { 'content-type': 'application/octet-stream', 'content-range': '0-4' })).status).toBe(202);
    const lying = await req('PATCH', loc, 'world', { 'content-type': 'application/octet-stream', 'content-range': '5-99' });
    expect(lying.status).toBe(416);
    expect(lying.headers.get('range')).toBe('0-4');
    expect((await req('GET', loc)).headers.get('range')).toBe('0-4');
    expect((await req('PATCH', loc, 'world', { 'content-type': 'application/octet-stream', 'content-range': '5-9' })).status).toBe(202);
    expect((await req('PUT', `${loc}?digest=${sha256('helloworld')}`, '')).status).toBe(201);
  });

  it('refuses a manifest of another schema version or with descriptor sizes that do not match', async () => {
    const layer = Buffer.from('sized layer');
    const config = Buffer.from('{}');
    await pushBlob('strict/app', layer);
    await pushBlob('strict/app', config);
    const manifest = (over: Record<string, unknown>, layerSize = layer.length) =>
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MT.ociManifest,
        config: { mediaType: MT.ociConfig, digest: sha256(config), size: config.length },
        layers: [{ mediaType: MT.ociLayer, digest: sha256(layer), size: layerSize }],
        ...over,
      });
    for (const body of [manifest({ schemaVersion: 99 }), manifest({}, layer.length + 1), manifest({ layers: [{ digest: sha256(layer), size: -1 }] })]) {
      const r = await req('PUT', '/v2/strict/app/manifests/v1', body, { 'content-type': MT.ociManifest });
      expect(r.status, body).toBe(400);
      expect((await r.json()).errors[0].code).toBe('MANIFEST_INVALID');
    }
    // Blobs pushed to another repository are not this one's.
    const other = await req('PUT', '/v2/strict/other/manifests/v1', manifest({}), { 'content-type': MT.ociManifest });
    expect(other.status).toBe(404);
    expect((await other.json()).errors[0].code).toBe('MANIFEST_BLOB_UNKNOWN');
    expect((await req('PUT', '/v2/strict/app/manifests/v1', manifest({}), { 'content-type': MT.ociManifest })).status).toBe(201);
  });

  it('never lets a PUT finish an upload that another request is still writing, nor touch a blob already stored', async () => {
    const existing = await pushBlob('race/app', Buffer.from('the real layer'));
    const before = await fetch(url(`/v2/race/app/blobs/${existing}`)).then((r) => r.arrayBuffer());
    const loc = (await req('POST', '/v2/race/app/blobs/uploads/')).headers.get('location')!;
    // A PATCH whose body keeps arriving.
    let more!: (b: Uint8Array | null) => void;
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(new TextEncoder().encode('the real layer'));
        more = (b) => (b ? c.enqueue(b) : c.close());
      },
    });
    const patching = fetch(url(loc), { method: 'PATCH', body, headers: { ...auth, 'content-type': 'application/octet-stream' }, duplex: 'half' } as RequestInit);
    await sleep(200);
    const put = await req('PUT', `${loc}?digest=${existing}`, '');
    expect(put.status).toBe(400);
    expect((await put.json()).errors[0].code).toBe('BLOB_UPLOAD_INVALID');
    more(new TextEncoder().encode(' plus garbage'));
    more(null);
    expect((await patching).status).toBe(202);
    const after = await fetch(url(`/v2/race/app/blobs/${existing}`)).then((r) => r.arrayBuffer());
    expect(Buffer.from(after)).toEqual(Buffer.from(before));
    expect((await req('PUT', `${loc}?digest=${existing}`, '')).status).toBe(400); // the upload holds other bytes now
  });
});

describe('content discovery', () => {
  it('lists the referrers of a manifest, filtered by artifactType', async () => {
    const layer = await buildLayer([{ path: 'f', content: 'subject' }]);
    const img = buildIndexImage('ref/app', '1', { amd64: [layer] });
    for (const b of img.blobs) await pushBlob('ref/app', b.data);
    const subject = img.manifests[0];
    expect((await req('PUT', '/v2/ref/app/manifests/1', subject.data, { 'content-type': MT.ociManifest })).status).toBe(201);
    const empty = Buffer.from('{}');
    await pushBlob('ref/app', empty);
    const sig = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MT.ociManifest,
        artifactType: 'application/vnd.example.signature',
        config: { mediaType: MT.ociEmpty, digest: sha256(empty), size: 2 },
        layers: [{ mediaType: MT.ociEmpty, digest: sha256(empty), size: 2 }],
        subject: { mediaType: MT.ociManifest, digest: subject.digest, size: subject.data.length },
        annotations: { who: 'ops' },
      }),
    );
    const put = await req('PUT', `/v2/ref/app/manifests/${sha256(sig)}`, sig, { 'content-type': MT.ociManifest });
    expect(put.status).toBe(201);
    expect(put.headers.get('oci-subject')).toBe(subject.digest);
    const list = await (await fetch(url(`/v2/ref/app/referrers/${subject.digest}`))).json();
    expect(list.manifests).toEqual([{ mediaType: MT.ociManifest, digest: sha256(sig), size: sig.length, artifactType: 'application/vnd.example.signature', annotations: { who: 'ops' } }]);
    const filtered = await fetch(url(`/v2/ref/app/referrers/${subject.digest}?artifactType=application/other`));
    expect(filtered.headers.get('oci-filters-applied')).toBe('artifactType');
    expect((await filtered.json()).manifests).toEqual([]);
  });
});

describe('push access', () => {
  it('asks for credentials, refuses wrong ones, and lets anonymous pulls through', async () => {
    const none = await fetch(url('/v2/anon/x/blobs/uploads/'), { method: 'POST' });
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toBe('Basic realm="acpack"');
    const wrong = await fetch(url('/v2/anon/x/blobs/uploads/'), { method: 'POST', headers: { authorization: `Basic ${Buffer.from('bob:nope').toString('base64')}` } });
    expect(wrong.status).toBe(401);
    // The version check challenges (so clients send credentials), but anonymous pulls go through.
    expect((await fetch(url('/v2/'))).status).toBe(401);
    expect((await fetch(url('/v2/'), { headers: auth })).status).toBe(200);
    const pulled = await pushBlob('anon/x', Buffer.from('anonymous pull'));
    expect((await fetch(url(`/v2/anon/x/blobs/${pulled}`))).status).toBe(200);
  });

  it('refuses an absurd Content-Length before reading the body', async () => {
    const loc = (await req('POST', '/v2/absurd/x/blobs/uploads/')).headers.get('location')!;
    const [host, port] = reg.host.split(':');
    const { connect } = await import('node:net');
    const answer = await new Promise<string>((resolve, reject) => {
      const s = connect(Number(port), host, () =>
        s.write(`PATCH ${loc} HTTP/1.1\r\nHost: ${reg.host}\r\nAuthorization: ${auth.authorization}\r\nContent-Length: 99999999999999999\r\n\r\n`),
      );
      let got = '';
      s.on('data', (c) => {
        got += c;
        if (got.includes('\r\n\r\n')) {
          s.destroy();
          resolve(got);
        }
      });
      s.on('error', reject);
    });
    expect(answer).toMatch(/^HTTP\/1\.1 400/);
    expect((await fetch(url('/v2/'), { headers: auth })).status).toBe(200);
  });

  it('skopeo pushes a multi-arch image with digests preserved, and reads it back', async () => {
    const layer = await buildLayer([{ path: 'etc/hi', content: 'hi' }]);
    const img = buildIndexImage('skopeo/src', '1', { amd64: [layer], arm64: [layer] });
    // An OCI layout on disk as the source.
    const layout = join(work.dir, 'layout');
    const { mkdir } = await import('node:fs/promises');
    await mkdir(join(layout, 'blobs/sha256'), { recursive: true });
    for (const b of [...img.blobs.map((x) => x.data), ...img.manifests.map((x) => x.data), img.top.data]) await writeFile(join(layout, 'blobs/sha256', sha256(b).slice(7)), b);
    await writeFile(join(layout, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
    await writeFile(join(layout, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: MT.ociIndex, digest: img.top.digest, size: img.top.data.length, annotations: { 'org.opencontainers.image.ref.name': 'app' } }] }));
    await run('skopeo', ['copy', '--all', '--preserve-digests', '--dest-tls-verify=false', '--dest-creds', 'bob:hunter2', `oci:${layout}:app`, `docker://${reg.host}/site/app:2.0`]);
    const { stdout } = await run('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${reg.host}/site/app:2.0`]);
    expect(sha256(stdout)).toBe(img.top.digest);
  });
});

describe('password guessing', () => {
  it('is throttled after 10 failures from one address, even for the right password', async () => {
    const store = join(work.dir, 'throttle');
    const r = await startRegistry({ storeRoot: store, listen: '127.0.0.1:0', htpasswd });
    try {
      const bad = { authorization: `Basic ${Buffer.from('bob:guess').toString('base64')}` };
      for (let i = 0; i < 10; i++) expect((await fetch(`${r.url}/v2/`, { headers: bad })).status).toBe(401);
      const right = await fetch(`${r.url}/v2/`, { headers: auth });
      expect(right.status).toBe(429);
      expect((await right.json()).errors[0].code).toBe('TOOMANYREQUESTS');
      // Anonymous pulls are not affected.
      expect((await fetch(`${r.url}/v2/_catalog`)).status).toBe(200);
    } finally {
      await r.close();
    }
  });
});

describe('a server killed mid-push', () => {
  it('serves no partial blob after a restart', async () => {
    const store = join(work.dir, 'killed');
    const port = await freePort();
    const serve = () =>
      spawn(ACINSTALL, ['serve', '--store', store, '--listen', `127.0.0.1:${port}`, '--htpasswd', htpasswd, '--workers', '1', '--quiet'], { stdio: 'ignore' });
    const up = async () => {
      for (let i = 0; i < 100; i++) {
        if ((await fetch(`http://127.0.0.1:${port}/v2/`).then((r) => r.status, () => 0)) === 401) return;
        await sleep(100);
      }
      throw new Error('registry did not start');
    };
    let child = serve();
    spawned.push(child);
    await up();
    const big = noise('killed', 4 << 20);
    const digest = sha256(big);
    // A monolithic push whose body is only half sent when the server is killed.
    const { connect } = await import('node:net');
    const sock = connect(port, '127.0.0.1');
    await new Promise((r) => sock.once('connect', r));
    sock.write(`POST /v2/k/x/blobs/uploads/?digest=${digest} HTTP/1.1\r\nHost: x\r\nAuthorization: ${auth.authorization}\r\nContent-Length: ${big.length}\r\n\r\n`);
    sock.write(big.subarray(0, big.length >> 1));
    await sleep(300);
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    sock.destroy();
    child = serve();
    spawned.push(child);
    try {
      await up();
      expect((await fetch(`http://127.0.0.1:${port}/v2/k/x/blobs/${digest}`, { method: 'HEAD' })).status).toBe(404);
      // And the same blob pushes fine afterwards.
      const again = await fetch(`http://127.0.0.1:${port}/v2/k/x/blobs/uploads/?digest=${digest}`, { method: 'POST', body: new Uint8Array(big), headers: auth });
      expect(again.status).toBe(201);
    } finally {
      child.kill('SIGKILL');
    }
  });
});
