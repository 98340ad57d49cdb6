/**
 * What `acinstall from` shows while it works: on a terminal, one live line per node (its current
 * step and state), redrawn in place; elsewhere, one plain line per event.
 */
export type StepState = 'running' | 'done' | 'failed';

export interface InstallProgress {
  master(message: string): void;
  node(ip: string, step: string, state: StepState, detail?: string): void;
  end(): void;
}

export function createInstallProgress(out: NodeJS.WriteStream = process.stderr): InstallProgress {
  return out.isTTY ? new Board(out) : new Lines(out);
}

class Lines implements InstallProgress {
  constructor(private readonly out: NodeJS.WriteStream) {}

  master(message: string): void {
    this.out.write(`${message}\n`);
  }

  node(ip: string, step: string, state: StepState, detail?: string): void {
    this.out.write(`${ip}: ${step} ${state}${detail ? `: ${detail}` : ''}\n`);
  }

  end(): void {}
}

const MARK: Record<StepState, string> = { running: '…', done: '✓', failed: '✗' };

class Board implements InstallProgress {
  private readonly rows = new Map<string, { step: string; state: StepState; detail: string }>();
  private drawn = 0;

  constructor(private readonly out: NodeJS.WriteStream) {}

  private clear(): void {
    if (this.drawn) this.out.write(`\x1b[${this.drawn}A\x1b[0J`);
    this.drawn = 0;
  }

  private draw(): void {
    const width = Math.max(20, (this.out.columns ?? 100) - 1);
    const ipWidth = Math.max(...[...this.rows.keys()].map((k) => k.length), 4);
    const lines = [...this.rows].map(([ip, r]) => `${MARK[r.state]} ${ip.padEnd(ipWidth)}  ${r.step.padEnd(18)} ${r.detail}`.slice(0, width));
    this.out.write(lines.map((l) => `${l}\n`).join(''));
    this.drawn = lines.length;
  }

  master(message: string): void {
    this.clear();
    this.out.write(`${message}\n`);
    this.draw();
  }

  node(ip: string, step: string, state: StepState, detail = ''): void {
    this.rows.set(ip, { step, state, detail });
    this.clear();
    this.draw();
  }

  end(): void {
    this.drawn = 0;
  }
}
