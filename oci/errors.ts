/**
 * The one error type of the project. `code` is stable (scripts and tests match on it); `message`
 * tells the user what happened and what to do about it.
 */
export class AcpackError extends Error {
  constructor(
    readonly code: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'AcpackError';
  }
}

/** A count and its noun, singular for exactly one: 1 chart, 2 charts, 0 charts (`many` for irregular plurals). */
export function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

/** Formats a byte count the way messages and summaries show it: 1,204 bytes / 3.2 MB. */
export function formatBytes(n: number): string {
  // Not toLocaleString: its first call loads ICU data (~70 ms), noticeable in a CLI.
  if (n < 1000) return plural(n, 'byte');
  const units = ['kB', 'MB', 'GB', 'TB'];
  let v = n / 1000;
  let i = 0;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}
