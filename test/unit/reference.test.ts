import { describe, expect, it } from 'vitest';
import { formatReference, parseReference, isLoopbackHost } from '../../oci/reference.js';

describe('parseReference', () => {
  it.each([
    ['nginx', 'docker.io/library/nginx:latest'],
    ['nginx:1.25', 'docker.io/library/nginx:1.25'],
    ['bitnami/redis:7', 'docker.io/bitnami/redis:7'],
    ['index.docker.io/library/busybox', 'docker.io/library/busybox:latest'],
    ['registry.k8s.io/pause:3.5', 'registry.k8s.io/pause:3.5'],
    ['localhost/a/b', 'localhost/a/b:latest'],
    ['127.0.0.1:5000/a/b:v1', '127.0.0.1:5000/a/b:v1'],
    [`quay.io/x/y@sha256:${'a'.repeat(64)}`, `quay.io/x/y@sha256:${'a'.repeat(64)}`],
    [`quay.io/x/y:1@sha256:${'b'.repeat(64)}`, `quay.io/x/y:1@sha256:${'b'.repeat(64)}`],
    ['ack-agility-registry.cn-shanghai.cr.aliyuncs.com/ecp_builder/koord-scheduler:cnstack-2.1.0_20230323150335_56ed42a', 'ack-agility-registry.cn-shanghai.cr.aliyuncs.com/ecp_builder/koord-scheduler:cnstack-2.1.0_20230323150335_56ed42a'],
  ])('%s → %s', (input, want) => {
    expect(formatReference(parseReference(input))).toBe(want);
  });

  it.each([
    ['', /empty/],
    ['Nginx', /lowercase/],
    ['a/b:bad tag', /tag/],
    ['a/b@sha256:123', /not a sha256 digest/],
    ['a//b', /lowercase/],
    [`a:${'x'.repeat(129)}`, /at most 128/],
  ])('refuses %j', (input, pattern) => {
    expect(() => parseReference(input)).toThrow(pattern);
  });

  it('knows loopback hosts', () => {
    expect(isLoopbackHost('127.0.0.1:5000')).toBe(true);
    expect(isLoopbackHost('localhost')).toBe(true);
    expect(isLoopbackHost('[::1]:5000')).toBe(true);
    expect(isLoopbackHost('10.0.0.1:5000')).toBe(false);
    expect(isLoopbackHost('registry.k8s.io')).toBe(false);
  });
});
