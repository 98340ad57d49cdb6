import { formatDuration, type Output } from '../ui/progress.js';

/**
 * What `acinstall from` shows while it works: on a terminal, one live line per node (its current
 * step, state, and for a running step how long it has run), redrawn in place; elsewhere, one plain
 * line per event, with a finished step's duration.
 */
export type StepState = 'running' | 'done' | 'failed';

export interface InstallProgress {
  master(message: string): void;
  node(ip: string, step: string, state: StepState, detail?: string): void;
  end(): void;
}

export function createInstallProgress(out: Output = process.stderr): InstallProgress {
  return out.isTTY ? new Board(out) : new Lines(out);
}

class Lines implements InstallProgress {
  /** When each node's current work began: its first running step since its last done or failed. */
  private readonly since = new Map<string, number>();

  constructor(private readonly out: Output) {}

  master(message: string): void {
    this.out.write(`${message}\n`);
  }

  node(ip: string, step: string, state: StepState, detail?: string): void {
    let took = '';
    if (state === 'running') {
      if (!this.since.has(ip)) this.since.set(ip, Date.now());
    } else {
      const since = this.since.get(ip);
      if (since !== undefined) took = ` (${formatDuration(Date.now() - since)})`;
      this.since.delete(ip);
    }
    this.out.write(`${ip}: ${step} ${state}${took}${detail ? `: ${detail}` : ''}\n`);
  }

  end(): void {}
}

const MARK: Record<StepState, string> = { running: '…', done: '✓', failed: '✗' };

class Board implements InstallProgress {
  private readonly rows = new Map<string, { step: string; state: StepState; detail: string; since: number }>();
  private drawn = 0;
  private ticker?: NodeJS.Timeout;

  constructor(private readonly out: Output) {}

  private clear(): void {
    if (this.drawn) this.out.write(`\x1b[${this.drawn}A\x1b[0J`);
    this.drawn = 0;
  }

  private draw(): void {
    const width = Math.max(20, (this.out.columns ?? 100) - 1);
    const ipWidth = Math.max(...[...this.rows.keys()].map((k) => k.length), 4);
    const now = Date.now();
    const lines = [...this.rows].map(([ip, r]) => {
      const elapsed = r.state === 'running' ? `${formatDuration(now - r.since)} ` : '';
      return `${MARK[r.state]} ${ip.padEnd(ipWidth)}  ${r.step.padEnd(18)} ${elapsed}${r.detail}`.slice(0, width);
    });
    this.out.write(lines.map((l) => `${l}\n`).join(''));
    this.drawn = lines.length;
  }

  private redraw(): void {
    this.clear();
    this.draw();
  }

  master(message: string): void {
    this.clear();
    this.out.write(`${message}\n`);
    this.draw();
  }

  node(ip: string, step: string, state: StepState, detail = ''): void {
    this.rows.set(ip, { step, state, detail, since: Date.now() });
    this.redraw();
    // Running steps' times move on their own, so the board redraws each second while one runs;
    // unref'd, so an install that ends without end() still exits.
    const running = [...this.rows.values()].some((r) => r.state === 'running');
    if (running && !this.ticker) this.ticker = setInterval(() => this.redraw(), 1000).unref();
    if (!running) this.stopTicker();
  }

  private stopTicker(): void {
    clearInterval(this.ticker);
    this.ticker = undefined;
  }

  end(): void {
    this.stopTicker();
    this.drawn = 0;
  }
}
