import { afterEach, describe, expect, it, vi } from 'vitest';
import { Writable } from 'node:stream';
import { createInstallProgress } from '../../installer/progress-board.js';

/** A terminal of lines that understands the two escapes the board uses (cursor up N, clear below). */
function fakeTty() {
  const screen: string[] = [];
  let row = 0;
  const out = new Writable({
    write(chunk, _enc, done) {
      let s = chunk.toString();
      while (s.length) {
        const esc = /^\x1b\[(\d+)A\x1b\[0J/.exec(s);
        if (esc) {
          row -= Number(esc[1]);
          screen.length = row;
          s = s.slice(esc[0].length);
          continue;
        }
        const nl = s.indexOf('\n');
        const line = nl < 0 ? s : s.slice(0, nl);
        screen[row] = (screen[row] ?? '') + line;
        if (nl >= 0) row++;
        s = nl < 0 ? '' : s.slice(nl + 1);
      }
      done();
    },
  }) as unknown as NodeJS.WriteStream;
  Object.assign(out, { isTTY: true, columns: 100 });
  return { out, screen };
}

describe('the install progress board', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('keeps one live line per node, with messages above it', () => {
    const { out, screen } = fakeTty();
    const p = createInstallProgress(out);
    p.node('10.0.0.1', 'binaries', 'running', 'amd64');
    p.node('10.0.0.2', 'binaries', 'running', 'arm64');
    p.master('registry serving');
    p.node('10.0.0.1', 'kubeadm init', 'done');
    p.node('10.0.0.2', 'kubeadm join', 'failed', 'refused');
    p.end();
    expect(screen).toEqual(['registry serving', '✓ 10.0.0.1  kubeadm init       ', '✗ 10.0.0.2  kubeadm join       refused']);
  });

  it('writes plain lines when not on a terminal', () => {
    const lines: string[] = [];
    const out = new Writable({ write: (c, _e, d) => (lines.push(c.toString()), d()) }) as unknown as NodeJS.WriteStream;
    const p = createInstallProgress(out);
    p.node('10.0.0.1', 'binaries', 'done', '3 binaries');
    expect(lines).toEqual(['10.0.0.1: binaries done: 3 binaries\n']);
  });

  it('shows how long a running step has run, redrawn each second, and stops redrawing at end()', () => {
    vi.useFakeTimers({ now: 0 });
    const { out, screen } = fakeTty();
    const p = createInstallProgress(out);
    p.node('10.0.0.1', 'kubeadm init', 'done');
    p.node('10.0.0.2', 'kubeadm join', 'running', 'worker');
    expect(screen[1]).toBe('… 10.0.0.2  kubeadm join       0s worker');
    vi.advanceTimersByTime(72_000); // no event in between: the board's own redraw moves the time
    expect(screen).toEqual(['✓ 10.0.0.1  kubeadm init       ', '… 10.0.0.2  kubeadm join       1m12s worker']);
    p.end();
    expect(vi.getTimerCount()).toBe(0);
  });

  it('stops redrawing once no step runs', () => {
    vi.useFakeTimers({ now: 0 });
    const p = createInstallProgress(fakeTty().out);
    p.node('10.0.0.1', 'binaries', 'running');
    expect(vi.getTimerCount()).toBe(1);
    p.node('10.0.0.1', 'binaries', 'failed', 'no space');
    expect(vi.getTimerCount()).toBe(0);
  });

  it('gives a finished step\'s time in plain lines, from the node\'s first running step since its last', () => {
    vi.useFakeTimers({ now: 0 });
    const lines: string[] = [];
    const out = new Writable({ write: (c, _e, d) => (lines.push(c.toString()), d()) }) as unknown as NodeJS.WriteStream;
    const p = createInstallProgress(out);
    p.node('10.0.0.1', 'binaries', 'running', 'amd64');
    vi.advanceTimersByTime(8_000);
    p.node('10.0.0.1', 'services', 'running');
    vi.advanceTimersByTime(4_000);
    p.node('10.0.0.1', 'runtime', 'done', 'in place');
    p.node('10.0.0.1', 'kubeadm join', 'running');
    vi.advanceTimersByTime(3_400);
    p.node('10.0.0.1', 'kubeadm join', 'failed', 'refused');
    expect(lines).toEqual([
      '10.0.0.1: binaries running: amd64\n',
      '10.0.0.1: services running\n',
      '10.0.0.1: runtime done (12s): in place\n',
      '10.0.0.1: kubeadm join running\n',
      '10.0.0.1: kubeadm join failed (3.4s): refused\n',
    ]);
    expect(vi.getTimerCount()).toBe(0);
  });
});
