import { Agent, interceptors, request, type Dispatcher } from 'undici';
import { STATUS_CODES } from 'node:http';
import type { Readable } from 'node:stream';
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

/** Only these schemes are ever requested, whoever named the URL (a user, a registry, a redirect, an index). */
function isHttpUrl(url: URL): boolean {
  return url.protocol === 'http:' || url.protocol === 'https:';
}

/**
 * Runs under the redirect interceptor, so it sees every hop: a redirect to anything but http(s)
 * (file:///etc/shadow, ftp:, data:) fails the request with BAD_URL naming it, instead of undici's bare
 * argument error being retried as a network failure.
 */
const httpOnlyRedirects: Dispatcher.DispatcherComposeInterceptor = (dispatch) => (opts, handler) =>
  dispatch(opts, {
    onRequestStart: (controller, context) => handler.onRequestStart?.(controller, context),
    onRequestUpgrade: (controller, status, headers, socket) => handler.onRequestUpgrade?.(controller, status, headers, socket),
    onResponseStart(controller, status, headers, statusMessage) {
      const location = headers.location;
      if (status >= 300 && status < 400 && typeof location === 'string') {
        const from = new URL(opts.path, opts.origin);
        let to: URL | undefined;
        try {
          to = new URL(location, from);
        } catch {
          // not a URL: the redirect handler does not follow it either
        }
        if (to && !isHttpUrl(to)) {
          controller.abort(new AcpackError('BAD_URL', `${from} redirected to ${location}: only http and https URLs are followed, never a local file or another scheme`));
          return;
        }
      }
      handler.onResponseStart?.(controller, status, headers, statusMessage);
    },
    onResponseData: (controller, chunk) => handler.onResponseData?.(controller, chunk),
    onResponseEnd: (controller, trailers) => handler.onResponseEnd?.(controller, trailers),
    onResponseError: (controller, err) => handler.onResponseError?.(controller, err),
  });

// undici's request API with Node streams: several times less CPU per byte than fetch's web streams.
// The redirect interceptor drops Authorization when a redirect leaves the origin (a registry sending a
// blob to object storage must not hand it our token).
const redirects = interceptors.redirect({ maxRedirections: 5 });
const secureAgent = new Agent({ connect: { timeout: 30_000 }, headersTimeout: 60_000, bodyTimeout: 120_000 }).compose(httpOnlyRedirects, redirects);
const insecureAgent = new Agent({
  connect: { timeout: 30_000, rejectUnauthorized: false },
  headersTimeout: 60_000,
  bodyTimeout: 120_000,
}).compose(httpOnlyRedirects, redirects);

export interface RequestOptions {
  method: string;
  headers?: Record<string, string>;
  dispatcher: Dispatcher;
}

/** The part of an HTTP response the clients use. */
export class HttpResponse {
  constructor(
    readonly url: string,
    readonly status: number,
    private readonly rawHeaders: Record<string, string | string[] | undefined>,
    readonly body: Readable & { text(): Promise<string>; json(): Promise<unknown>; arrayBuffer(): Promise<ArrayBuffer>; dump(): Promise<void> },
  ) {}

  get ok(): boolean {
    return this.status >= 200 && this.status < 300;
  }

  get statusText(): string {
    return STATUS_CODES[this.status] ?? '';
  }

  header(name: string): string | null {
    const v = this.rawHeaders[name.toLowerCase()];
    return v === undefined ? null : Array.isArray(v) ? v.join(', ') : v;
  }

  text(): Promise<string> {
    return this.body.text();
  }

  json(): Promise<unknown> {
    return this.body.json();
  }

  async bytes(): Promise<Buffer> {
    return Buffer.from(await this.body.arrayBuffer());
  }

  /** Throws the body away (so the connection can be reused). */
  async discard(): Promise<void> {
    await this.body.dump().catch(() => {});
  }
}

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
 * Redirects are followed by the agent, which drops Authorization on a cross-origin hop
 * (a registry redirecting a blob to object storage must not receive our token) and follows
 * http(s) only; `url` itself must be http(s) too (a token realm, an index's chart URL).
 */
export async function fetchWithRetry(url: string, init: RequestOptions, policy: RetryPolicy, what: string): Promise<HttpResponse> {
  let parsed: URL | undefined;
  try {
    parsed = new URL(url);
  } catch {
    // reported below
  }
  if (!parsed || !isHttpUrl(parsed)) throw new AcpackError('BAD_URL', `${what}: ${url} is not an http or https URL`);
  let lastError: unknown;
  for (let attempt = 0; attempt < policy.attempts; attempt++) {
    let wait = backoffMs(policy, attempt);
    try {
      const r = await request(url, { method: init.method as Dispatcher.HttpMethod, headers: init.headers, dispatcher: init.dispatcher });
      const res = new HttpResponse(url, r.statusCode, r.headers, r.body as unknown as HttpResponse['body']);
      if (!retryable(res.status) || attempt === policy.attempts - 1) return res;
      wait = retryAfterMs(res.header('retry-after'), policy.maxDelayMs) ?? wait;
      await res.discard();
      lastError = new Error(`HTTP ${res.status}`);
    } catch (err) {
      if (err instanceof AcpackError) throw err; // a refusal (a redirect to file:), not a network fault
      lastError = err;
    }
    if (attempt < policy.attempts - 1) await sleep(wait);
  }
  throw new AcpackError('UNREACHABLE', `${what}: ${describeNetworkError(lastError)} (after ${policy.attempts} attempts)`, { cause: lastError });
}

export function describeNetworkError(err: unknown): string {
  const e = err as { code?: string; message?: string; cause?: { code?: string; message?: string } };
  const c = e?.cause?.code ? e.cause : e;
  if (c?.code) return `${c.code}${c.message ? ` (${c.message})` : ''}`;
  return err instanceof Error ? err.message : String(err);
}
