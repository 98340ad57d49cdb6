import { describe, expect, it } from 'vitest';
import { checkBundleOrder, compareVersions, heldBinaries, planUpgrade } from '../../installer/upgrade.js';

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

describe('an older bundle over a newer one', () => {
  const b = (version: string, kubernetes = 'v1.22.15') => ({ name: 'ackdistro', version, kubernetes });

  it('orders versions with numbers as numbers and a rebuild after its base', () => {
    const sorted = ['v1.22.15-aliyun.10', 'v1.22.15', 'v1.22.15-aliyun.2', 'v1.22.15-aliyun.9', 'v1.22.9'].sort(compareVersions);
    expect(sorted).toEqual(['v1.22.9', 'v1.22.15', 'v1.22.15-aliyun.2', 'v1.22.15-aliyun.9', 'v1.22.15-aliyun.10']);
  });

  it('is refused unless --allow-downgrade, naming both; the same or a newer one goes', () => {
    expect(() => checkBundleOrder(b('v1.22.15-aliyun.10'), b('v1.22.15-aliyun.9'), false)).toThrow(/ackdistro v1\.22\.15-aliyun\.9 is older than ackdistro v1\.22\.15-aliyun\.10, .* --allow-downgrade/);
    expect(() => checkBundleOrder(b('v1.22.15-aliyun.10'), b('v1.22.15-aliyun.9'), true)).not.toThrow();
    expect(() => checkBundleOrder(b('v1.22.15-aliyun.9'), b('v1.22.15-aliyun.9'), false)).not.toThrow();
    expect(() => checkBundleOrder(b('v1.22.15-aliyun.9'), b('v1.22.15-aliyun.10'), false)).not.toThrow();
  });

  it('leaves another Kubernetes version to the upgrade plan, and another bundle name alone', () => {
    expect(() => checkBundleOrder(b('v2', 'v1.22.15'), b('v1', 'v1.22.16'), false)).not.toThrow();
    expect(() => checkBundleOrder(b('v2'), { ...b('v1'), name: 'other' }, false)).not.toThrow();
  });
});
