import { describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { readdir, readFile, writeFile, mkdir, open } from 'node:fs/promises';
import { createHash, randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';
import { bundle } from '../../packer/index.js';
import { parsePlatformList } from '../../arch/platform.js';
import { sha256 } from '../../oci/digest.js';
import { freePort } from '../../demo/source-registry.js';
import { runCli, silent } from '../helpers/env.js';
import { imageRef, useFixtureRegistry, writeManifest } from '../helpers/fixtures.js';

const src = useFixtureRegistry('errors');

async function storeContents(cache: string) {
  const blobs = existsSync(join(cache, 'blobs/sha256')) ? await readdir(join(cache, 'blobs/sha256')) : [];
  const ingest = existsSync(join(cache, 'ingest')) ? await readdir(join(cache, 'ingest')) : [];
  return { blobs, ingest };
}

describe('bad input and bad sources', () => {
  it('rejects a corrupted source blob and stores nothing of it', async () => {
    // Corrupt the arm64 layer of db inside the registry's own storage: the registry serves it as is.
    const layer = src.fx.db.blobs.find((b) => b.descriptor.size > 10_000 && b.descriptor.digest !== src.fx.base.descriptor.digest)!;
    const hex = layer.descriptor.digest.slice(7);
    const file = join(src.registry.dir, 'data/docker/registry/v2/blobs/sha256', hex.slice(0, 2), hex, 'data');
    const bytes = await readFile(file);
    bytes[bytes.length >> 1] ^= 0x01;
    await writeFile(file, bytes);

    const dir = join(src.work.dir, 'corrupt');
    const m = await writeManifest(dir, { images: [imageRef(src.host, src.fx.db)] });
    const cache = join(dir, 'cache');
    const out = join(dir, 'out.tar.zst');
    await expect(
      bundle({ manifestFile: m, platforms: parsePlatformList('amd64,arm64'), cacheDir: cache, reporter: silent, sourceDateEpoch: 0, out }),
    ).rejects.toMatchObject({ code: 'DIGEST_MISMATCH', message: expect.stringContaining(`${imageRef(src.host, src.fx.db)}`) });
    const store = await storeContents(cache);
    expect(store.blobs).not.toContain(hex);
    expect(store.ingest).toEqual([]);
    expect(existsSync(out)).toBe(false);
    expect((await readdir(dir)).filter((n) => n.startsWith('out.tar.zst'))).toEqual([]);
  });

  it('reads a local binary only from a regular file, up to its size: a device is refused at once, the cache left empty', async () => {
    const dir = join(src.work.dir, 'device');
    const m = await writeManifest(dir, { binaries: [{ name: 'zeros', version: 'v1', url: 'file:///dev/zero', sha256: 'a'.repeat(64), install: '/usr/bin/zeros' }] });
    const cache = join(dir, 'cache');
    const started = Date.now();
    await expect(
      bundle({ manifestFile: m, platforms: parsePlatformList('amd64'), cacheDir: cache, reporter: silent, sourceDateEpoch: 0, out: join(dir, 'out.tar.zst') }),
    ).rejects.toMatchObject({ code: 'BAD_URL', message: expect.stringContaining('/dev/zero is not a regular file') });
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(await storeContents(cache)).toEqual({ blobs: [], ingest: [] });
  });

  it('Ctrl-C during a bundle leaves no partial file, says what was kept, and exits 130', async () => {
    const dir = join(src.work.dir, 'interrupted');
    await mkdir(dir, { recursive: true });
    const big = join(dir, 'big-amd64');
    const fh = await open(big, 'w');
    const hash = createHash('sha256');
    for (let i = 0; i < 32; i++) {
      const chunk = randomBytes(4 << 20); // 128 MiB in all: a few seconds of hashing and zstd
      hash.update(chunk);
      await fh.write(chunk);
    }
    await fh.close();
    const m = await writeManifest(dir, { binaries: [{ name: 'big', version: 'v1', url: 'big-{arch}', sha256: { amd64: hash.digest('hex') }, install: '/usr/bin/big' }] });
    const out = join(dir, 'o.tar.zst');
    const child = runCli(['bundle', '-f', m, '--arch', 'amd64', '--cache', join(dir, 'cache'), '-o', out], { timeoutMs: 60_000 });
    for (let i = 0; i < 200 && !(await readdir(dir)).some((n) => n.startsWith('o.tar.zst.partial-')); i++) await sleep(25);
    child.kill('SIGINT');
    const res = await child;
    expect(res.code).toBe(130);
    expect(res.stderr).toContain(`interrupted: nothing was written at ${out}`);
    expect((await readdir(dir)).filter((n) => n.startsWith('o.tar.zst'))).toEqual([]);
  });

  it('rejects a binary whose sha256 does not match, naming it', async () => {
    const dir = join(src.work.dir, 'badsha');
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'tool-amd64'), 'real content\n');
    const wrong = 'a'.repeat(64);
    const m = await writeManifest(dir, { binaries: [{ name: 'tool', version: 'v1', url: 'tool-{arch}', sha256: { amd64: wrong }, install: '/usr/bin/tool' }] });
    const cache = join(dir, 'cache');
    const out = join(dir, 'out.tar.zst');
    const res = await runCli(['bundle', '-f', m, '--arch', 'amd64', '--cache', cache, '-o', out]);
    expect(res.code).toBe(1);
    expect(res.stderr).toMatch(/binary tool v1 for amd64: .*tool-amd64 does not match its pinned sha256 a{64}/);
    expect(res.stderr).not.toMatch(/at .*\.ts:\d+/); // no stack trace without --debug
    expect((await storeContents(cache)).blobs).not.toContain(sha256('real content\n').slice(7));
    expect(existsSync(out)).toBe(false);
  });

  it('refuses an unpinned binary with a hint', async () => {
    const dir = join(src.work.dir, 'unpinned');
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'tool-amd64'), 'x');
    const m = await writeManifest(dir, { binaries: [{ name: 'tool', version: 'v1', url: 'tool-{arch}', install: '/usr/bin/tool' }] });
    const res = await runCli(['bundle', '-f', m, '--arch', 'amd64', '--cache', join(dir, 'cache'), '-o', join(dir, 'o.tar.zst')]);
    expect(res.code).toBe(1);
    expect(res.stderr).toContain(`has no sha256: add sha256: {amd64: <hex>} to the manifest, or pin what file://${join(dir, 'tool-amd64')} serves now with: acpack lock -f ${m} --arch amd64`);
  });

  it.each([
    ['malformed YAML', 'apiVersion: acpack/v1\nkind: Bundle\nmetadata: {name: x, version: v1\nspec: {}\n', /m\.yaml:\d+:\d+: /],
    ['an unknown field', 'apiVersion: acpack/v1\nkind: Bundle\nmetadata: {name: x, version: v1}\nspec:\n  imagez: [a]\n', /m\.yaml:5:3: unknown field "imagez" in spec/],
    ['a bad reference', 'apiVersion: acpack/v1\nkind: Bundle\nmetadata: {name: x, version: v1}\nspec:\n  images:\n    - "Nginx:latest"\n', /m\.yaml:6:7: "Nginx:latest" is not a valid image reference/],
    ['a malformed sha256', 'apiVersion: acpack/v1\nkind: Bundle\nmetadata: {name: x, version: v1}\nspec:\n  binaries:\n    - {name: a, version: v1, url: "a-{arch}", install: /usr/bin/a, sha256: {amd64: xyz}}\n', /m\.yaml:6:\d+: .*sha256/],
    ['a wrong kind', 'apiVersion: acpack/v1\nkind: Cluster\nmetadata: {name: x, version: v1}\nspec: {}\n', /m\.yaml:2:7: kind must be "Bundle"/],
  ])('reports %s with its location and writes nothing', async (_what, text, pattern) => {
    const dir = join(src.work.dir, `bad-${sha256(text).slice(7, 15)}`);
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'm.yaml'), text);
    const out = join(dir, 'o.tar.zst');
    const res = await runCli(['bundle', '-f', join(dir, 'm.yaml'), '--arch', 'amd64', '--cache', join(dir, 'cache'), '-o', out]);
    expect(res.code).toBe(1);
    expect(res.stderr).toMatch(pattern);
    expect(existsSync(out)).toBe(false);
  });

  it('reports an unreachable source clearly and writes nothing', async () => {
    const port = await freePort();
    const dir = join(src.work.dir, 'unreachable');
    const m = await writeManifest(dir, { images: [`127.0.0.1:${port}/x/y:1`] });
    const out = join(dir, 'o.tar.zst');
    const res = await runCli(['bundle', '-f', m, '--arch', 'amd64', '--cache', join(dir, 'cache'), '-o', out]);
    expect(res.code).toBe(1);
    expect(res.stderr).toMatch(new RegExp(`127\\.0\\.0\\.1:${port}.*ECONNREFUSED.*attempts`));
    expect(existsSync(out)).toBe(false);
  });

  it('names a tag that does not exist', async () => {
    const dir = join(src.work.dir, 'notag');
    const m = await writeManifest(dir, { images: [`${src.host}/library/web:9.9`] });
    const res = await runCli(['bundle', '-f', m, '--arch', 'amd64', '--cache', join(dir, 'cache'), '-o', join(dir, 'o.tar.zst')]);
    expect(res.code).toBe(1);
    expect(res.stderr).toContain(`${src.host}/library/web:9.9: manifest 9.9 not found`);
  });
});
