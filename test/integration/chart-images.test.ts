import { describe, expect, it } from 'vitest';
import { cp, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { bundleImagesNamed, chartImages, imagesInRendered } from '../../installer/chart-images.js';
import { chartOrder } from '../../installer/charts.js';
import { prepullImages } from '../../installer/prepull.js';
import { readDescriptor } from '../../oci/bundle-reader.js';
import { importBundle } from '../../registry/index.js';
import { ROOT, tempDir, withRegistry } from '../helpers/env.js';
import { bundleSpec, localBinary, pushSmallImage } from '../helpers/fixtures.js';
import { helmBinary } from '../helpers/helm.js';

/**
 * Which of the bundle's images the charts run, for the nodes to pull ahead: the charts rendered by
 * the bundle's own (real) helm from the imported store, their `image:` values matched against the
 * bundle's images whatever host the chart names them under.
 */
describe("the charts' images", () => {
  it('reads image values in rendered YAML, quoted or not, in lists too, each once', () => {
    const yaml = ['containers:', '  - image: "a.io/x/y:1"', '    name: y', '  - name: z', '    image: b.io/z@sha256:' + 'a'.repeat(64), 'initContainers:', "  - image: 'a.io/x/y:1' # again", 'imagePullPolicy: IfNotPresent'].join('\n');
    expect(imagesInRendered(yaml)).toEqual(['a.io/x/y:1', `b.io/z@sha256:${'a'.repeat(64)}`]);
  });

  it('renders the charts from the imported store with the bundle\'s helm and names the bundle\'s images they run, no others', async () => {
    const work = await tempDir();
    const src = await withRegistry();
    try {
      const host = src.registry.host;
      const used = await pushSmallImage(host, 'ecp_builder/hybridnet', 'v0.8.8');
      const agent = await pushSmallImage(host, 'ecp_builder/agent', 'v2');
      const unused = await pushSmallImage(host, 'other/unused', 'v1');
      // hello's Deployment names hybridnet under the demo's registry host; the CNI's DaemonSet its
      // agent under the site name ACK Distro's charts use.
      await cp(join(ROOT, 'manifests/demo/charts/hello'), join(work.dir, 'charts/hello'), { recursive: true });
      await mkdir(join(work.dir, 'charts/hybridnet/templates'), { recursive: true });
      await writeFile(join(work.dir, 'charts/hybridnet/Chart.yaml'), 'apiVersion: v2\nname: hybridnet\nversion: 0.6.8\n');
      await writeFile(join(work.dir, 'charts/hybridnet/values.yaml'), 'registry: sea.hub:5000\n');
      await writeFile(
        join(work.dir, 'charts/hybridnet/templates/ds.yaml'),
        'apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: agent\nspec:\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n    spec:\n      containers:\n        - name: agent\n          image: {{ .Values.registry }}/ecp_builder/agent:v2\n',
      );
      const file = await bundleSpec(
        work.dir,
        { images: [used, agent, unused], binaries: [localBinary('helm', 'v4', helmBinary(), '/usr/bin/helm')], charts: [{ path: 'charts/hello' }, { path: 'charts/hybridnet' }] },
        join(work.dir, 'b.tar.zst'),
        'amd64',
        { allowIncomplete: true },
      );
      const store = join(work.dir, 'store');
      await importBundle(file, store);
      const d = await readDescriptor(file);

      const refs = await chartImages(store, d, chartOrder(d, 'hybridnet'));
      expect(refs.sort()).toEqual([agent, used].sort());
      // Every node pulls them ahead, masters too, after kubeadm's.
      expect(prepullImages(d, 'amd64', true, undefined, refs).sort()).toEqual([agent, used].sort());
      expect(prepullImages(d, 'arm64', false, undefined, refs)).toEqual([]);
    } finally {
      await src.cleanup();
      await work.cleanup();
    }
  }, 120_000);

  it('matches by digest as well, and takes what is not a reference for nothing', async () => {
    const d = { images: [{ ref: 'up.io/a/b:1', digest: `sha256:${'1'.repeat(64)}`, mediaType: '', platforms: [{ platform: 'linux/amd64', digest: `sha256:${'2'.repeat(64)}` }] }] } as unknown as Parameters<typeof bundleImagesNamed>[0];
    expect(bundleImagesNamed(d, [`site:5000/a/b@sha256:${'2'.repeat(64)}`])).toEqual(['up.io/a/b:1']);
    expect(bundleImagesNamed(d, [`a/b@sha256:${'1'.repeat(64)}`])).toEqual(['up.io/a/b:1']);
    expect(bundleImagesNamed(d, ['{{ .Values.image }}', 'up.io/a/b:2', 'other.io/a/c:1'])).toEqual([]);
  });
});
