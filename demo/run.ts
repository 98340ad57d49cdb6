import { mkdir, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { bundle, createReporter, formatSummary, reporterMode } from '../packer/index.js';
import { verifyBundle } from '../oci/bundle-verify.js';
import { readDescriptor } from '../oci/bundle-reader.js';
import { formatInspect } from '../packer/cli.js';
import { demoImages, pushImage } from './samples.js';
import { startSourceRegistry } from './source-registry.js';

/**
 * `npm run demo`: a local docker-registry on 127.0.0.1:5055 with sample multi-arch images, then
 * `acpack bundle` of manifests/demo.yaml for amd64+arm64, then inspect and verify.
 */
const root = resolve(process.env.DEMO_DIR ?? 'demo-out');
await rm(root, { recursive: true, force: true });
await mkdir(root, { recursive: true });
const registry = await startSourceRegistry(join(root, 'registry'), 5055).catch((err: Error) => {
  process.stderr.write(`demo: cannot start the sample registry on 127.0.0.1:5055 (${err.message})\n`);
  process.exit(1);
});
try {
  process.stderr.write(`demo: sample registry on ${registry.host}\n`);
  for (const image of await demoImages()) await pushImage(registry.host, image);
  const out = join(root, 'demo.tar.zst');
  const summary = await bundle({
    manifestFile: 'manifests/demo.yaml',
    cacheDir: join(root, 'cache'),
    reporter: createReporter(reporterMode(false)),
    sourceDateEpoch: 0,
    out,
  });
  process.stdout.write(`${formatSummary(summary)}\n\n$ acpack inspect ${out}\n${formatInspect(await readDescriptor(out))}`);
  const report = await verifyBundle(out);
  process.stdout.write(`$ acpack verify ${out}\nOK: ${report.blobs} blobs verified\n`);
} finally {
  await registry.stop();
}
