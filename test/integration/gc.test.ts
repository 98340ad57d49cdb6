/**
 * Issue 10: "`gc` collects what a deleted index leaves (its per-platform manifests and their layers
 * when nothing else reaches them) and says what it spared for age". Everything here goes through the
 * real CLIs: `acinstall serve` on 127.0.0.1, skopeo pushing and pulling, `acinstall gc` and `verify`.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { existsSync } from 'node:fs';
import { mkdir, rm, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import bcrypt from 'bcryptjs';
import Database from 'better-sqlite3';
import { buildIndexImage, buildLayer, buildSingleImage, noise, type SampleImage } from '../../demo/samples.js';
import { freePort } from '../../demo/source-registry.js';
import { stopChild } from '../../demo/processes.js';
import { ANNOTATION_REF_NAME } from '../../oci/media-types.js';
import { sha256 } from '../../oci/digest.js';
import { ACINSTALL, tempDir } from '../helpers/env.js';
import { startRegistry } from '../../registry/index.js';
import { ContentStore } from '../../oci/store.js';
import { IndexDb } from '../../registry/index-db.js';
import { collectGarbage } from '../../registry/gc.js';

const run = promisify(execFile);
const USER = 'bob:hunter2';
const AUTH = { authorization: `Basic ${Buffer.from(USER).toString('base64')}` };

let work: Awaited<ReturnType<typeof tempDir>>;
let serve: ChildProcess;
let host: string;
let store: string;

beforeAll(async () => {
  work = await tempDir();
  store = join(work.dir, 'store');
  const htpasswd = join(work.dir, 'htpasswd');
  await writeFile(htpasswd, `bob:${bcrypt.hashSync('hunter2', 10)}\n`);
  const port = await freePort();
  host = `127.0.0.1:${port}`;
  serve = spawn(ACINSTALL, ['serve', '--store', store, '--listen', host, '--workers', '1', '--htpasswd', htpasswd, '--quiet'], {
    stdio: 'ignore',
  });
  for (let i = 0; i < 300; i++) {
    if ((await fetch(`http://${host}/v2/`).then((r) => r.status, () => 0)) === 401) return;
    await sleep(100);
  }
  throw new Error('acinstall serve did not start');
});

afterAll(async () => {
  if (serve) await stopChild(serve, 5000);
  await work?.cleanup();
});

function acinstall(...args: string[]): Promise<{ stdout: string }> {
  return run(ACINSTALL, [...args, '--store', store], { timeout: 120_000 });
}

/** An OCI layout holding one image, as skopeo reads it (`oci:<dir>:img`). */
async function layout(img: SampleImage): Promise<string> {
  const dir = join(work.dir, 'layouts', `${img.repository.replace(/\//g, '_')}-${img.tag}`);
  await mkdir(join(dir, 'blobs/sha256'), { recursive: true });
  for (const d of [...img.blobs.map((b) => b.data), ...img.manifests.map((m) => m.data), img.top.data]) {
    await writeFile(join(dir, 'blobs/sha256', sha256(d).slice(7)), d);
  }
  await writeFile(join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  const entry = { mediaType: img.top.mediaType, digest: img.top.digest, size: img.top.data.length, annotations: { [ANNOTATION_REF_NAME]: 'img' } };
  await writeFile(join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [entry] }));
  return `oci:${dir}:img`;
}

async function push(img: SampleImage): Promise<void> {
  await run('skopeo', ['copy', '--all', '--preserve-digests', '--dest-tls-verify=false', '--dest-creds', USER, await layout(img), `docker://${host}/${img.repository}:${img.tag}`]);
}

/** Pulls an image whole (skopeo checks every digest it reads); the error says what is missing. */
async function pull(ref: string): Promise<void> {
  const into = join(work.dir, 'pulled');
  await rm(into, { recursive: true, force: true });
  await run('skopeo', ['copy', '--all', '--src-tls-verify=false', `docker://${host}/${ref}`, `oci:${into}:x`]);
}

const inStore = (digest: string) => existsSync(join(store, 'blobs/sha256', digest.slice(7)));
const digestsOf = (img: SampleImage) => [img.top.digest, ...img.manifests.map((m) => m.digest), ...img.blobs.map((b) => b.descriptor.digest)];

describe('acinstall gc after a multi-arch index is deleted by digest', () => {
  it('removes its per-platform manifests and the layers only they used; a layer another tagged image shares stays and that image pulls whole; says what it spared for age', async () => {
    const shared = await buildLayer([{ path: 'shared.bin', content: noise('shared', 64 * 1024) }]);
    const multi = buildIndexImage('gc/multi', '1', {
      amd64: [shared, await buildLayer([{ path: 'amd64.bin', content: noise('amd64', 32 * 1024) }])],
      arm64: [shared, await buildLayer([{ path: 'arm64.bin', content: noise('arm64', 32 * 1024) }])],
    });
    const keep = buildSingleImage('gc/keep', '1', 'amd64', [shared, await buildLayer([{ path: 'keep.bin', content: 'kept' }])]);
    // A tag moved to another index: the first stays untagged but not deleted, pullable by digest, so gc keeps it whole.
    const moved = buildIndexImage('gc/moved', '1', { amd64: [await buildLayer([{ path: 'v1', content: 'first' }])] });
    const movedAgain = buildIndexImage('gc/moved', '1', { amd64: [await buildLayer([{ path: 'v2', content: 'second' }])] });
    for (const img of [multi, keep, moved, movedAgain]) await push(img);

    const del = await fetch(`http://${host}/v2/gc/multi/manifests/${multi.top.digest}`, { method: 'DELETE', headers: AUTH });
    expect(del.status, await del.text()).toBe(202);
    // The children are still served by digest until a collection: their repository holds them.
    expect((await fetch(`http://${host}/v2/gc/multi/manifests/${multi.manifests[0].digest}`)).status).toBe(200);

    // What only the deleted index reached: itself, its two manifests, their configs and per-arch layers (not the shared layer).
    const keepDigests = new Set(digestsOf(keep));
    const leftOver = [...new Set(digestsOf(multi))].filter((d) => !keepDigests.has(d));
    expect(leftOver).toHaveLength(7);

    // Within the grace period (everything was just pushed) nothing goes, and gc says it spared them.
    const young = JSON.parse((await acinstall('gc', '--json')).stdout);
    expect(young).toMatchObject({ event: 'gc', dryRun: false, graceMinutes: 60, manifests: 0, blobs: 0, spared: leftOver.length });
    expect((await acinstall('gc')).stdout).toContain(`spared ${leftOver.length} blobs nothing needs, used within the last 60 minutes`);
    for (const d of leftOver) expect(inStore(d), d).toBe(true);

    // A dry run with no grace counts and changes nothing.
    const dry = JSON.parse((await acinstall('gc', '--grace', '0', '--dry-run', '--json')).stdout);
    expect(dry).toMatchObject({ dryRun: true, graceMinutes: 0, manifests: 2, blobs: leftOver.length, spared: 0 });
    for (const d of leftOver) expect(inStore(d), d).toBe(true);

    const done = (await acinstall('gc', '--grace', '0')).stdout;
    expect(done).toMatch(new RegExp(`^removed ${leftOver.length} blobs \\(.+\\) and 0 abandoned uploads\\n`));
    expect(done).toContain('removed 2 manifests from repositories: untagged children of deleted indexes');
    expect(done).toContain('spared 0 blobs');
    for (const d of leftOver) expect(inStore(d), `${d} is still in the store`).toBe(false);
    for (const m of multi.manifests) expect((await fetch(`http://${host}/v2/gc/multi/manifests/${m.digest}`)).status).toBe(404);

    // The shared layer stays, and the image still tagged pulls whole; so does the untagged index by digest.
    expect(inStore(shared.descriptor.digest)).toBe(true);
    await pull('gc/keep:1');
    await pull(`gc/moved@${moved.top.digest}`);
    await pull('gc/moved:1');
    // The store agrees with its index (verify exits 1 on any problem).
    await acinstall('verify');
  }, 300_000); // six CLI starts and five skopeo runs: minutes on a busy machine
});

describe('gc and an index on its way in or on its way out', () => {
  it('spares the children a push is about to name in an index, and keeps a deleted index while a child it names is spared', async () => {
    const root = join(work.dir, 'in-process');
    const reg = await startRegistry({ storeRoot: root, listen: '127.0.0.1:0', htpasswd: join(work.dir, 'htpasswd') });
    const store = await ContentStore.open(root);
    const db = new IndexDb(root);
    const put = (path: string, body: Buffer, type?: string) =>
      fetch(`${reg.url}${path}`, { method: path.includes('/manifests/') ? 'PUT' : 'POST', body: new Uint8Array(body), headers: { ...AUTH, 'content-type': type ?? 'application/octet-stream' } });
    const pushParts = async (repo: string, img: SampleImage) => {
      for (const b of img.blobs) expect((await put(`/v2/${repo}/blobs/uploads/?digest=${b.descriptor.digest}`, b.data)).status).toBe(201);
      for (const m of img.manifests) expect((await put(`/v2/${repo}/manifests/${m.digest}`, m.data, m.mediaType)).status).toBe(201);
    };
    /** As if pushed two days ago: past any grace period. */
    const age = async (digests: string[]) => {
      for (const d of digests) await utimes(store.path(d as `sha256:${string}`), new Date(Date.now() - 2 * 86400_000), new Date(Date.now() - 2 * 86400_000));
      const raw = new Database(join(root, 'index.db'));
      raw.prepare('UPDATE blob_links SET linked_ms = 0').run();
      raw.close();
    };
    try {
      const img = buildIndexImage('x', '1', {
        amd64: [await buildLayer([{ path: 'a', content: 'amd64 only' }])],
        arm64: [await buildLayer([{ path: 'b', content: 'arm64 only' }])],
      });
      const all = digestsOf(img);
      await pushParts('gc/a', img);
      expect((await put('/v2/gc/a/manifests/1', img.top.data, img.top.mediaType)).status).toBe(201);
      await age(all);

      // The same image pushed to another repository: its children arrive first, orphans there (the
      // index that names them is not in gc/b yet) but just used, so a collection now keeps them...
      await pushParts('gc/b', img);
      expect(await collectGarbage(store, db)).toMatchObject({ manifests: 0, blobs: 0 });
      // ...and the index that follows finds them.
      const index = await put('/v2/gc/b/manifests/1', img.top.data, img.top.mediaType);
      expect(index.status, await index.text()).toBe(201);

      // Deleted from both; one child used again lately (a pull by a node, say, or a push).
      for (const repo of ['gc/a', 'gc/b']) expect((await fetch(`${reg.url}/v2/${repo}/manifests/${img.top.digest}`, { method: 'DELETE', headers: AUTH })).status).toBe(202);
      await age(all);
      const [recent, old] = img.manifests;
      await store.touch(recent.digest);
      const first = await collectGarbage(store, db);
      // The old child's rows go (one per repository) with its config and layer; the recent one stays
      // with what it reaches, and so does the index: its record is what makes the recent child an orphan.
      expect(first).toMatchObject({ manifests: 2, blobs: 3 });
      expect(first.spared).toBe(4); // the index, the recent child, its config and its layer
      expect(await store.has(img.top.digest)).toBe(true);
      expect(await store.has(old.digest)).toBe(false);

      // Once the recent child is old too, everything the index left goes.
      await age([recent.digest]);
      expect(await collectGarbage(store, db)).toMatchObject({ manifests: 2, blobs: 4, spared: 0 });
      for (const d of all) expect(await store.has(d as `sha256:${string}`), d).toBe(false);
    } finally {
      db.close();
      await reg.close();
    }
  });
});
