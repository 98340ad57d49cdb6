import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdir, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import tar from 'tar-stream';
import { runAcinstall, runCli, tempDir, withRegistry } from '../helpers/env.js';
import { buildFixture, imageRef, pushFixture, pushSmallImage, writeManifest, type Fixture } from '../helpers/fixtures.js';
import { zstdCompress } from '../helpers/zstd-stream.js';
import { verifyBundle } from '../../oci/bundle-verify.js';
import { OCI_LAYOUT_BYTES, type BundledRuntime } from '../../oci/bundle-format.js';
import { readDescriptor } from '../../oci/bundle-reader.js';
import { hashFile } from '../../oci/digest.js';
import { siteExecutable } from '../../runtime/site-runtime.js';

const run = promisify(execFile);
let env: Awaited<ReturnType<typeof withRegistry>>;
let fx: Fixture;
let work: Awaited<ReturnType<typeof tempDir>>;
let bundlePath: string;
let bundleStdout = "";

beforeAll(async () => {
  env = await withRegistry();
  fx = await buildFixture('cli');
  await pushFixture(env.registry.host, fx);
  work = await tempDir();
  const m = await writeManifest(work.dir, { images: [imageRef(env.registry.host, fx.web), imageRef(env.registry.host, fx.db)] });
  bundlePath = join(work.dir, 'b.tar.zst');
  const res = await runCli(['bundle', '-f', m, '--arch', 'amd64,arm64', '--cache', join(work.dir, 'cache'), '-o', bundlePath, '--json']);
  expect(res.code, res.stderr).toBe(0);
  bundleStdout = res.stdout;
});

afterAll(async () => {
  await env?.cleanup();
  await work?.cleanup();
});

/** Writes a zstd tar with the given entries, for hostile-bundle cases. */
async function craft(name: string, entries: { header: Partial<tar.Header>; data?: Buffer }[]): Promise<string> {
  const pack = tar.pack();
  const out = join(work.dir, name);
  const chunks: Buffer[] = [];
  const z = zstdCompress();
  z.on('data', (c: Buffer) => chunks.push(c));
  const done = new Promise((r) => z.on('end', r));
  pack.pipe(z);
  for (const e of entries) pack.entry(e.header as tar.Header, e.data ?? '');
  pack.finalize();
  await done;
  await writeFile(out, Buffer.concat(chunks));
  return out;
}

describe('acpack CLI', () => {
  it('--json prints one JSON event per line, ending with the summary', () => {
    const lines = bundleStdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.map((l) => l.event)).toContain('phase');
    const summary = lines.at(-1);
    expect(summary.event).toBe('summary');
    expect(summary.images).toBe(2);
    expect(summary.imagePlatforms).toBe(4);
  });

  it("writes acinstall's executable for each bundled arch beside -o, as npm run build made it, and the launcher, and says so", async () => {
    const summary = JSON.parse(bundleStdout.trim().split('\n').at(-1)!);
    const beside = ['amd64', 'arm64'].map((arch) => join(work.dir, `acinstall-linux-${arch}`));
    expect(summary.executables).toEqual([...beside, join(work.dir, 'acinstall')]);
    for (const [i, arch] of (['amd64', 'arm64'] as const).entries()) {
      expect((await stat(beside[i])).mode & 0o777).toBe(0o755);
      expect((await hashFile(beside[i])).digest).toBe((await hashFile(siteExecutable(arch))).digest);
    }
    expect((await stat(join(work.dir, 'acinstall'))).mode & 0o777).toBe(0o755);
    // Nothing half written beside them, and no runtime in a bundle that lays no cluster down.
    expect((await readdir(work.dir)).filter((f) => f.includes('partial'))).toEqual([]);
    expect(summary.runtime).toBeUndefined();
    await mkdir(join(work.dir, 'text'));
    const one = await runCli(['bundle', '-f', join(work.dir, 'm.yaml'), '--arch', 'amd64', '--cache', join(work.dir, 'cache'), '-o', join(work.dir, 'text', 'b.tar.zst')], { timeoutMs: 120_000 });
    expect(one.code, one.stderr).toBe(0);
    expect(one.stdout).toContain(`wrote ${join(work.dir, 'text', 'acinstall-linux-amd64')}, ${join(work.dir, 'text', 'acinstall')}: acinstall for each arch and the launcher`);
    expect((await readdir(join(work.dir, 'text'))).sort()).toEqual(['acinstall', 'acinstall-linux-amd64', 'b.tar.zst']);
  }, 120_000);

  it('--json reports a failure as one JSON event on stdout too', async () => {
    const res = await runCli(['verify', join(work.dir, 'no-such.tar.zst'), '--json']);
    expect(res.code).toBe(1);
    const lines = res.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.at(-1)).toMatchObject({ event: 'error', code: 'NOT_FOUND', message: expect.stringContaining('no-such.tar.zst') });
  });

  it('inspect lists images with their platforms, from the header entries', async () => {
    const res = await runCli(['inspect', bundlePath]);
    expect(res.code, res.stderr).toBe(0);
    expect(res.stdout).toMatch(new RegExp(`${imageRef(env.registry.host, fx.web).replace(/\./g, '\\.')}\\s+linux/amd64,linux/arm64`));
    const json = JSON.parse((await runCli(['inspect', bundlePath, '--json'])).stdout);
    expect(json.images.map((i: { digest: string }) => i.digest).sort()).toEqual([fx.web.top.digest, fx.db.top.digest].sort());
  });

  it('inspect --sbom prints SPDX 2.3 with a package per image and platform, named by its manifest digest', async () => {
    const res = await runCli(['inspect', bundlePath, '--sbom']);
    expect(res.code, res.stderr).toBe(0);
    const doc = JSON.parse(res.stdout);
    expect(doc).toMatchObject({ spdxVersion: 'SPDX-2.3', dataLicense: 'CC0-1.0', SPDXID: 'SPDXRef-DOCUMENT', creationInfo: { creators: [expect.stringMatching(/^Tool: acpack-/)] } });
    // Each platform's manifest, as the top index of the multi-arch image lists it.
    const expected: string[] = [];
    for (const img of [fx.web, fx.db]) {
      const ref = imageRef(env.registry.host, img);
      const index = JSON.parse(img.top.data.toString());
      for (const m of index.manifests) expected.push(`${ref} linux/${m.platform.architecture} ${m.digest.slice(7)}`);
    }
    const got = doc.packages.map((p: any) => `${p.name} ${p.comment.split(' ')[0]} ${p.checksums[0].checksumValue}`);
    expect(got.sort()).toEqual(expected.sort());
    expect(doc.packages.every((p: any) => p.primaryPackagePurpose === 'CONTAINER' && /^pkg:oci\/.+@sha256%3A[a-f0-9]{64}\?.*arch=/.test(p.externalRefs[0].referenceLocator))).toBe(true);
    const ids = doc.packages.map((p: any) => p.SPDXID);
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids.every((i: string) => /^SPDXRef-[A-Za-z0-9.-]+$/.test(i))).toBe(true);
    expect(doc.relationships.map((r: any) => r.relatedSpdxElement).sort()).toEqual([...ids].sort());
  });

  it('verify passes a good bundle and fails a truncated one', async () => {
    const ok = await runCli(['verify', bundlePath]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(/OK, 15 blobs/);
    const bytes = await readFile(bundlePath);
    const cut = join(work.dir, 'cut.tar.zst');
    await writeFile(cut, bytes.subarray(0, bytes.length - 5000));
    const bad = await runCli(['verify', cut]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/error: .*cut\.tar\.zst/);
  });

  it('counts one as one, and never shows a negative saving, for a bundle of one image on one arch', async () => {
    const m = await writeManifest(work.dir, { images: [await pushSmallImage(env.registry.host, 'one/small', 'v1')] }, 'one.yaml');
    expect((await runCli(['validate', '-f', m])).stdout).toContain('(test v1: 1 image, 0 binaries, 0 charts)');
    const out = join(work.dir, 'one.tar.zst');
    const r = await runCli(['bundle', '-f', m, '--arch', 'amd64', '--cache', join(work.dir, 'cache'), '-o', out]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('test v1: 1 image, 0 binaries, 0 charts for linux/amd64');
    // Nothing is shared, and the image's index is in the bundle but not in the per-arch sum: the
    // bundle is the larger (989 bytes to 700), which once showed as "saved 0 bytes (-41%)".
    expect(r.stdout).toMatch(/\n {2}dedupe: {3}.* if stored per image and arch; saved 0 bytes \(0%\)\n/);
    const imported = await runAcinstall(['import', out, '--store', join(work.dir, 'one-store')]);
    expect(imported.stdout).toMatch(/^imported test v1: 1 reference, \d+ blobs \(\d+ new, /);
  });

  it('zstd -d and tar read the bundle too', async () => {
    const { stdout } = await run('sh', ['-c', `zstd -dc '${bundlePath}' | tar -t | head -4`]);
    expect(stdout.split('\n').slice(0, 3)).toEqual(['oci-layout', 'bundle.json', 'index.json']);
  });

  it("refuses a bundle.json whose runtime list is malformed, or names an arch twice", async () => {
    const d = (c: string) => `sha256:${c.repeat(64)}` as const;
    const rt: BundledRuntime = { arch: 'amd64', version: '0.1.0+node24.22.3', digest: d('a'), size: 1, manifest: d('b'), index: d('c'), ref: 'acpack.local/runtime/acinstall:0.1.0_node24.22.3' };
    const { size: _, ...sizeless } = rt;
    for (const [name, runtime, pattern] of [
      ['twice', [rt, rt], /bundle\.json lists acinstall's runtime for "amd64" twice/],
      ['sizeless', [sizeless], /bundle\.json runtime\[0\] has no size/],
    ] as const) {
      const json = Buffer.from(JSON.stringify({ format: 1, name: 't', version: 'v1', source: d('e'), platforms: ['linux/amd64'], images: [], binaries: [], charts: [], runtime, blobs: { count: 3, bytes: 3 } }));
      const path = await craft(`runtime-${name}.tar.zst`, [
        { header: { name: 'oci-layout', size: OCI_LAYOUT_BYTES.length }, data: OCI_LAYOUT_BYTES },
        { header: { name: 'bundle.json', size: json.length }, data: json },
      ]);
      await expect(readDescriptor(path)).rejects.toThrow(pattern);
    }
  });

  it.each([
    ['a path escaping the layout', { name: 'blobs/sha256/../../etc/passwd', size: 1, type: 'file' as const }, /not named by a sha256 digest|unexpected entry/],
    ['a symlink', { name: 'blobs/sha256/' + 'a'.repeat(64), type: 'symlink' as const, linkname: '/etc/shadow' }, /is a symlink/],
    ['an absolute path', { name: '/etc/passwd', size: 1, type: 'file' as const }, /unexpected entry/],
  ])('refuses a hostile bundle with %s', async (_what, header, pattern) => {
    await mkdir(work.dir, { recursive: true });
    const path = await craft(`hostile-${_what.replace(/\W/g, '')}.tar.zst`, [
      { header: { name: 'oci-layout', size: OCI_LAYOUT_BYTES.length }, data: OCI_LAYOUT_BYTES },
      { header, data: header.type === 'file' ? Buffer.from('x') : undefined },
    ]);
    await expect(verifyBundle(path)).rejects.toThrow(pattern);
  });
});
