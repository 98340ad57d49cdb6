import { describe, expect, it } from 'vitest';
import { withNodes, type ClusterState } from '../../installer/cluster-state.js';
import { specFromFlags } from '../../installer/cluster-spec.js';

/** A cluster as `from` saved it: passwords stripped, keys kept by path. */
function installed(hosts: { ip: string; master?: boolean; keyFile?: string; user?: string; port?: number }[]): ClusterState {
  const spec = specFromFlags({ masters: hosts.filter((h) => h.master).map((h) => h.ip).join(','), nodes: hosts.filter((h) => !h.master).map((h) => h.ip).join(','), key: '/k' });
  spec.hosts = hosts.map((h) => ({ ...spec.hosts.find((x) => x.ip === h.ip)!, keyFile: h.keyFile, user: h.user ?? 'root', port: h.port ?? 22 }));
  return { bundle: '/b.tar.zst', spec };
}

describe('acinstall join: each host keeps its own login', () => {
  it('gives the new nodes their own password and never to the hosts already there', () => {
    const state = installed([{ ip: '10.0.0.1', master: true }, { ip: '10.0.0.2' }]);
    const spec = withNodes(state, ['10.0.0.9'], { password: 'new-nodes' }, 'old-cluster');
    expect(spec.hosts.map((h) => [h.ip, h.password, h.keyFile])).toEqual([
      ['10.0.0.1', 'old-cluster', undefined],
      ['10.0.0.2', 'old-cluster', undefined],
      ['10.0.0.9', 'new-nodes', undefined],
    ]);
  });

  it('asks for the cluster password, naming the host, when hosts logged in with one at install', () => {
    const state = installed([{ ip: '10.0.0.1', master: true }]);
    expect(() => withNodes(state, ['10.0.0.9'], { password: 'new-nodes' })).toThrow(/10\.0\.0\.1 logged in with a password .* --cluster-password/);
  });

  it('keeps recorded keys, and defaults new nodes to the first master\'s key, user and port (not the first host listed)', () => {
    const state = installed([
      { ip: '10.0.0.2', keyFile: '/keys/worker', user: 'ops', port: 2222 },
      { ip: '10.0.0.1', master: true, keyFile: '/keys/master', user: 'root', port: 22 },
    ]);
    const spec = withNodes(state, ['10.0.0.9'], {});
    expect(spec.hosts.map((h) => [h.ip, h.keyFile, h.user, h.port, h.password])).toEqual([
      ['10.0.0.2', '/keys/worker', 'ops', 2222, undefined],
      ['10.0.0.1', '/keys/master', 'root', 22, undefined],
      ['10.0.0.9', '/keys/master', 'root', 22, undefined],
    ]);
  });
});
