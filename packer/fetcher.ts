import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import pLimit from 'p-limit';
import { AcpackError } from '../oci/errors.js';
import { shortDigest, type Digest } from '../oci/digest.js';
import { agentFor, DEFAULT_RETRY, describeNetworkError, fetchWithRetry, type RetryPolicy } from '../oci/http.js';
import { downloadInto } from '../oci/download.js';
import { formatReference, type Reference } from '../oci/reference.js';
import type { BlobWriter, ContentStore } from '../oci/store.js';
import type { RegistryClient } from '../oci/registry-client.js';

/** A blob to have in the store: where it comes from and what it must be. */
export type BlobSource =
  | { kind: 'registry'; ref: Reference; digest: Digest; size: number }
  /**
   * `origin`: set when the URL came from content (a repository index), not from the user's manifest: http(s) only.
   * `what`: what the file is, for messages ("binary kubeadm v1.22.15 for amd64").
   */
  | { kind: 'url'; url: string; digest?: Digest; size?: number; origin?: string; what?: string };

export interface FetcherOptions {
  /** Never go upstream: a blob the store lacks is NOT_CACHED (`acpack bundle --locked` tries the cache alone first). */
  offline?: boolean;
  /**
   * Ask a URL whose file the store already holds whether it still serves it (HEAD), and say here
   * when it does not: a cache must not hide a dead link until a build without it (CI, another machine) fails.
   */
  warnStaleUrl?: (message: string) => void;
}

/** The upstream check of a cached file is advice: one retry, not five. */
const CHECK_RETRY: RetryPolicy = { attempts: 2, baseDelayMs: 250, maxDelayMs: 1000 };

/**
 * Gets blobs into the store: each at most once however many images, arches or charts ask for
 * it (a second request for an in-flight digest waits for the first), with bounded parallelism,
 * resuming partial downloads left by an interrupted run.
 */
export class Fetcher {
  private readonly inflight = new Map<string, Promise<Digest>>();
  private readonly limit;
  fetchedBytes = 0;
  /** Blobs this process downloaded and verified (so reading them back need not hash again). */
  readonly verified = new Set<Digest>();

  constructor(
    private readonly store: ContentStore,
    private readonly client: RegistryClient,
    concurrency = 8,
    /** Progress of downloads; replaceable when another meter takes over. */
    public onBytes: (n: number) => void = () => {},
    private readonly opts: FetcherOptions = {},
  ) {
    this.limit = pLimit(concurrency);
  }

  get offline(): boolean {
    return this.opts.offline === true;
  }

  /** Ensures the blob is in the store; resolves to its digest (known only afterwards for an unpinned URL). */
  ensure(src: BlobSource): Promise<Digest> {
    const key = src.digest ?? (src.kind === 'url' ? `url:${src.url}` : '');
    let p = this.inflight.get(key);
    if (!p) {
      p = this.limit(() => this.fetch(src));
      this.inflight.set(key, p);
      // A failed fetch may be asked for again (by a later run of the same process, e.g. tests).
      p.catch(() => this.inflight.delete(key));
    }
    return p;
  }

  private async fetch(src: BlobSource): Promise<Digest> {
    const source = src.kind === 'registry' ? formatReference(src.ref) : src.url;
    if (src.digest && (await this.store.has(src.digest))) {
      if (src.kind === 'url' && this.opts.warnStaleUrl) {
        const stale = await checkUpstream(src.url, (await this.store.size(src.digest))!);
        if (stale) this.opts.warnStaleUrl(`${src.what ? `${src.what}: ` : ''}${stale}; used the cached copy ${shortDigest(src.digest)}: a build without this cache (another machine, a CI runner) would fail here`);
      }
      return src.digest;
    }
    if (this.opts.offline) throw new AcpackError('NOT_CACHED', `${src.digest ?? 'the file'} from ${source} is not in the cache`);
    const ingestRef = src.digest ?? `url:${src.url}`;
    const writer = await this.store.writer(ingestRef, { digest: src.digest, size: src.size, source });
    const count = (n: number) => {
      this.fetchedBytes += n;
      this.onBytes(n);
    };
    try {
      if (src.kind === 'registry') await this.client.fetchBlob(src.ref, writer, count);
      else await downloadUrl(src.url, writer, count, src.origin);
      const digest = src.digest ?? writer.committed!;
      this.verified.add(digest);
      return digest;
    } finally {
      await writer.close();
    }
  }
}

/**
 * http(s) with Range resume, or file: (for binaries built or mirrored locally) when the user's manifest
 * named it; a URL that some fetched content (`origin`) named is http(s) only.
 */
async function downloadUrl(url: string, writer: BlobWriter, onBytes: (n: number) => void, origin?: string): Promise<void> {
  const parsed = new URL(url);
  if (origin && parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw new AcpackError('BAD_URL', `${url}, named by ${origin}, is not an http or https URL: content from the network may not point at local files or other schemes`);
  }
  if (parsed.protocol === 'file:') {
    const path = fileURLToPath(parsed);
    if (writer.offset > 0) await writer.reset();
    try {
      // A regular file, read up to the size it had when looked at: never a device, a pipe or a growing file.
      const s = await stat(path);
      if (!s.isFile()) throw new AcpackError('BAD_URL', `${url} is not a regular file: a binary must be a file (not a device, a pipe or a directory)`);
      const data = s.size > 0 ? createReadStream(path, { highWaterMark: 1 << 20, end: s.size - 1 }) : [];
      for await (const chunk of data) {
        await writer.write(chunk as Buffer);
        onBytes((chunk as Buffer).length);
      }
    } catch (err) {
      await writer.discard(); // a local file is read whole each time: nothing to resume
      if (err instanceof AcpackError) throw err;
      throw new AcpackError('NOT_FOUND', `cannot read ${url}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    await writer.commit();
    return;
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw new AcpackError('BAD_URL', `${url}: only http, https and file URLs can be fetched`);
  }
  const open = (offset: number) =>
    fetchWithRetry(url, { method: 'GET', headers: offset > 0 ? { range: `bytes=${offset}-` } : {}, dispatcher: agentFor(false) }, DEFAULT_RETRY, `GET ${url}`);
  await downloadInto(writer, open, url, onBytes);
}

/**
 * What is wrong upstream with a file the cache holds (`size` bytes), or undefined when its URL still
 * serves it: a local file gone, an HTTP error, no answer, or another size (the file changed). A
 * server that refuses HEAD is asked for its first byte instead.
 */
async function checkUpstream(url: string, size: number): Promise<string | undefined> {
  const parsed = new URL(url);
  if (parsed.protocol === 'file:') {
    const s = await stat(fileURLToPath(parsed)).catch(() => undefined);
    return s?.isFile() ? undefined : `${fileURLToPath(parsed)} is ${s ? 'not a regular file' : 'gone'}`;
  }
  const ask = (method: string, headers: Record<string, string> = {}) =>
    fetchWithRetry(url, { method, headers, dispatcher: agentFor(false) }, CHECK_RETRY, `${method} ${url}`);
  try {
    let res = await ask('HEAD');
    if (res.status === 405 || res.status === 501) {
      await res.discard();
      res = await ask('GET', { range: 'bytes=0-0' });
    }
    res.close(); // only the headers count
    if (res.status >= 400) return `${url} answered HTTP ${res.status} ${res.statusText}`;
    const total = res.status === 206 ? /\/(\d+)$/.exec(res.header('content-range') ?? '')?.[1] : res.header('content-length');
    if (total !== undefined && total !== null && Number(total) !== size) return `${url} now serves ${Number(total)} bytes, not the ${size} of the pinned file: it changed upstream`;
    return undefined;
  } catch (err) {
    const cause = err instanceof AcpackError && err.cause ? err.cause : err;
    return `${url} did not answer (${describeNetworkError(cause)})`;
  }
}
