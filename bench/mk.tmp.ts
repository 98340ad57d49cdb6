import { mkdir, copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import { benchBundle, randomLayer } from './common.js';
import { startSourceRegistry } from '../demo/source-registry.js';
import { buildIndexImage, pushImage } from '../demo/samples.js';
const LAYERS_MB = [118, 74, 52, 41, 29, 24, 19, 14.5, 11, 7.2, 4.8, 3.1, 1.6, 0.7, 0.1];
const work = '/tmp/bi';
await mkdir(work, { recursive: true });
const source = await startSourceRegistry(join(work, 'source'));
const refs: string[] = [];
for (let i = 0; i < 5; i++) {
  const layers = LAYERS_MB.filter((_, j) => j % 5 === i).map((m) => randomLayer(Math.max(1, Math.round(m * 1e6))));
  await pushImage(source.host, buildIndexImage(`bench/import${i}`, 'v1', { amd64: layers }));
  refs.push(`${source.host}/bench/import${i}:v1`);
}
await mkdir(join(work, 'b'));
const b = await benchBundle(join(work, 'b'), 'bench-import', { images: refs, binaries: [] }, 'amd64');
await source.stop();
await copyFile(b, '/tmp/bench-import.tar.zst');
