import { describe, expect, it } from 'vitest';
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
});
