import { describe, expect, it } from 'vitest';
import { specFromFlags } from '../../installer/cluster-spec.js';
import { bundleArches, evaluate, runtimeLacking, type Facts } from '../../installer/preflight.js';
import type { BundleDescriptor, BundledBinary, BundledRuntime } from '../../oci/bundle-format.js';
import { ownVersion } from '../../ui/program.js';

/** acinstall from and preflight refuse a bundle that lays a cluster down without the runtime of a node's arch (issue 11). */
const digest = (c: string) => `sha256:${c.repeat(64)}` as const;
const kubeadm = (arch: string): BundledBinary => ({ name: 'kubeadm', version: 'v1.22.15', arch, digest: digest('a'), size: 1, manifest: digest('b'), index: digest('c'), ref: 'acpack.local/binaries/kubeadm:v1.22.15', install: '/usr/bin/kubeadm', mode: '0755' });
const runtime = (arch: string): BundledRuntime => ({ arch, version: '0.1.0+node24.22.3', digest: digest('d'), size: 1, manifest: digest('e'), index: digest('f'), ref: 'acpack.local/runtime/acinstall:0.1.0_node24.22.3' });

function descriptor(o: { kubeadm: boolean; runtime?: string[] }): BundleDescriptor {
  const arches = ['amd64', 'arm64'];
  return {
    format: 1,
    name: 'ack',
    version: 'v1',
    source: digest('0'),
    platforms: arches.map((a) => `linux/${a}`),
    images: [],
    binaries: o.kubeadm ? arches.map(kubeadm) : [],
    charts: [],
    ...(o.runtime ? { runtime: o.runtime.map(runtime) } : {}),
    blobs: { count: 0, bytes: 0 },
  };
}

/** A node that passes every other check. */
const facts = (arch: string, hostname: string): Facts => ({
  arch,
  kernel: '5.10.0',
  os: 'debian 12',
  systemd: true,
  missingTools: [],
  cpus: 4,
  memKb: 8 << 20,
  diskKb: 100 << 20,
  swaps: 0,
  time: 1000,
  hostname,
  ports: [],
  brNetfilter: true,
  ipForward: true,
  kubeadmStarted: false,
  agentRunning: false,
});

function preflight(d: BundleDescriptor) {
  const spec = specFromFlags({ masters: '10.0.0.1', nodes: '10.0.0.2', password: 'x' });
  const seen = new Map([
    [spec.hosts[0], facts('x86_64', 'm1')],
    [spec.hosts[1], facts('aarch64', 'w1')],
  ]);
  return evaluate(spec, seen, { ...bundleArches(d), now: 1000, ignore: [] });
}

describe("acinstall's runtime, per node arch", () => {
  it('is needed by a bundle that lays a cluster down, for every arch a node has', () => {
    expect(runtimeLacking(bundleArches(descriptor({ kubeadm: true, runtime: ['amd64', 'arm64'] })), 'arm64')).toBeUndefined();
    expect(runtimeLacking(bundleArches(descriptor({ kubeadm: true, runtime: ['amd64'] })), 'arm64')).toBe(
      `the bundle carries no acinstall runtime for arm64: rebuild it with acpack ${ownVersion()}, which puts one in for each arch it bundles`,
    );
    // A bundle of an acpack before the runtime: none at all.
    expect(runtimeLacking(bundleArches(descriptor({ kubeadm: true })), 'amd64')).toMatch(/no acinstall runtime for amd64: rebuild it with acpack /);
  });

  it('is not needed by a plain content bundle (no kubeadm), nor by preflight without a bundle', () => {
    expect(bundleArches(descriptor({ kubeadm: false }))).toEqual({ arches: ['amd64', 'arm64'] });
    expect(runtimeLacking({ arches: ['amd64'] }, 'amd64')).toBeUndefined();
    expect(preflight(descriptor({ kubeadm: false }))).toEqual([]);
  });

  it('fails preflight on each node whose arch it lacks, as an arch failure naming the arch (not one --ignore-preflight skips)', () => {
    expect(preflight(descriptor({ kubeadm: true, runtime: ['amd64', 'arm64'] }))).toEqual([]);
    expect(preflight(descriptor({ kubeadm: true, runtime: ['amd64'] }))).toEqual([
      { node: '10.0.0.2', check: 'arch', found: 'aarch64 (arm64)', need: expect.stringMatching(/^the bundle carries no acinstall runtime for arm64: rebuild it with acpack /) },
    ]);
    expect(preflight(descriptor({ kubeadm: true })).map((f) => [f.node, f.check, f.found])).toEqual([
      ['10.0.0.1', 'arch', 'x86_64 (amd64)'],
      ['10.0.0.2', 'arch', 'aarch64 (arm64)'],
    ]);
  });
});
