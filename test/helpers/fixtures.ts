import { afterAll, beforeAll } from 'vitest';
import { silent, tempDir, withRegistry } from './env.js';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { writeFile, mkdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { stringify } from 'yaml';
import { bundle } from '../../packer/index.js';
import { parsePlatformList } from '../../arch/platform.js';
import { buildIndexImage, buildLayer, buildSingleImage, noise, pushImage, type Layer, type SampleImage } from '../../demo/samples.js';
import { kubeadmBinary } from '../hosts/standins/kubeadm-standin.js';
import { pushKubeadmImages } from './kubeadm-images.js';

/**
 * The integration tests' source content: two multi-arch images sharing a base layer (so dedupe
 * across images and arches is visible), plus a single-arch image.
 */
export interface Fixture {
  base: Layer;
  web: SampleImage;
  db: SampleImage;
  amd64Only: SampleImage;
}

export async function buildFixture(seed = 'fx'): Promise<Fixture> {
  const base = await buildLayer([
    { path: 'etc/os-release', content: `ID=${seed}\n` },
    { path: 'lib/libc.so', content: noise(`${seed}-base`, 200_000) },
  ]);
  const arch = async (name: string, a: string) => buildLayer([{ path: `bin/${name}`, content: noise(`${seed}-${name}-${a}`, 50_000), mode: 0o755 }]);
  const web = buildIndexImage('library/web', '1.0', { amd64: [base, await arch('web', 'amd64')], arm64: [base, await arch('web', 'arm64')] });
  const db = buildIndexImage('tools/db', '2.0', { amd64: [base, await arch('db', 'amd64')], arm64: [base, await arch('db', 'arm64')] });
  const amd64Only = buildSingleImage('tools/gpu', '1.0', 'amd64', [base, await arch('gpu', 'amd64')]);
  return { base, web, db, amd64Only };
}

export async function pushFixture(host: string, fx: Fixture): Promise<void> {
  for (const img of [fx.web, fx.db, fx.amd64Only]) await pushImage(host, img);
}

export function imageRef(host: string, img: SampleImage): string {
  return `${host}/${img.repository}:${img.tag}`;
}

/** Writes a manifest file; returns its path. */
export async function writeManifest(dir: string, spec: Record<string, unknown>, name = 'm.yaml'): Promise<string> {
  const file = join(dir, name);
  await mkdir(dirname(file), { recursive: true });
  await writeFile(file, stringify({ apiVersion: 'acpack/v1', kind: 'Bundle', metadata: { name: 'test', version: 'v1' }, spec }));
  return file;
}

/**
 * Writes `spec` as the manifest `dir`/m.yaml (its relative paths are relative to `dir`) and bundles
 * it to `out` for `platforms`, with the build cache beside `out`; returns `out`. `allowIncomplete`:
 * a bundle carrying kubeadm that acpack's lint refuses (a test of what acinstall does with it, or of
 * kubeadm steps on a cluster with no CNI chart: the stand-ins start no API server for helm).
 */
export async function bundleSpec(dir: string, spec: Record<string, unknown>, out: string, platforms = 'amd64', o: { allowIncomplete?: boolean } = {}): Promise<string> {
  await bundle({ manifestFile: await writeManifest(dir, spec), platforms: parsePlatformList(platforms), cacheDir: join(dirname(out), 'cache'), reporter: silent, sourceDateEpoch: 0, out, ...o });
  return out;
}

/** A manifest's binaries entry for a local file, pinned to the sha256 of what it holds now. */
export function localBinary(name: string, version: string, file: string, install: string) {
  return { name, version, url: file, sha256: createHash('sha256').update(readFileSync(file)).digest('hex'), install };
}

/** A one-layer amd64 image `<host>/<repository>:<tag>` pushed to `host`; returns its reference. */
export async function pushSmallImage(host: string, repository: string, tag: string): Promise<string> {
  await pushImage(host, buildIndexImage(repository, tag, { amd64: [await buildLayer([{ path: repository, content: `${repository}:${tag} amd64` }])] }));
  return `${host}/${repository}:${tag}`;
}

/**
 * What a kubeadm lab test's bundle carries: every image kubeadm v1.22.15 names for amd64 (pushed to
 * `host` under ecp_builder: its pause among them), and the kubeadm stand-in of v1.22.15 (written into
 * `dir`) as /usr/bin/kubeadm.
 */
export async function kubeadmContent(host: string, dir: string): Promise<{ images: string[]; pause: string; kubeadm: Awaited<ReturnType<typeof kubeadmBinary>> }> {
  const images = await pushKubeadmImages(host, { arches: ['amd64'] });
  return { images, pause: images.find((i) => /\/pause:[^/]+$/.test(i))!, kubeadm: await kubeadmBinary(join(dir, 'bin'), 'v1.22.15') };
}

/**
 * The bundle most kubeadm lab tests install, kubeadmContent and nothing else, as `dir`/b.tar.zst (a
 * useLab `prepare`). No kubelet, helm or CNI chart (those tests are about kubeadm's steps, and the
 * stand-in starts no API server for helm to install a CNI into): built with allowIncomplete.
 */
export async function kubeadmBundle({ host, dir }: { host: string; dir: string }): Promise<{ path: string; pause: string }> {
  const { images, pause, kubeadm } = await kubeadmContent(host, dir);
  return { path: await bundleSpec(dir, { images, binaries: [kubeadm] }, join(dir, 'b.tar.zst'), 'amd64', { allowIncomplete: true }), pause };
}

/**
 * The usual setup of a test file: a docker-registry loaded with the fixture images, and a work
 * directory; both removed after the file. Fields are filled in beforeAll.
 */
export function useFixtureRegistry(seed?: string) {
  const ctx = {} as { registry: Awaited<ReturnType<typeof withRegistry>>; host: string; fx: Fixture; work: Awaited<ReturnType<typeof tempDir>> };
  beforeAll(async () => {
    ctx.registry = await withRegistry();
    ctx.host = ctx.registry.registry.host;
    ctx.fx = await buildFixture(seed);
    await pushFixture(ctx.host, ctx.fx);
    ctx.work = await tempDir();
  });
  afterAll(async () => {
    await ctx.registry?.cleanup();
    await ctx.work?.cleanup();
  });
  return ctx;
}
