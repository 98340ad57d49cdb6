import { describe, expect, it } from 'vitest';
import { parseIgnoreList, preflightError, SKIPPABLE } from '../../installer/preflight.js';

describe('--ignore-preflight', () => {
  it('takes the checks preflight can skip, and names a wrong one with the valid ones', () => {
    expect(parseIgnoreList('disk, ip_forward,,br_netfilter')).toEqual(['disk', 'ip_forward', 'br_netfilter']);
    expect(() => parseIgnoreList('disk,dsk')).toThrow(`--ignore-preflight: there is no check "dsk"; the checks it can skip are ${SKIPPABLE.join(', ')}`);
    expect(() => parseIgnoreList('toString')).toThrow(/there is no check "toString"/);
    expect(() => parseIgnoreList('arch')).toThrow(/"arch" cannot be skipped: a node gets binaries only for an arch the bundle carries/);
    expect(SKIPPABLE).not.toContain('os');
  });

  it('is offered after a failure only for the checks it can skip', () => {
    const f = (node: string, check: string) => ({ node, check, found: 'x', need: 'y' });
    expect(preflightError([f('10.0.0.1', 'disk'), f('10.0.0.2', 'ssh'), f('10.0.0.2', 'arch')]).message).toMatch(/^preflight failed on 2 nodes:\n[\s\S]*\nfix these, or skip checks with --ignore-preflight disk$/);
    expect(preflightError([f('10.0.0.2', 'ssh')]).message).toMatch(/^preflight failed on 1 node:\n[\s\S]*\nfix these$/);
  });
});
