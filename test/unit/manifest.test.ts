import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { loadManifest } from '../../manifests/index.js';
import { writeFile } from 'node:fs/promises';
import { ROOT, tempDir } from '../helpers/env.js';
import { writeManifest } from '../helpers/fixtures.js';

describe('shipped manifests', () => {
  it('the demo manifest validates and resolves its image list and local paths', async () => {
    const m = await loadManifest(join(ROOT, 'manifests/demo.yaml'));
    expect(m.images.map((i) => i.name)).toContain('127.0.0.1:5055/ecp_builder/coredns:v1.8.4');
    expect(m.images.find((i) => i.name.includes('nvidia'))!.platforms).toEqual([{ os: 'linux', architecture: 'amd64' }]);
    expect(m.binaries[0].url).toBe(`file://${join(ROOT, 'manifests/demo/bin/hello-{arch}')}`);
    expect(m.charts[0].source).toEqual({ kind: 'path', path: join(ROOT, 'manifests/demo/charts/hello') });
  });
});

describe('the ACK Distro manifest', () => {
  it('validates, with the real upstream references, binaries per arch and charts in install order', async () => {
    const m = await loadManifest(join(ROOT, 'manifests/ackdistro-v1.22.15.yaml'));
    expect(m.name).toBe('ackdistro');
    expect(m.platforms?.map((p) => p.architecture)).toEqual(['amd64', 'arm64']);
    expect(m.images.length).toBeGreaterThanOrEqual(29);
    expect(m.images.map((i) => i.name)).toContain('ack-agility-registry.cn-shanghai.cr.aliyuncs.com/ecp_builder/kube-apiserver:v1.22.15-aliyun.1');
    expect(m.images.every((i) => i.ref.host === 'ack-agility-registry.cn-shanghai.cr.aliyuncs.com')).toBe(true);
    for (const name of ['kubeadm', 'kubelet', 'kubectl', 'containerd', 'helm']) expect(m.binaries.map((b) => b.name)).toContain(name);
    expect(m.binaries.find((b) => b.name === 'kubeadm')!.url).toContain('{arch}');
    const charts = m.charts.map((c) => (c.source.kind === 'path' ? c.source.path.split('/').pop() : ''));
    expect(charts.indexOf('kube-core')).toBeLessThan(charts.indexOf('hybridnet'));
    expect(charts.indexOf('hybridnet')).toBeLessThan(charts.indexOf('open-local'));
  });
});

describe('manifest rules beyond the schema', () => {
  it.each([
    ['both install and extract', { name: 'a', version: 'v1', url: 'x', install: '/a', extract: '/' }, /both install and extract/],
    ['neither install nor extract', { name: 'a', version: 'v1', url: 'x' }, /needs install .* or extract/],
    ['one sha256 for per-arch files', { name: 'a', version: 'v1', url: 'x-{arch}', install: '/a', sha256: 'a'.repeat(64) }, /different file per arch/],
  ])('refuses a binary with %s', async (_what, binary, pattern) => {
    const { dir, cleanup } = await tempDir();
    try {
      const file = await writeManifest(dir, { binaries: [binary] });
      await expect(loadManifest(file)).rejects.toThrow(pattern);
    } finally {
      await cleanup();
    }
  });

  it('merges an image listed twice, widening its platforms', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      await writeFile(join(dir, 'list'), '# comment\nnginx:1.25  # trailing comment\n\n');
      const file = await writeManifest(dir, { images: [{ ref: 'docker.io/library/nginx:1.25', platforms: ['linux/amd64'] }], imageLists: ['list'] });
      const m = await loadManifest(file);
      expect(m.images).toHaveLength(1);
      expect(m.images[0].platforms).toBeUndefined();
    } finally {
      await cleanup();
    }
  });

  it('names a missing image list', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      const file = await writeManifest(dir, { imageLists: ['nope'] });
      await expect(loadManifest(file)).rejects.toThrow(/m\.yaml:\d+:\d+: cannot read image list .*nope: ENOENT/);
    } finally {
      await cleanup();
    }
  });
});
