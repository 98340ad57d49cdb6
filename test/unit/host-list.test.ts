import { describe, expect, it } from 'vitest';
import { hostListChanges, type ClusterState } from '../../installer/cluster-state.js';
import { specFromFlags, type HostSpec } from '../../installer/cluster-spec.js';

const spec = (masters: string, nodes = '') => specFromFlags({ masters, nodes, key: '/k' });
const state = (masters: string, nodes = ''): ClusterState => ({ bundle: '/b.tar.zst', spec: spec(masters, nodes) });

describe('from on an installed cluster: the same nodes in the same roles', () => {
  const all = () => true;

  it('accepts the same host list, in another order of workers', () => {
    expect(hostListChanges(state('10.0.0.1', '10.0.0.2,10.0.0.3'), spec('10.0.0.1', '10.0.0.3,10.0.0.2'), all, '/s')).toEqual([]);
  });

  it('names a node left out with the delete that removes it, and a new one with the join that adds it', () => {
    const changes = hostListChanges(state('10.0.0.1', '10.0.0.2,10.0.0.3'), spec('10.0.0.1', '10.0.0.2,10.0.0.4'), all, '/s');
    expect(changes).toEqual([
      '10.0.0.3 is a worker of the cluster and not named here: to remove it, acinstall delete -n 10.0.0.3 --store /s',
      '10.0.0.4 is not in the cluster: to add it, acinstall join -n 10.0.0.4 --store /s',
    ]);
  });

  it('refuses a worker named as a master (kubeadm cannot promote it in place), and a new first master', () => {
    const changes = hostListChanges(state('10.0.0.1', '10.0.0.2'), spec('10.0.0.2,10.0.0.1'), all, '/s');
    expect(changes[0]).toMatch(/^the first master is 10\.0\.0\.1 /);
    expect(changes).toContain('10.0.0.2 is a worker of the cluster and a master here: a node\'s role cannot change in place (acinstall delete -n 10.0.0.2, then install it again)');
  });

  it('holds only nodes that are in the cluster: one whose install never finished may be dropped or kept', () => {
    const joined = (h: HostSpec) => h.ip !== '10.0.0.3';
    expect(hostListChanges(state('10.0.0.1', '10.0.0.2,10.0.0.3'), spec('10.0.0.1', '10.0.0.2'), joined, '/s')).toEqual([]);
    expect(hostListChanges(state('10.0.0.1', '10.0.0.2,10.0.0.3'), spec('10.0.0.1', '10.0.0.2,10.0.0.3'), joined, '/s')).toEqual([]);
    // Nothing installed yet (a first run that stopped early): any host list goes.
    expect(hostListChanges(state('10.0.0.1', '10.0.0.2'), spec('10.0.0.9', '10.0.0.8'), () => false, '/s')).toEqual([]);
  });
});
