import { describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { existsSync } from 'node:fs';
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { bundle } from '../../packer/index.js';
import { bundleEntries, readDescriptor } from '../../oci/bundle-reader.js';
import { verifyBundle } from '../../oci/bundle-verify.js';
import { parsePlatformList } from '../../arch/platform.js';
import { hashFile, sha256, type Digest } from '../../oci/digest.js';
import { runCli, silent } from '../helpers/env.js';
import { imageRef, useFixtureRegistry, writeManifest } from '../helpers/fixtures.js';
import { pushImage } from '../../demo/samples.js';
import { kubeadmBinary } from '../hosts/standins/kubeadm-standin.js';
import { siteExecutable } from '../../runtime/site-runtime.js';
import type { BundleDescriptor } from '../../oci/bundle-format.js';

const run = promisify(execFile);

const src = useFixtureRegistry();

async function pack(name: string, spec: Record<string, unknown>, arch: string, cache = join(src.work.dir, `${name}-cache`), o: { allowIncomplete?: boolean } = {}) {
  const file = await writeManifest(join(src.work.dir, name), spec);
  const out = join(src.work.dir, name, 'bundle.tar.zst');
  const summary = await bundle({ manifestFile: file, platforms: parsePlatformList(arch), cacheDir: cache, reporter: silent, sourceDateEpoch: 0, out, ...o });
  return { file, out, summary, cache };
}

async function blobNames(path: string): Promise<string[]> {
  const names: string[] = [];
  for await (const e of bundleEntries(path)) if (e.kind === 'blob') names.push(e.digest);
  return names;
}

/** The sha256 of blobs of the bundle once gunzipped, by their digest (one pass over the bundle). */
async function gunzippedDigests(path: string, digests: Digest[]): Promise<Map<Digest, Digest>> {
  const out = new Map<Digest, Digest>();
  for await (const e of bundleEntries(path)) {
    if (e.kind !== 'blob' || !digests.includes(e.digest)) continue;
    const copies: Buffer[] = [];
    for await (const chunk of e.chunks) copies.push(Buffer.from(chunk)); // the reader reuses its memory
    out.set(e.digest, sha256(gunzipSync(Buffer.concat(copies))));
  }
  return out;
}

// Each bundle here carries ~90 MB of runtime: given time for a busy machine.
describe('a bundle that lays a cluster down (it carries kubeadm) carries acinstall for every arch', () => {
  let first: Awaited<ReturnType<typeof pack>>;
  let d: BundleDescriptor;
  // Not complete enough for acpack's lint (no kubelet, helm or CNI): what is looked at is the runtime.
  const spec = async () => ({ images: [imageRef(src.host, src.fx.web)], binaries: [await kubeadmBinary(join(src.work.dir, 'rt-bin'))] });

  it('as an artifact whose file gunzips to the executable of that arch, listed in bundle.json', async () => {
    first = await pack('rt-a', await spec(), 'amd64,arm64', undefined, { allowIncomplete: true });
    d = await readDescriptor(first.out);
    expect(d.runtime!.map((r) => r.arch)).toEqual(['amd64', 'arm64']);
    const gunzipped = await gunzippedDigests(first.out, d.runtime!.map((r) => r.digest));
    for (const r of d.runtime!) {
      expect(r.version).toMatch(/^\d+\.\d+\.\d+\+node24\.\d+\.\d+$/);
      expect(r.ref).toBe(`acpack.local/runtime/acinstall:${r.version.replace('+', '_')}`);
      expect(gunzipped.get(r.digest)).toBe((await hashFile(siteExecutable(r.arch as 'amd64' | 'arm64'))).digest);
    }
    expect(first.summary.runtime).toEqual({ version: d.runtime![0].version, arches: d.runtime!.map((r) => ({ arch: r.arch, size: r.size })) });
    // Within the budget of 60 MB per arch.
    for (const r of d.runtime!) expect(r.size).toBeLessThan(60e6);
    await verifyBundle(first.out);
  }, 180_000);

  it('byte-identical when built again from the same manifest and sources', async () => {
    const again = await pack('rt-b', await spec(), 'amd64,arm64', undefined, { allowIncomplete: true });
    const [x, y] = await Promise.all([readFile(first.out), readFile(again.out)]);
    expect(sha256(x)).toBe(sha256(y));
  }, 180_000);

  it('acpack inspect lists it per arch', async () => {
    const r = await runCli(['inspect', first.out]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('RUNTIME (acinstall, gzipped; 2 arches)');
    const rows = r.stdout.split('\n').map((line) => line.split(/\s+/));
    for (const rt of d.runtime!) expect(rows).toContainEqual([rt.arch, rt.version, expect.stringMatching(/^[\d.]+$/), 'MB', rt.digest]);
  });
});

describe('acpack bundle against a real docker-registry', () => {
  it('stores a base layer shared by two images and two arches once', async () => {
    const { out, summary } = await pack('dedupe', { images: [imageRef(src.host, src.fx.web), imageRef(src.host, src.fx.db)] }, 'amd64,arm64');
    const names = await blobNames(out);
    expect(names.filter((d) => d === src.fx.base.descriptor.digest)).toHaveLength(1);
    expect(new Set(names).size).toBe(names.length);
    // 2 indexes + 4 manifests + 4 configs + 1 base + 4 arch layers
    expect(summary.blobs).toBe(15);
    expect(summary.imagePlatforms).toBe(4);
    // Four platform images each carry the base layer and it is stored once: 3 copies saved, less the two
    // indexes that per-image archives would not carry.
    expect(summary.undeduplicatedBytes - summary.bytes).toBe(3 * src.fx.base.descriptor.size - src.fx.web.top.data.length - src.fx.db.top.data.length);
    await verifyBundle(out);
  });

  it('keeps the original index digest when only one arch is bundled', async () => {
    const { out } = await pack('arm64-only', { images: [imageRef(src.host, src.fx.web)] }, 'arm64');
    const d = await readDescriptor(out);
    expect(d.images[0].digest).toBe(src.fx.web.top.digest);
    expect(d.images[0].platforms.map((p) => p.platform)).toEqual(['linux/arm64']);
    const names = await blobNames(out);
    expect(names).toContain(src.fx.web.top.digest);
    const amd64Manifest = src.fx.web.manifests[0].digest;
    const arm64Manifest = src.fx.web.manifests[1].digest;
    expect(names).not.toContain(amd64Manifest);
    expect(names).toContain(arm64Manifest);
    // The index bytes are the registry's, byte for byte.
    for await (const e of bundleEntries(out)) {
      if (e.kind === 'blob' && e.digest === src.fx.web.top.digest) {
        const chunks: Buffer[] = [];
        for await (const c of e.chunks) chunks.push(Buffer.from(c));
        expect(Buffer.concat(chunks).equals(src.fx.web.top.data)).toBe(true);
      }
    }
    await verifyBundle(out);
  });

  it('writes byte-identical bundles for the same manifest and sources', async () => {
    const spec = { images: [imageRef(src.host, src.fx.web), imageRef(src.host, src.fx.db)] };
    const a = await pack('det-a', spec, 'amd64,arm64');
    const b = await pack('det-b', spec, 'amd64,arm64');
    const [x, y] = await Promise.all([readFile(a.out), readFile(b.out)]);
    expect(x.length).toBeGreaterThan(0);
    expect(sha256(x)).toBe(sha256(y));
    // No kubeadm: a plain content bundle, without acinstall's runtime (and no word of it in bundle.json).
    const d = await readDescriptor(a.out);
    expect('runtime' in d).toBe(false);
    expect(a.summary.runtime).toBeUndefined();
  });

  it('is readable by skopeo as an OCI layout with the original digests', async () => {
    const { out } = await pack('skopeo', { images: [imageRef(src.host, src.fx.web)] }, 'amd64,arm64');
    const dir = join(src.work.dir, 'skopeo', 'layout');
    await mkdir(dir, { recursive: true });
    await run('sh', ['-c', `zstd -dc '${out}' | tar -x -C '${dir}'`]);
    const ref = imageRef(src.host, src.fx.web);
    const raw = await run('skopeo', ['inspect', '--raw', `oci:${dir}:${ref}`]);
    expect(sha256(raw.stdout)).toBe(src.fx.web.top.digest);
    const arm = await run('skopeo', ['--override-arch', 'arm64', 'inspect', '--config', `oci:${dir}:${ref}`]);
    expect(JSON.parse(arm.stdout).architecture).toBe('arm64');
    // skopeo can copy it out again, all arches, digests preserved.
    const copy = join(src.work.dir, 'skopeo', 'copy');
    await run('skopeo', ['copy', '--all', '--preserve-digests', `oci:${dir}:${ref}`, `oci:${copy}:x`]);
    const index = JSON.parse(await readFile(join(copy, 'index.json'), 'utf8'));
    expect(index.manifests[0].digest).toBe(src.fx.web.top.digest);
  });

  it('refuses an arch the image does not have, naming the image', async () => {
    await expect(pack('missing-arch', { images: [imageRef(src.host, src.fx.amd64Only)] }, 'amd64,arm64')).rejects.toThrow(
      new RegExp(`${imageRef(src.host, src.fx.amd64Only).replace(/[.]/g, '\\.')}.*single-platform image for linux/amd64.*linux/arm64`),
    );
    expect(existsSync(join(src.work.dir, 'missing-arch', 'bundle.tar.zst'))).toBe(false);
  });

  it('bundles a single-arch image only where the manifest says it exists', async () => {
    const spec = { images: [imageRef(src.host, src.fx.web), { ref: imageRef(src.host, src.fx.amd64Only), platforms: ['linux/amd64'] }] };
    const both = await pack('restricted', spec, 'amd64,arm64');
    const d = await readDescriptor(both.out);
    expect(d.images.find((i) => i.ref.includes('gpu'))!.platforms.map((p) => p.platform)).toEqual(['linux/amd64']);
    const armOnly = await pack('restricted-arm', spec, 'arm64');
    expect((await readDescriptor(armOnly.out)).images.map((i) => i.ref)).toEqual([imageRef(src.host, src.fx.web)]);
  });

  it('verify names a flipped byte', async () => {
    const { out } = await pack('flip', { images: [imageRef(src.host, src.fx.web)] }, 'amd64');
    // Flip a byte inside the (uncompressed) tar, then recompress: the zstd frame stays valid, the blob does not.
    const tarFile = join(src.work.dir, 'flip', 'b.tar');
    await run('sh', ['-c', `zstd -dc '${out}' > '${tarFile}'`]);
    const tarBytes = await readFile(tarFile);
    const layer = src.fx.web.blobs.find((b) => b.descriptor.size > 10_000 && b.descriptor.digest !== src.fx.base.descriptor.digest)!;
    const at = tarBytes.indexOf(layer.data.subarray(1000, 1032));
    expect(at).toBeGreaterThan(0);
    tarBytes[at] ^= 0xff;
    await writeFile(tarFile, tarBytes);
    const bad = join(src.work.dir, 'flip', 'bad.tar.zst');
    await run('sh', ['-c', `zstd -q -c '${tarFile}' > '${bad}'`]);
    await expect(verifyBundle(bad)).rejects.toThrow(new RegExp(`blob ${layer.descriptor.digest} is corrupt`));
  });

  it('bundles two tags of the same image (one digest) side by side', async () => {
    await pushImage(src.host, { ...src.fx.web, tag: 'also' });
    const { out } = await pack('two-tags', { images: [imageRef(src.host, src.fx.web), `${src.host}/${src.fx.web.repository}:also`] }, 'amd64,arm64');
    const d = await readDescriptor(out);
    expect(d.images.map((i) => i.digest)).toEqual([src.fx.web.top.digest, src.fx.web.top.digest]);
    await verifyBundle(out);
  });

  it('a second bundle from the same cache fetches nothing', async () => {
    const spec = { images: [imageRef(src.host, src.fx.web)] };
    const cache = join(src.work.dir, 'shared-cache');
    const first = await pack('cache-1', spec, 'amd64,arm64', cache);
    const second = await pack('cache-2', spec, 'amd64,arm64', cache);
    expect(first.summary.fetchedBytes).toBeGreaterThan(0);
    expect(second.summary.fetchedBytes).toBe(0);
    expect(await readdir(join(cache, 'ingest'))).toEqual([]);
  });
});
