import { describe, expect, it } from 'vitest';
import { formatBytes, plural } from '../../oci/errors.js';
import { percent } from '../../ui/progress.js';
import { formatSummary, type BundleSummary } from '../../packer/bundle.js';
import { contents } from '../../packer/pack.js';

describe('counts in messages', () => {
  it('are singular for exactly one', () => {
    expect(plural(1, 'chart')).toBe('1 chart');
    expect([0, 2].map((n) => plural(n, 'chart'))).toEqual(['0 charts', '2 charts']);
    expect(plural(1, 'binary', 'binaries')).toBe('1 binary');
    expect(plural(3, 'binary', 'binaries')).toBe('3 binaries');
    expect(contents(1, 1, 1)).toBe('1 image, 1 binary, 1 chart');
    expect(contents(2, 0, 3)).toBe('2 images, 0 binaries, 3 charts');
    expect([formatBytes(1), formatBytes(0), formatBytes(999)]).toEqual(['1 byte', '0 bytes', '999 bytes']);
  });
});

describe('percent', () => {
  it('stays within 0 and 100 when counts pass either end', () => {
    expect(percent(-500, 1_000_000)).toBe(0); // a restarted download took back more than the phase counted
    expect(percent(1_000_001, 1_000_000)).toBe(100);
    expect(percent(999_999, 1_000_000)).toBe(99); // 100 only once it is all there
    expect(percent(5, 0)).toBeUndefined();
  });

  it('of the dedupe saving is never negative: a bundle sharing nothing is a little larger than its images, by its indexes', () => {
    const s: BundleSummary = { out: 'b.tar.zst', images: 1, imagePlatforms: 1, binaries: 1, binaryFiles: 1, charts: 0, blobs: 4, bytes: 10_400, undeduplicatedBytes: 10_000, fetchedBytes: 0 };
    const text = formatSummary(s);
    expect(text).toContain('saved 0 bytes (0%)');
    expect(text).toContain('binaries: 1 (1 file)');
    expect(formatSummary({ ...s, bytes: 2_500 })).toContain('saved 7.50 kB (75%)');
  });
});
