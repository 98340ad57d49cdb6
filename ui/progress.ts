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

/** Where progress goes: process.stderr or stdout, or in tests anything with write() (isTTY and columns for a terminal). */
export interface Output {
  write(text: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

export function reporterMode(json: boolean, stream: Output = process.stderr): ReporterMode {
  if (json) return 'json';
  return stream.isTTY ? 'tty' : 'plain';
}

/** `out` defaults to stdout for JSON events (they are the command's output), stderr otherwise. */
export function createReporter(mode: ReporterMode, out?: Output): Reporter {
  switch (mode) {
    case 'tty':
      return new TtyReporter(out);
    case 'json':
      return new LineReporter(true, out);
    case 'plain':
      return new LineReporter(false, out);
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

/** A duration as people read it: 3.4s, 42s, 1m12s, 2h05m (tenths only where they still matter). */
export function formatDuration(ms: number): string {
  const s = Math.max(0, ms) / 1000;
  if (s < 10) return `${s.toFixed(1).replace(/\.0$/, '')}s`;
  if (s < 60) return `${Math.floor(s)}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(Math.floor(s % 60)).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
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

  get elapsedMs(): number {
    return Math.max(0, Date.now() - this.started);
  }

  get rate(): number {
    const secs = this.elapsedMs / 1000;
    return secs > 0 ? this.done / secs : 0;
  }

  get etaSeconds(): number | undefined {
    const r = this.rate;
    return r > 0 && this.total > this.done ? Math.round((this.total - this.done) / r) : undefined;
  }

  /** Bytes so far, rate, elapsed; with a total also its percent and an ETA. Without one, "of 0" would read as stuck. */
  counts(): string {
    const of = this.total > 0 ? ` of ${formatBytes(this.total)} (${percent(this.done, this.total)}%)` : '';
    const eta = this.etaSeconds;
    return `${formatBytes(this.done)}${of}, ${formatBytes(Math.round(this.rate))}/s, ${formatDuration(this.elapsedMs)} elapsed${eta !== undefined ? `, ETA ${formatDuration(eta * 1000)}` : ''}`;
  }

  line(): string {
    return `${this.name}: ${this.counts()}`;
  }

  doneLine(): string {
    return `${this.name}: done${this.done > 0 ? `, ${formatBytes(this.done)}` : ''} in ${formatDuration(this.elapsedMs)}`;
  }
}

/** Plain lines (CI logs, pipes) every few seconds, or JSON events for `--json`. */
class LineReporter implements Reporter {
  private readonly meter = new Meter();
  private lastPrint = 0;
  private readonly interval: number;
  private readonly started = Date.now();

  constructor(
    private readonly json: boolean,
    private readonly out: Output = json ? process.stdout : process.stderr,
  ) {
    this.interval = json ? 1000 : 5000;
  }

  private emit(event: string, message: string, data: Record<string, unknown> = {}): void {
    if (this.json) this.out.write(`${JSON.stringify({ event, message, elapsedMs: Date.now() - this.started, ...data })}\n`);
    else this.out.write(`${message}\n`);
  }

  phase(name: string, totalBytes: number): void {
    this.finish();
    this.meter.start(name, totalBytes);
    this.lastPrint = Date.now();
    this.emit('phase', totalBytes > 0 ? `${name}: ${formatBytes(totalBytes)}` : `${name}…`, { phase: name, totalBytes });
  }

  bytes(n: number): void {
    this.meter.add(n);
    if (this.meter.name && Date.now() - this.lastPrint >= this.interval) this.progress();
  }

  private progress(): void {
    this.lastPrint = Date.now();
    const m = this.meter;
    this.emit('progress', m.line(), { phase: m.name, doneBytes: m.done, totalBytes: m.total, bytesPerSecond: Math.round(m.rate), etaSeconds: m.etaSeconds, phaseElapsedMs: m.elapsedMs });
  }

  /** The phase under way, if any, is over: one done line, whether or not its total was known. */
  private finish(): void {
    const m = this.meter;
    if (!m.name) return;
    // JSON consumers may take the final counts from the last progress event, as before phase-done existed.
    if (this.json) this.progress();
    this.emit('phase-done', m.doneLine(), { phase: m.name, doneBytes: m.done, phaseElapsedMs: m.elapsedMs });
    m.name = '';
  }

  info(message: string, data?: Record<string, unknown>): void {
    this.emit('info', message, data);
  }

  warn(message: string): void {
    this.emit('warning', `warning: ${message}`);
  }

  end(): void {
    this.finish();
  }
}

/** A live line on a terminal: a bar, bytes, rate, elapsed and ETA; bytes, rate and elapsed only while the total is unknown. */
class TtyReporter implements Reporter {
  private bar?: cliProgress.SingleBar;
  private readonly meter = new Meter();

  constructor(private readonly out: Output = process.stderr) {}

  phase(name: string, totalBytes: number): void {
    this.finish();
    this.meter.start(name, totalBytes);
    this.bar = new cliProgress.SingleBar(
      {
        // A function rather than a template: each redraw reads the meter, so elapsed time and rate
        // move even while no bytes arrive, and a phase without a total gets no bar at all.
        format: (options) => this.render(options),
        hideCursor: true,
        // The phase's done line takes the finished bar's place.
        clearOnComplete: true,
        stream: this.out as NodeJS.WritableStream,
        fps: 5,
      },
      cliProgress.Presets.shades_classic,
    );
    this.bar.start(totalBytes, 0);
  }

  private render(options: cliProgress.Options): string {
    const m = this.meter;
    if (!(m.total > 0)) return m.line();
    return `${m.name} [${cliProgress.Format.BarFormat(Math.min(1, m.done / m.total), options)}] ${m.counts()}`;
  }

  bytes(n: number): void {
    this.meter.add(n);
    this.bar?.update(this.meter.done);
  }

  info(message: string): void {
    this.bar?.stop();
    this.out.write(`${message}\n`);
    this.bar?.start(this.meter.total, this.meter.done);
  }

  warn(message: string): void {
    this.info(`warning: ${message}`);
  }

  private finish(): void {
    if (!this.bar) return;
    this.bar.stop();
    this.bar = undefined;
    this.out.write(`${this.meter.doneLine()}\n`);
  }

  end(): void {
    this.finish();
  }
}
