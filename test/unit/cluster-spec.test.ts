import { describe, expect, it } from 'vitest';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { loadClusterFile, parsePort, specFromFlags } from '../../installer/cluster-spec.js';
import { withNodes } from '../../installer/cluster-state.js';
import { parseJoin } from '../../installer/kubeadm.js';
import { redact } from '../../installer/redact.js';
import { tempDir } from '../helpers/env.js';

describe('cluster spec', () => {
  it('builds hosts from sealer-style flags', () => {
    const s = specFromFlags({ masters: '10.0.0.1,10.0.0.2', nodes: '10.0.0.3', key: '/k', port: '2222' });
    expect(s.hosts.map((h) => `${h.ip}:${h.roles.join()}:${h.port}:${h.user}`)).toEqual(['10.0.0.1:master:2222:root', '10.0.0.2:master:2222:root', '10.0.0.3:node:2222:root']);
  });

  it.each([
    [{ masters: '10.0.0.1', nodes: 'node-a', key: '/k' }, /"node-a" is not an IP address/],
    [{ nodes: '10.0.0.3', key: '/k' }, /at least one master/],
    [{ masters: '10.0.0.1', nodes: '10.0.0.1', key: '/k' }, /10\.0\.0\.1 is listed twice/],
    [{ masters: '10.0.0.1' }, /no way to log in to 10\.0\.0\.1/],
    [{ masters: '10.0.0.1', key: '/k', port: '70000' }, /--port 70000 is not a port/],
  ])('refuses %j', (flags, pattern) => {
    expect(() => specFromFlags(flags)).toThrow(pattern);
  });

  it('reads kind: Cluster with per-host SSH overrides, and names unknown fields', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      const f = join(dir, 'cluster.yaml');
      await writeFile(
        f,
        'apiVersion: acpack/v1\nkind: Cluster\nspec:\n  ssh: {user: ops, pk: /home/ops/.ssh/id}\n  hosts:\n    - {ips: [10.0.0.1], roles: [master]}\n    - {ips: [10.0.0.2, 10.0.0.3], roles: [node], ssh: {port: 2200}}\n  network: {cni: calico}\n',
      );
      const s = await loadClusterFile(f);
      expect(s.hosts.map((h) => `${h.ip}:${h.user}:${h.port}:${h.keyFile}`)).toEqual(['10.0.0.1:ops:22:/home/ops/.ssh/id', '10.0.0.2:ops:2200:/home/ops/.ssh/id', '10.0.0.3:ops:2200:/home/ops/.ssh/id']);
      expect(s.network.cni).toBe('calico');
      await writeFile(f, 'apiVersion: acpack/v1\nkind: Cluster\nspec:\n  hostz: []\n');
      await expect(loadClusterFile(f)).rejects.toThrow(/cluster\.yaml: unknown field "hostz" in spec/);
    } finally {
      await cleanup();
    }
  });
});

describe('kubeadm join material', () => {
  const out = 'kubeadm join 10.0.0.1:6443 --token abcdef.0123456789abcdef \\\n\t--discovery-token-ca-cert-hash sha256:' + 'a'.repeat(64) + ' \\\n\t--control-plane --certificate-key ' + 'b'.repeat(64);

  it('is parsed from kubeadm output (a certificate key comes from upload-certs just before a master joins, never from this line)', () => {
    expect(parseJoin(out)).toEqual({ endpoint: '10.0.0.1:6443', token: 'abcdef.0123456789abcdef', caCertHash: `sha256:${'a'.repeat(64)}` });
  });

  it('never survives redaction', () => {
    const r = redact(out);
    expect(r).not.toContain('0123456789abcdef');
    expect(r).not.toContain('b'.repeat(64));
    expect(r).toContain('--token <redacted>');
  });
});

describe('nodes joined to an installed cluster', () => {
  const state = { bundle: '/b.tar.zst', spec: specFromFlags({ masters: '10.0.0.1', key: '/k' }) };
  it('get the first master key by default and are checked like any cluster', () => {
    expect(withNodes(state, ['10.0.0.5'], {}).hosts.map((h) => `${h.ip}:${h.roles.join()}:${h.keyFile}`)).toEqual(['10.0.0.1:master:/k', '10.0.0.5:node:/k']);
    expect(() => withNodes(state, ['10.0.0.5', '10.0.0.5'], {})).toThrow(/10\.0\.0\.5 is listed twice/);
    expect(() => parsePort('abc')).toThrow(/--port abc is not a port/);
  });
});
