import { Agent, fetch, type Dispatcher, type RequestInit, type Response } from 'undici';
import { setTimeout as sleep } from 'node:timers/promises';
import { AcpackError } from './errors.js';

export interface RetryPolicy {
  /** Attempts in all, the first included. */
  attempts: number;
  /** First backoff; doubled each time, capped by `maxDelayMs`. */
  baseDelayMs: number;
  maxDelayMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { attempts: 5, baseDelayMs: 250, maxDelayMs: 15_000 };

const secureAgent = new Agent({ connect: { timeout: 30_000 }, headersTimeout: 60_000, bodyTimeout: 120_000 });
const insecureAgent = new Agent({
  connect: { timeout: 30_000, rejectUnauthorized: false },
  headersTimeout: 60_000,
  bodyTimeout: 120_000,
});

export function agentFor(skipTlsVerify: boolean): Dispatcher {
  return skipTlsVerify ? insecureAgent : secureAgent;
}

/** Statuses worth another try: the server is busy or briefly broken. */
function retryable(status: number): boolean {
  return status === 429 || status === 502 || status === 503 || status === 504 || status === 500;
}

/** How long Retry-After asks us to wait, in ms (seconds or an HTTP date), capped. */
export function retryAfterMs(header: string | null, capMs: number): number | undefined {
  if (!header) return undefined;
  const secs = Number(header);
  const ms = Number.isFinite(secs) ? secs * 1000 : Date.parse(header) - Date.now();
  return Number.isFinite(ms) ? Math.min(Math.max(ms, 0), capMs) : undefined;
}

export function backoffMs(policy: RetryPolicy, attempt: number): number {
  return Math.min(policy.baseDelayMs * 2 ** attempt, policy.maxDelayMs);
}

/**
 * fetch with bounded retries on network errors, 429 and 5xx (honouring Retry-After).
 * Redirects are followed by fetch itself, which drops Authorization on a cross-origin hop
 * (a registry redirecting a blob to object storage must not receive our token).
 */
export async function fetchWithRetry(
  url: string,
  init: RequestInit & { dispatcher: Dispatcher },
  policy: RetryPolicy,
  what: string,
): Promise<Response> {
  let lastError: unknown;
  for (let attempt = 0; attempt < policy.attempts; attempt++) {
    let wait = backoffMs(policy, attempt);
    try {
      const res = await fetch(url, init);
      if (!retryable(res.status) || attempt === policy.attempts - 1) return res;
      wait = retryAfterMs(res.headers.get('retry-after'), policy.maxDelayMs) ?? wait;
      await res.body?.cancel();
      lastError = new Error(`HTTP ${res.status}`);
    } catch (err) {
      lastError = err;
      if (init.signal?.aborted) break;
    }
    if (attempt < policy.attempts - 1) await sleep(wait);
  }
  throw new AcpackError('UNREACHABLE', `${what}: ${describeNetworkError(lastError)} (after ${policy.attempts} attempts)`, { cause: lastError });
}

export function describeNetworkError(err: unknown): string {
  const cause = (err as { cause?: { code?: string; message?: string } })?.cause;
  if (cause?.code) return `${cause.code}${cause.message ? ` (${cause.message})` : ''}`;
  return err instanceof Error ? err.message : String(err);
}
