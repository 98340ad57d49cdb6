import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { startSourceRegistry } from '../demo/source-registry.js';
import { buildIndexImage, pushImage } from '../demo/samples.js';
import { randomLayer } from './common.js';
const work = '/tmp/packsrv';
await rm(work, { recursive: true, force: true });
await mkdir(work, { recursive: true });
const registry = await startSourceRegistry(join(work, 'registry'));
const baseSmall = { amd64: randomLayer(6 << 20), arm64: randomLayer(6 << 20) };
const baseLarge = { amd64: randomLayer(40 << 20), arm64: randomLayer(40 << 20) };
const refs: string[] = [];
for (let i = 0; i < 30; i++) {
  const base = i % 3 === 0 ? baseSmall : baseLarge;
  await pushImage(registry.host, buildIndexImage(`bench/app${i}`, 'v1', { amd64: [base.amd64, randomLayer(24 << 20)], arm64: [base.arm64, randomLayer(24 << 20)] }));
  refs.push(`${registry.host}/bench/app${i}:v1`);
}
await writeFile(join(work, 'bench.yaml'), stringify({ apiVersion: 'acpack/v1', kind: 'Bundle', metadata: { name: 'bench', version: 'v1' }, spec: { images: refs, binaries: [] } }));
console.log('ready', registry.host);
await new Promise(() => {});
