import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { loadManifest } from '../../manifests/index.js';
import { ROOT } from '../helpers/env.js';

describe('shipped manifests', () => {
  it('the demo manifest validates and resolves its image list and local paths', async () => {
    const m = await loadManifest(join(ROOT, 'manifests/demo.yaml'));
    expect(m.images.map((i) => i.name)).toContain('127.0.0.1:5055/ecp_builder/coredns:v1.8.4');
    expect(m.images.find((i) => i.name.includes('nvidia'))!.platforms).toEqual([{ os: 'linux', architecture: 'amd64' }]);
    expect(m.binaries[0].url).toBe(`file://${join(ROOT, 'manifests/demo/bin/hello-{arch}')}`);
    expect(m.charts[0].source).toEqual({ kind: 'path', path: join(ROOT, 'manifests/demo/charts/hello') });
  });
});
