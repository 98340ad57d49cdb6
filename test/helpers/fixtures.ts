import { afterAll, beforeAll } from 'vitest';
import { tempDir, withRegistry } from './env.js';
import { writeFile, mkdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { stringify } from 'yaml';
import { buildIndexImage, buildLayer, buildSingleImage, noise, pushImage, type Layer, type SampleImage } from '../../demo/samples.js';

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
