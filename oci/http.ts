import { Agent, interceptors, request, type Dispatcher, type RetryHandler } from 'undici';
import { STATUS_CODES } from 'node:http';
import { Readable } from 'node:stream';
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

/** Network faults worth another try: undici's own list, plus timeouts and a temporary DNS failure. */
const RETRIED_ERRORS = [
  'ECONNRESET',
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ETIMEDOUT',
  'ENETDOWN',
  'ENETUNREACH',
  'EHOSTDOWN',
  'EHOSTUNREACH',
  'EPIPE',
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
];

// undici's request API with Node streams: several times less CPU per byte than fetch's web streams.
// The redirect interceptor drops Authorization when a redirect leaves the origin (a registry sending a
// blob to object storage must not hand it our token). The retry interceptor is outermost: a retry
// starts the redirect chain again, and a body cut mid-way is resumed with a Range request.
// throwOnError: false hands back the last busy answer (HTTP 503 and its body) once the attempts are spent,
// so the caller can say what the server said.
const redirects = interceptors.redirect({ maxRedirections: 5 });
const retries = interceptors.retry({ throwOnError: false, methods: ['GET', 'HEAD'], statusCodes: [429, 500, 502, 503, 504], errorCodes: RETRIED_ERRORS });
const timeouts = { headersTimeout: 60_000, bodyTimeout: 120_000 };
const secureAgent = new Agent({ connect: { timeout: 30_000 }, ...timeouts }).compose(httpOnlyRedirects, redirects, retries);
const insecureAgent = new Agent({ connect: { timeout: 30_000, rejectUnauthorized: false }, ...timeouts }).compose(httpOnlyRedirects, redirects, retries);

export interface RequestOptions {
  method: string;
  headers?: Record<string, string>;
  dispatcher: Dispatcher;
  /** A body; a stream is sent once (no retry can replay it). */
  body?: Buffer | Readable;
}

type Body = Readable & { dump(opts?: { limit: number }): Promise<void> };

/** The part of an HTTP response the clients use. Bodies are read with a cap: a server decides their length. */
export class HttpResponse {
  constructor(
    readonly url: string,
    readonly status: number,
    private readonly rawHeaders: Record<string, string | string[] | undefined>,
    readonly body: Body,
  ) {}

  /** undici's answer to `request(url)`, as an HttpResponse. */
  static of(url: string, r: Dispatcher.ResponseData): HttpResponse {
    return new HttpResponse(url, r.statusCode, r.headers, r.body as unknown as Body);
  }

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

  /**
   * The whole body, or undefined when it is (or says it is) longer than `max` bytes: then it is not
   * read further and the connection is closed, whatever the server would have gone on sending.
   */
  async bytesUpTo(max: number): Promise<Buffer | undefined> {
    if (Number(this.header('content-length') ?? 0) > max) {
      this.close();
      return undefined;
    }
    const chunks: Buffer[] = [];
    let n = 0;
    for await (const chunk of this.body as AsyncIterable<Buffer>) {
      n += chunk.length;
      if (n > max) {
        this.close();
        return undefined;
      }
      chunks.push(chunk);
    }
    return Buffer.concat(chunks);
  }

  /** The start of an error body, for a message (at most 300 characters; the rest is not read). */
  async snippet(): Promise<string> {
    const chunks: Buffer[] = [];
    let n = 0;
    this.body.on('error', () => {}); // a cut error body: say what arrived
    try {
      for await (const chunk of this.body as AsyncIterable<Buffer>) {
        chunks.push(chunk);
        if ((n += chunk.length) >= 4096) break; // leaving the loop destroys the body
      }
    } catch {
      // a cut error body: say what arrived
    }
    return Buffer.concat(chunks).toString('utf8').slice(0, 300).trim();
  }

  /** Stops reading the body and closes its connection (undici reports that as an error no one needs to hear). */
  close(): void {
    this.body.on('error', () => {});
    this.body.destroy();
  }

  /** Throws the body away (so the connection can be reused; a long one closes it instead). */
  async discard(): Promise<void> {
    await this.body.dump({ limit: 128 << 10 }).catch(() => {});
  }
}

export function agentFor(skipTlsVerify: boolean): Dispatcher {
  return skipTlsVerify ? insecureAgent : secureAgent;
}

/**
 * A request with bounded retries (undici's retry interceptor on our agents) on network errors, 429
 * and 5xx, honouring Retry-After; after the last attempt a busy answer is returned as it is.
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
  const replayable = !(init.body instanceof Readable);
  const retryOptions: RetryHandler.RetryOptions = { maxRetries: replayable ? policy.attempts - 1 : 0, minTimeout: policy.baseDelayMs, maxTimeout: policy.maxDelayMs };
  // retryOptions reaches the interceptor through the dispatch options (undici's types do not list it on request()).
  const opts = { method: init.method as Dispatcher.HttpMethod, headers: init.headers, dispatcher: init.dispatcher, retryOptions, ...(init.body ? { body: init.body } : {}) };
  try {
    const r = await request(url, opts);
    return HttpResponse.of(url, r);
  } catch (err) {
    if (err instanceof AcpackError) throw err; // a refusal (a redirect to file:), not a network fault
    const retried = RETRIED_ERRORS.includes(networkCode(err) ?? '');
    throw new AcpackError('UNREACHABLE', `${what}: ${describeNetworkError(err)}${retried ? ` (after ${policy.attempts} attempts)` : ''}`, { cause: err });
  }
}

function networkCode(err: unknown): string | undefined {
  const e = err as { code?: string; cause?: { code?: string } };
  return e?.cause?.code ?? e?.code;
}

export function describeNetworkError(err: unknown): string {
  const e = err as { code?: string; message?: string; cause?: { code?: string; message?: string } };
  const c = e?.cause?.code ? e.cause : e;
  if (c?.code) return `${c.code}${c.message ? ` (${c.message})` : ''}`;
  return err instanceof Error ? err.message : String(err);
}
