import { expect, it } from 'vitest';
import { chartOrder, helmCommand } from '../../installer/charts.js';
import type { BundleDescriptor } from '../../oci/bundle-format.js';

const chart = (name: string) => ({ name, version: '1', ref: `acpack.local/charts/${name}:1`, digest: `sha256:${'a'.repeat(64)}`, chart: `sha256:${'b'.repeat(64)}`, size: 1 });
const bundle = (charts: string[], helm?: { install?: string; extract?: string }) =>
  ({ name: 'ackdistro', version: 'v1', charts: charts.map(chart), binaries: helm ? [{ name: 'helm', arch: 'amd64', ...helm }] : [] }) as unknown as BundleDescriptor;

it('installs the chosen CNI first, then the manifest order, and leaves the other CNI out', () => {
  const d = bundle(['kube-core', 'calico', 'hybridnet', 'l-zero']);
  expect(chartOrder(d, 'hybridnet').map((c) => c.name)).toEqual(['hybridnet', 'kube-core', 'l-zero']);
  expect(chartOrder(d, 'calico').map((c) => c.name)).toEqual(['calico', 'kube-core', 'l-zero']);
});

it('refuses charts without helm or without the chosen CNI before any node is touched', () => {
  expect(helmCommand(bundle([]), 'hybridnet')).toBeUndefined();
  expect(() => helmCommand(bundle(['hybridnet']), 'hybridnet')).toThrow(/carries 1 chart but no helm binary/);
  expect(() => helmCommand(bundle(['calico'], { install: '/usr/bin/helm' }), 'hybridnet')).toThrow(/CNI is hybridnet .* carries no hybridnet chart/);
  expect(helmCommand(bundle(['hybridnet'], { install: '/usr/bin/helm' }), 'hybridnet')).toBe(`'/usr/bin/helm'`);
  // ACK Distro's helm comes as a tarball unpacked under /opt/helm (linux-<arch>/helm).
  expect(helmCommand(bundle(['hybridnet'], { extract: '/opt/helm' }), 'hybridnet')).toContain(`find '/opt/helm' -type f -name helm`);
});
