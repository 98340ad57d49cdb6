import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { request } from 'node:http';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import bcrypt from 'bcryptjs';
import { startRegistry, type RunningRegistry } from '../../registry/index.js';
import { freePort, startSourceRegistry, type SourceRegistry } from '../../demo/source-registry.js';
import { stopChild } from '../../demo/processes.js';
import { sha256 } from '../../oci/digest.js';
import { MT } from '../../oci/media-types.js';
import { ACINSTALL, tempDir } from '../helpers/env.js';

/**
 * The registry to the letter of the distribution spec, where the spec leaves room measured against
 * the real CNCF distribution 2.8 (Debian's docker-registry) answering the same requests.
 */
let work: Awaited<ReturnType<typeof tempDir>>;
let reg: RunningRegistry;
let dist: SourceRegistry;
let htpasswd: string;
const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
const auth = { authorization: basic('bob', 'hunter2') };
const ours = (p: string) => `${reg.url}${p}`;
const theirs = (p: string) => `http://${dist.host}${p}`;
const REPOS = 102; // more than distribution's catalog page of 100

/** Pushes a one-config image (POST then PUT ?digest=, as both registries take it) and returns its digest. */
async function pushImage(base: string, repo: string, tag: string, extra: Record<string, unknown> = {}): Promise<string> {
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }));
  const start = await fetch(`${base}/v2/${repo}/blobs/uploads/`, { method: 'POST', headers: auth });
  expect(start.status, `POST upload to ${repo}`).toBe(202);
  const loc = new URL(start.headers.get('location')!, base);
  loc.searchParams.set('digest', sha256(config));
  const put = await fetch(loc, { method: 'PUT', body: new Uint8Array(config), headers: { ...auth, 'content-type': 'application/octet-stream' } });
  expect(put.status, `PUT blob to ${repo}`).toBe(201);
  const manifest = Buffer.from(
    JSON.stringify({ schemaVersion: 2, mediaType: MT.ociManifest, config: { mediaType: MT.ociConfig, digest: sha256(config), size: config.length }, layers: [], ...extra }),
  );
  const res = await fetch(`${base}/v2/${repo}/manifests/${tag}`, { method: 'PUT', body: new Uint8Array(manifest), headers: { ...auth, 'content-type': MT.ociManifest } });
  expect(res.status, `PUT manifest ${repo}:${tag}`).toBe(201);
  return sha256(manifest);
}

async function inBatches<T>(items: T[], size: number, fn: (x: T) => Promise<unknown>): Promise<void> {
  for (let i = 0; i < items.length; i += size) await Promise.all(items.slice(i, i + size).map(fn));
}

beforeAll(async () => {
  work = await tempDir();
  htpasswd = join(work.dir, 'htpasswd');
  await writeFile(htpasswd, `bob:${bcrypt.hashSync('hunter2', 10)}\n`);
  reg = await startRegistry({ storeRoot: join(work.dir, 'store'), listen: '127.0.0.1:0', htpasswd });
  dist = await startSourceRegistry(join(work.dir, 'distribution'));
  for (const base of [ours(''), theirs('')]) {
    for (const tag of ['v1', 'a', 'b', 'c', 'd']) await pushImage(base, 'spec/app', tag);
    await inBatches(
      Array.from({ length: REPOS - 1 }, (_, i) => `spec/r${String(i).padStart(3, '0')}`),
      8,
      (repo) => pushImage(base, repo, 'v1'),
    );
  }
}, 120_000);

afterAll(async () => {
  await reg?.close();
  await dist?.stop();
  await work?.cleanup();
});

async function answer(url: string, method = 'GET', headers: Record<string, string> = {}) {
  const res = await fetch(url, { method, headers });
  const text = await res.text();
  let body: any; // eslint-disable-line @typescript-eslint/no-explicit-any
  try {
    body = JSON.parse(text);
  } catch {
    body = text;
  }
  return { status: res.status, body, link: res.headers.get('link'), type: res.headers.get('content-type') };
}

describe('a manifest reference that is neither a tag nor a digest', () => {
  const notTags = ['.INVALID_MANIFEST_NAME', 'a'.repeat(129), '-v1', 'v1+build'];
  // distribution routes these to its tag lookup and fails in the storage driver (500): we answer as for any invalid reference.
  const badDigests = ['sha256:abc', 'md5:abc', `sha256:${'A'.repeat(64)}`, `sha256:${'0'.repeat(63)}`];

  it('is 404 MANIFEST_UNKNOWN on a repository that exists and on one that does not, as distribution answers', async () => {
    for (const ref of notTags) {
      for (const repo of ['spec/app', 'spec/nothing-here']) {
        for (const method of ['GET', 'HEAD']) {
          const them = await answer(theirs(`/v2/${repo}/manifests/${ref}`), method);
          const us = await answer(ours(`/v2/${repo}/manifests/${ref}`), method);
          expect(them.status, `distribution: ${method} ${repo}:${ref}`).toBe(404);
          expect(us.status, `${method} ${repo}:${ref}`).toBe(them.status);
          if (method === 'GET') expect(us.body.errors[0].code, `${repo}:${ref}`).toBe('MANIFEST_UNKNOWN');
        }
      }
    }
  });

  it('is the same 404 for a malformed digest, where distribution fails with a 500', async () => {
    for (const ref of badDigests) {
      expect((await answer(theirs(`/v2/spec/app/manifests/${ref}`))).status, `distribution: ${ref}`).toBe(500);
      for (const repo of ['spec/app', 'spec/nothing-here']) {
        const us = await answer(ours(`/v2/${repo}/manifests/${ref}`));
        expect(us.status, `${repo}@${ref}`).toBe(404);
        expect(us.body.errors[0].code, `${repo}@${ref}`).toBe('MANIFEST_UNKNOWN');
      }
    }
    // A well-formed digest of another algorithm names nothing here either: 404 on both.
    const sha512 = `sha512:${'0'.repeat(128)}`;
    expect((await answer(theirs(`/v2/spec/app/manifests/${sha512}`))).status).toBe(404);
    expect((await answer(ours(`/v2/spec/app/manifests/${sha512}`))).body.errors[0].code).toBe('MANIFEST_UNKNOWN');
  });
});

describe('tag listing with odd n values', () => {
  const all = ['a', 'b', 'c', 'd', 'v1'];

  it('answers 200 with every tag where distribution 2.8 ignores n, and never 500', async () => {
    // 2.8 ignores n altogether (and lists unsorted); the spec's paging applies only to a real count.
    for (const q of ['n=1e308', 'n=-1', 'n=abc', 'n=', 'n=1.5', 'n=0x2', 'n=99999999999999999999', 'n=9223372036854775807', 'n=100000', 'n=2147483648']) {
      const them = await answer(theirs(`/v2/spec/app/tags/list?${q}`));
      const us = await answer(ours(`/v2/spec/app/tags/list?${q}`));
      expect(them.status, `distribution: ${q}`).toBe(200);
      expect(us.status, q).toBe(200);
      expect([...them.body.tags].sort(), `distribution: ${q}`).toEqual(all);
      expect(us.body.tags, q).toEqual(all);
      expect(us.link, q).toBeNull();
    }
  });

  it('pages a real count, n=0 giving none', async () => {
    expect((await answer(ours('/v2/spec/app/tags/list?n=0'))).body.tags).toEqual([]);
    const two = await answer(ours('/v2/spec/app/tags/list?n=2'));
    expect(two.body.tags).toEqual(['a', 'b']);
    expect(two.link).toBe('</v2/spec/app/tags/list?n=2&last=b>; rel="next"');
    // Go's Atoi takes a sign and leading zeros; the first of repeated values counts.
    expect((await answer(ours('/v2/spec/app/tags/list?n=%2B2'))).body.tags).toEqual(['a', 'b']);
    expect((await answer(ours('/v2/spec/app/tags/list?n=02&last=b'))).body.tags).toEqual(['c', 'd']);
    expect((await answer(ours('/v2/spec/app/tags/list?n=1&n=3'))).body.tags).toEqual(['a']);
  });
});

describe('the catalog with odd n values', () => {
  it('pages as distribution 2.8 does: 100 by default, 400 PAGINATION_NUMBER_INVALID past 1000, never 500', async () => {
    const queries = ['', 'n=1e308', 'n=-1', 'n=abc', 'n=', 'n=0', 'n=1.5', 'n=0x2', 'n=02', 'n=2&n=3', 'n=%2B2', 'n=1000', 'n=1001', 'n=100000', 'n=99999999999999999999', 'n=9223372036854775807'];
    for (const q of queries) {
      const them = await answer(theirs(`/v2/_catalog?${q}`));
      const us = await answer(ours(`/v2/_catalog?${q}`));
      expect(us.status, q).toBe(them.status);
      if (them.status === 200) {
        expect(us.body.repositories.length, q).toBe(them.body.repositories.length);
        expect(!!us.link, q).toBe(!!them.link);
      } else {
        expect(us.body.errors[0].code, q).toBe(them.body.errors[0].code);
      }
    }
    // The two really did have more than one page to give.
    expect((await answer(theirs('/v2/_catalog?n=1000'))).body.repositories).toHaveLength(REPOS);
    // The Link leads on to the rest.
    const first = await answer(ours('/v2/_catalog'));
    const rest = await answer(ours(first.link!.slice(1, first.link!.indexOf('>'))));
    expect([...first.body.repositories, ...rest.body.repositories]).toHaveLength(REPOS);
    expect(rest.link).toBeNull();
  });
});

describe('the referrers API', () => {
  it('answers exactly application/vnd.oci.image.index.v1+json, and never 404', async () => {
    const subject = await pushImage(ours(''), 'spec/signed', 'v1');
    const sig = await pushImage(ours(''), 'spec/signed', 'sig', { artifactType: 'application/vnd.example.sig', subject: { mediaType: MT.ociManifest, digest: subject, size: 1 } });
    const listed = await answer(ours(`/v2/spec/signed/referrers/${subject}`));
    expect(listed.status).toBe(200);
    expect(listed.type).toBe('application/vnd.oci.image.index.v1+json');
    expect(listed.body.manifests.map((m: { digest: string }) => m.digest)).toEqual([sig]);
    // A subject or a repository this registry does not hold has no referrers: an empty index, not 404
    // (a client reads 404 as "no referrers API" and falls back to tags).
    for (const p of [`/v2/spec/signed/referrers/sha256:${'1'.repeat(64)}`, `/v2/spec/nothing-here/referrers/${subject}`]) {
      const none = await answer(ours(p));
      expect(none.status, p).toBe(200);
      expect(none.type, p).toBe('application/vnd.oci.image.index.v1+json');
      expect(none.body, p).toEqual({ schemaVersion: 2, mediaType: MT.ociIndex, manifests: [] });
    }
    expect((await answer(ours('/v2/spec/signed/referrers/sha256:abc'))).status).toBe(400);
  });
});

describe('/metrics', () => {
  it('needs a user when pulls do, and is read anonymously when pulls are', async () => {
    const closed = await startRegistry({ storeRoot: join(work.dir, 'closed'), listen: '127.0.0.1:0', htpasswd, authenticatedPull: true });
    try {
      const anon = await fetch(`${closed.url}/metrics`);
      expect(anon.status).toBe(401);
      expect(anon.headers.get('www-authenticate')).toMatch(/^Basic /);
      const user = await fetch(`${closed.url}/metrics`, { headers: auth });
      expect(user.status).toBe(200);
      expect(await user.text()).toContain('acpack_registry_requests_total');
    } finally {
      await closed.close();
    }
    expect((await fetch(ours('/metrics'))).status).toBe(200);
  });
});

describe('password guessing', () => {
  it('counts an attempt before its bcrypt compare: 20 parallel guesses get 10 compares, the rest 429', async () => {
    const r = await startRegistry({ storeRoot: join(work.dir, 'guess'), listen: '127.0.0.1:0', htpasswd });
    try {
      const statuses = await Promise.all(
        Array.from({ length: 20 }, (_, i) => fetch(`${r.url}/v2/`, { headers: { authorization: basic('bob', `guess-${i}`) } }).then((x) => x.status)),
      );
      expect(statuses.filter((s) => s === 401)).toHaveLength(10);
      expect(statuses.filter((s) => s === 429)).toHaveLength(10);
      expect((await fetch(`${r.url}/v2/`, { headers: auth })).status).toBe(429);
    } finally {
      await r.close();
    }
  });

  it('lets one client open many connections at once with the right password', async () => {
    const r = await startRegistry({ storeRoot: join(work.dir, 'many'), listen: '127.0.0.1:0', htpasswd });
    try {
      const statuses = await Promise.all(Array.from({ length: 30 }, () => fetch(`${r.url}/v2/`, { headers: auth }).then((x) => x.status)));
      expect(statuses.every((s) => s === 200)).toBe(true);
    } finally {
      await r.close();
    }
  });

  it('takes as long for a user that does not exist as for a wrong password of one that does', async () => {
    const r = await startRegistry({ storeRoot: join(work.dir, 'timing'), listen: '127.0.0.1:0', htpasswd });
    const time = async (user: string, password: string) => {
      const t0 = performance.now();
      expect((await fetch(`${r.url}/v2/`, { headers: { authorization: basic(user, password) } })).status).toBe(401);
      return performance.now() - t0;
    };
    try {
      const known: number[] = [];
      const unknown: number[] = [];
      for (let i = 0; i < 3; i++) {
        known.push(await time('bob', `wrong-${i}`));
        unknown.push(await time(`nobody-${i}`, `wrong-${i}`));
      }
      const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[1];
      const ratio = median(unknown) / median(known);
      expect(ratio, `unknown user ${median(unknown).toFixed(1)} ms, known user ${median(known).toFixed(1)} ms`).toBeGreaterThan(0.5);
      expect(ratio, `unknown user ${median(unknown).toFixed(1)} ms, known user ${median(known).toFixed(1)} ms`).toBeLessThan(2);
    } finally {
      await r.close();
    }
  });
});

/** One request on a connection of its own, so the primary hands it to the next worker. */
function statusOnNewConnection(url: string, authorization: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent: false, headers: { authorization, connection: 'close' } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('acinstall serve with two workers', () => {
  let child: ChildProcess | undefined;
  let base: string;

  beforeAll(async () => {
    const port = await freePort();
    base = `http://127.0.0.1:${port}`;
    const args = ['serve', '--store', join(work.dir, 'served'), '--listen', `127.0.0.1:${port}`, '--htpasswd', htpasswd, '--workers', '2', '--quiet'];
    child = spawn(ACINSTALL, [...args], { stdio: 'ignore' });
    for (let i = 0; i < 300; i++) {
      if ((await fetch(`${base}/v2/`).then((r) => r.status, () => 0)) === 401) return;
      await sleep(100);
    }
    throw new Error('acinstall serve did not start');
  });

  afterAll(async () => {
    if (child) await stopChild(child, 5000);
  });

  it('counts failed logins once for every worker: the 11th guess is refused, whichever worker takes it', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 14; i++) statuses.push(await statusOnNewConnection(`${base}/v2/`, basic('bob', `guess-${i}`)));
    expect(statuses).toEqual([...Array(10).fill(401), ...Array(4).fill(429)]);
    expect(await statusOnNewConnection(`${base}/v2/`, auth.authorization)).toBe(429);
  });
});
