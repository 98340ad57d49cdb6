import { describe, expect, it } from 'vitest';
import { archFromUname, expandTemplate, parsePlatformList, platformMatches, formatPlatform } from '../../arch/platform.js';

describe('platforms', () => {
  it('maps uname -m', () => {
    expect(archFromUname('x86_64\n')).toBe('amd64');
    expect(archFromUname('aarch64')).toBe('arm64');
    expect(() => archFromUname('riscv64')).toThrow(/riscv64.*not supported/);
  });

  it('parses --arch lists, sorted and unique', () => {
    expect(parsePlatformList('arm64,amd64,arm64').map(formatPlatform)).toEqual(['linux/amd64', 'linux/arm64']);
    expect(parsePlatformList('linux/arm64/v8').map(formatPlatform)).toEqual(['linux/arm64/v8']);
    expect(() => parsePlatformList(' , ')).toThrow(/no platform/);
  });

  it('matches arm64 images with or without a variant', () => {
    expect(platformMatches({ os: 'linux', architecture: 'arm64', variant: 'v8' }, { os: 'linux', architecture: 'arm64' })).toBe(true);
    expect(platformMatches({ os: 'linux', architecture: 'arm64' }, { os: 'linux', architecture: 'arm64', variant: 'v8' })).toBe(false);
    expect(platformMatches({ os: 'linux', architecture: 'amd64' }, { os: 'linux', architecture: 'arm64' })).toBe(false);
    expect(platformMatches({ os: 'windows', architecture: 'amd64' }, { os: 'linux', architecture: 'amd64' })).toBe(false);
  });

  it('expands URL templates', () => {
    expect(expandTemplate('https://x/{version}/{arch}/{uname}.rpm', { arch: 'arm64', version: 'v1' })).toBe('https://x/v1/arm64/aarch64.rpm');
  });
});
