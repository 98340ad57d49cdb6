import cliProgress from 'cli-progress';
import { formatBytes } from '../oci/errors.js';

/** What long work tells the user: phases with byte totals, and notable lines. */
export interface Reporter {
  phase(name: string, totalBytes: number): void;
  bytes(n: number): void;
  info(message: string, data?: Record<string, unknown>): void;
  warn(message: string): void;
  end(): void;
}

export type ReporterMode = 'tty' | 'plain' | 'json' | 'silent';

export function reporterMode(json: boolean, stream: NodeJS.WriteStream = process.stderr): ReporterMode {
  if (json) return 'json';
  return stream.isTTY ? 'tty' : 'plain';
}

export function createReporter(mode: ReporterMode): Reporter {
  switch (mode) {
    case 'tty':
      return new TtyReporter();
    case 'json':
      return new LineReporter(true);
    case 'plain':
      return new LineReporter(false);
    default:
      return new SilentReporter();
  }
}

class SilentReporter implements Reporter {
  phase(): void {}
  bytes(): void {}
  info(): void {}
  warn(): void {}
  end(): void {}
}

/**
 * `done` as a whole percent of `total`, within 0–100 (undefined without a total). Counts can pass
 * either end: a restarted download takes back what it had counted, possibly in a later phase.
 */
export function percent(done: number, total: number): number | undefined {
  if (!(total > 0)) return undefined;
  return Math.min(100, Math.max(0, Math.floor((done / total) * 100)));
}

/** Rate over the phase so far; ETA from it. */
class Meter {
  name = '';
  total = 0;
  done = 0;
  started = Date.now();

  start(name: string, total: number): void {
    Object.assign(this, { name, total, done: 0, started: Date.now() });
  }

  add(n: number): void {
    this.done = Math.max(0, this.done + n);
  }

  get rate(): number {
    const secs = (Date.now() - this.started) / 1000;
    return secs > 0 ? this.done / secs : 0;
  }

  get etaSeconds(): number | undefined {
    const r = this.rate;
    return r > 0 && this.total > this.done ? Math.round((this.total - this.done) / r) : undefined;
  }

  line(): string {
    const p = percent(this.done, this.total);
    const pct = p === undefined ? '' : ` (${p}%)`;
    const eta = this.etaSeconds;
    const of = this.total > 0 ? ` of ${formatBytes(this.total)}` : '';
    return `${this.name}: ${formatBytes(this.done)}${of}${pct}, ${formatBytes(Math.round(this.rate))}/s${eta !== undefined ? `, ETA ${eta}s` : ''}`;
  }
}

/** Plain lines (CI logs, pipes) every few seconds, or JSON events for `--json`. */
class LineReporter implements Reporter {
  private readonly meter = new Meter();
  private lastPrint = 0;
  private readonly interval: number;

  constructor(private readonly json: boolean) {
    this.interval = json ? 1000 : 5000;
  }

  private readonly started = Date.now();

  private emit(event: string, message: string, data: Record<string, unknown> = {}): void {
    if (this.json) process.stdout.write(`${JSON.stringify({ event, message, elapsedMs: Date.now() - this.started, ...data })}\n`);
    else process.stderr.write(`${message}\n`);
  }

  phase(name: string, totalBytes: number): void {
    this.flush();
    this.meter.start(name, totalBytes);
    this.lastPrint = Date.now();
    this.emit('phase', totalBytes > 0 ? `${name}: ${formatBytes(totalBytes)}` : `${name}…`, { phase: name, totalBytes });
  }

  bytes(n: number): void {
    this.meter.add(n);
    if (Date.now() - this.lastPrint >= this.interval) this.flush();
  }

  private flush(): void {
    if (!this.meter.name) return;
    this.lastPrint = Date.now();
    const m = this.meter;
    this.emit('progress', m.line(), { phase: m.name, doneBytes: m.done, totalBytes: m.total, bytesPerSecond: Math.round(m.rate), etaSeconds: m.etaSeconds });
  }

  info(message: string, data?: Record<string, unknown>): void {
    this.emit('info', message, data);
  }

  warn(message: string): void {
    this.emit('warning', `warning: ${message}`);
  }

  end(): void {
    this.flush();
    this.meter.name = '';
  }
}

/** A live bar with bytes, rate and ETA on a terminal. */
class TtyReporter implements Reporter {
  private bar?: cliProgress.SingleBar;
  private readonly meter = new Meter();

  phase(name: string, totalBytes: number): void {
    this.stopBar();
    this.meter.start(name, totalBytes);
    this.bar = new cliProgress.SingleBar(
      {
        format: '{phase} [{bar}] {percentage}% | {doneFmt} of {totalFmt} | {rateFmt}/s | ETA {eta_formatted}',
        hideCursor: true,
        stream: process.stderr,
        etaBuffer: 50,
        fps: 5,
      },
      cliProgress.Presets.shades_classic,
    );
    this.bar.start(Math.max(totalBytes, 1), 0, this.payload());
  }

  private payload() {
    return { phase: this.meter.name, doneFmt: formatBytes(this.meter.done), totalFmt: formatBytes(this.meter.total), rateFmt: formatBytes(Math.round(this.meter.rate)) };
  }

  bytes(n: number): void {
    this.meter.add(n);
    this.bar?.update(Math.min(this.meter.done, Math.max(this.meter.total, 1)), this.payload());
  }

  info(message: string): void {
    if (this.bar) this.bar.stop();
    process.stderr.write(`${message}\n`);
    if (this.bar) this.bar.start(Math.max(this.meter.total, 1), this.meter.done, this.payload());
  }

  warn(message: string): void {
    this.info(`warning: ${message}`);
  }

  private stopBar(): void {
    this.bar?.stop();
    this.bar = undefined;
  }

  end(): void {
    this.stopBar();
  }
}
