import { expect, it } from 'vitest';
import { clusterProblems } from '../../installer/post-check.js';
import type { ClusterSpec } from '../../installer/cluster-spec.js';

const spec = { hosts: [{ ip: '10.0.0.1', roles: ['master'] }, { ip: '10.0.0.2', roles: ['node'] }, { ip: '10.0.0.3', roles: ['node'] }] } as unknown as ClusterSpec;
const node = (name: string, ip: string, ready: string) => ({ metadata: { name }, status: { addresses: [{ type: 'Hostname', address: name }, { type: 'InternalIP', address: ip }], conditions: [{ type: 'MemoryPressure', status: 'False' }, { type: 'Ready', status: ready }] } });
const pod = (name: string, phase: string, ready = [true]) => ({ metadata: { name }, status: { phase, containerStatuses: ready.map((r) => ({ ready: r })) } });

it('is satisfied by every node Ready and every kube-system pod running and ready, or done', () => {
  const nodes = { items: [node('m1', '10.0.0.1', 'True'), node('w1', '10.0.0.2', 'True'), node('w2', '10.0.0.3', 'True')] };
  const pods = { items: [pod('etcd-m1', 'Running'), pod('hybridnet-manager-x', 'Running', [true, true]), pod('cert-job', 'Succeeded', [false])] };
  expect(clusterProblems(spec, nodes, pods)).toEqual([]);
});

it('names each node missing or not Ready and each pod not running', () => {
  const nodes = { items: [node('m1', '10.0.0.1', 'True'), node('w1', '10.0.0.2', 'False')] };
  const pods = { items: [pod('coredns-a', 'Pending', []), pod('hybridnet-daemon-b', 'Running', [true, false]), pod('kube-proxy-c', 'Running')] };
  expect(clusterProblems(spec, nodes, pods)).toEqual([
    '10.0.0.2: node w1 is not Ready',
    '10.0.0.3: no node with this address has registered',
    'pod kube-system/coredns-a is Pending',
    'pod kube-system/hybridnet-daemon-b is Running (not ready)',
  ]);
});
