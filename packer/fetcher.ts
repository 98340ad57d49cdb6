import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import pLimit from 'p-limit';
import { AcpackError } from '../oci/errors.js';
import type { Digest } from '../oci/digest.js';
import { agentFor, DEFAULT_RETRY, fetchWithRetry } from '../oci/http.js';
import { downloadInto } from '../oci/download.js';
import { formatReference, type Reference } from '../oci/reference.js';
import type { BlobWriter, ContentStore } from '../oci/store.js';
import type { RegistryClient } from '../oci/registry-client.js';

/** A blob to have in the store: where it comes from and what it must be. */
export type BlobSource =
  | { kind: 'registry'; ref: Reference; digest: Digest; size: number }
  /** `origin`: set when the URL came from content (a repository index), not from the user's manifest: http(s) only. */
  | { kind: 'url'; url: string; digest?: Digest; size?: number; origin?: string };

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
  ) {
    this.limit = pLimit(concurrency);
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
    if (src.digest && (await this.store.has(src.digest))) return src.digest;
    const source = src.kind === 'registry' ? formatReference(src.ref) : src.url;
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

