import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createReporter, formatDuration, type Output } from '../../ui/progress.js';

/** Captures what a reporter writes; `tty` makes it look like a terminal to cli-progress. */
function capture(tty = false) {
  const chunks: string[] = [];
  const out: Output = { write: (s: string) => chunks.push(s), isTTY: tty, columns: 120 };
  // Escapes stripped, and each redraw (cursor back to column 1) on a line of its own, as a person would have seen them.
  const text = () => chunks.join('').replace(/\x1b\[1G/g, '\n').replace(/\x1b(\[[0-9;?]*[A-Za-z]|[78])/g, '');
  return { out, text };
}

beforeEach(() => {
  vi.useFakeTimers({ now: 0 });
});
afterEach(() => {
  vi.useRealTimers();
});

describe('formatDuration', () => {
  it('reads as people say it', () => {
    expect([0, 3_400, 9_960, 12_900, 72_000, 3_600_000 + 5 * 60_000, -5].map(formatDuration)).toEqual(['0s', '3.4s', '10s', '12s', '1m12s', '1h05m', '0s']);
  });
});

describe('plain progress', () => {
  it('shows the bytes of a phase without a total as they arrive, never "of 0", and says when it is done', () => {
    const { out, text } = capture();
    const r = createReporter('plain', out);
    r.phase('fetch binaries and charts', 0);
    vi.advanceTimersByTime(6_000);
    r.bytes(1_200_000); // past the 5 s interval: a progress line
    vi.advanceTimersByTime(1_000);
    r.phase('fetch and write', 2_000_000);
    r.end();
    const lines = text().trim().split('\n');
    expect(lines).toEqual([
      'fetch binaries and charts…',
      'fetch binaries and charts: 1.20 MB, 200.0 kB/s, 6s elapsed',
      'fetch binaries and charts: done, 1.20 MB in 7s',
      'fetch and write: 2.00 MB',
      'fetch and write: done in 0s',
    ]);
    expect(text()).not.toMatch(/of 0|0%/);
  });

  it('never shows negative bytes when a restarted download takes back more than the phase counted', () => {
    const { out, text } = capture();
    const r = createReporter('plain', out);
    r.phase('resolve images', 0);
    r.bytes(1_000);
    vi.advanceTimersByTime(5_000);
    r.bytes(-5_000);
    r.end();
    expect(text()).toContain('resolve images: 0 bytes, 0 bytes/s, 5s elapsed');
    expect(text()).toContain('resolve images: done in 5s');
    expect(text()).not.toContain('-');
  });
});

describe('JSON progress', () => {
  it('keeps its events and adds phase-done with the phase\'s bytes and time', () => {
    const { out, text } = capture();
    const r = createReporter('json', out);
    r.phase('verify', 0);
    vi.advanceTimersByTime(2_500);
    r.bytes(4_000);
    r.end();
    const events = text().trim().split('\n').map((l) => JSON.parse(l));
    expect(events.map((e) => e.event)).toEqual(['phase', 'progress', 'progress', 'phase-done']);
    expect(events[0]).toMatchObject({ phase: 'verify', totalBytes: 0 });
    expect(events[2]).toMatchObject({ phase: 'verify', doneBytes: 4_000, totalBytes: 0, bytesPerSecond: 1_600 });
    expect(events[3]).toMatchObject({ event: 'phase-done', phase: 'verify', doneBytes: 4_000, phaseElapsedMs: 2_500, message: 'verify: done, 4.00 kB in 2.5s' });
  });
});

describe('terminal progress', () => {
  it('draws no bar, percent or "of 0" for a phase without a total, but its bytes, rate and elapsed time', () => {
    const { out, text } = capture(true);
    const r = createReporter('tty', out);
    r.phase('resolve images', 0);
    vi.advanceTimersByTime(2_000);
    r.bytes(1_200_000);
    vi.advanceTimersByTime(1_000); // redraws on its own while bytes arrive or not
    const shown = text().split('\n').filter(Boolean).at(-1);
    expect(shown).toBe('resolve images: 1.20 MB, 400.0 kB/s, 3s elapsed');
    expect(text()).not.toMatch(/of 0|%|\[/);
    r.end();
  });

  it('draws a bar for a phase with a total, with elapsed time and ETA, and replaces it with a done line when the next phase starts', () => {
    const { out, text } = capture(true);
    const r = createReporter('tty', out);
    r.phase('fetch and write', 2_000_000);
    vi.advanceTimersByTime(2_000);
    r.bytes(1_000_000);
    vi.advanceTimersByTime(1_000);
    expect(text().split('\n').filter(Boolean).at(-1)).toMatch(/^fetch and write \[.+\] 1\.00 MB of 2\.00 MB \(50%\), 333\.3 kB\/s, 3s elapsed, ETA 3s$/);
    r.phase('write', 0);
    r.end();
    const lines = text().split('\n').filter(Boolean);
    expect(lines).toContain('fetch and write: done, 1.00 MB in 3s');
    expect(lines.at(-1)).toBe('write: done in 0s');
  });

  it('writes an info line between redraws of the bar, which goes on', () => {
    const { out, text } = capture(true);
    const r = createReporter('tty', out);
    r.phase('resolve images', 0);
    r.info('skipping db: it is only for linux/arm64');
    r.bytes(500);
    vi.advanceTimersByTime(1_000);
    r.end();
    const lines = text().split('\n').filter(Boolean);
    expect(lines).toContain('skipping db: it is only for linux/arm64');
    expect(lines.at(-1)).toBe('resolve images: done, 500 bytes in 1s');
  });
});
