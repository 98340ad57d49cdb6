import { expect, it } from 'vitest';
import { heldBinaries, planUpgrade } from '../../installer/upgrade.js';

it('plans a patch or next-minor upgrade, and refuses what kubeadm would', () => {
  expect(planUpgrade(undefined, 'v1.22.15', 'b')).toBeUndefined(); // not installed yet
  expect(planUpgrade('v1.22.15', 'v1.22.15', 'b')).toBeUndefined();
  expect(planUpgrade('v1.22.15', 'v1.22.17', 'b')).toEqual({ from: 'v1.22.15', to: 'v1.22.17' });
  expect(planUpgrade('v1.22.15', 'v1.23.0', 'b')).toEqual({ from: 'v1.22.15', to: 'v1.23.0' });
  expect(() => planUpgrade('v1.22.15', 'v1.24.1', 'b')).toThrow(/one minor version at a time: install a v1\.23 bundle first/);
  expect(() => planUpgrade('v1.22.15', 'v1.22.14', 'b')).toThrow(/never downgraded/);
  expect(() => planUpgrade('v1.22.15', 'v1.21.9', 'b')).toThrow(/never downgraded/);
  expect(() => planUpgrade('v1.22.15', 'kubeadm default', 'b')).toThrow(/only versions like v1\.22\.15 can be compared/);
});

it('holds the kubelet back only on a node that is being upgraded', () => {
  expect([...heldBinaries('v1.22.15', 'v1.22.16')]).toEqual(['kubelet']);
  expect([...heldBinaries('v1.22.16', 'v1.22.16')]).toEqual([]);
  expect([...heldBinaries(undefined, 'v1.22.16')]).toEqual([]); // a new node gets everything at once
});
