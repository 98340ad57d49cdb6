import type { HttpResponse } from './http.js';
import { AcpackError, formatBytes } from './errors.js';
import type { BlobWriter } from './store.js';

/** Opens the source, asking for bytes from `offset` on when it is above zero. */
export type OpenSource = (offset: number) => Promise<HttpResponse>;

const MAX_ATTEMPTS = 5;

/**
 * Streams a source into a blob writer and commits it. A cut connection is resumed with a Range
 * request from what is already written (hashed); a server that ignores Range is restarted from
 * zero. The writer's commit checks size and digest.
 */
export async function downloadInto(writer: BlobWriter, open: OpenSource, name: string, onBytes: (n: number) => void = () => {}): Promise<void> {
  const { size } = writer.expected;
  let lastError: unknown;
  for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
    if (size !== undefined && writer.offset === size) break;
    const offset = writer.offset;
    const res = await open(offset);
    if (res.status === 416) {
      await res.discard();
      onBytes(-offset);
      await writer.reset();
      continue;
    }
    if (res.status === 404) {
      await res.discard();
      throw new AcpackError('NOT_FOUND', `${name} was not found (HTTP 404)`);
    }
    if (!res.ok) {
      const text = await res.snippet();
      throw new AcpackError('SOURCE_ERROR', `${name}: HTTP ${res.status} ${res.statusText}${text ? `: ${text}` : ''}`);
    }
    if (offset > 0 && !resumedAt(res, offset)) {
      onBytes(-offset);
      await writer.reset();
    }
    try {
      for await (const chunk of res.body as AsyncIterable<Buffer>) {
        await writer.write(chunk);
        onBytes(chunk.length);
      }
      if (size === undefined || writer.offset >= size) break;
      lastError = new Error('the connection closed early');
    } catch (err) {
      if (err instanceof AcpackError) throw err;
      lastError = err;
    }
  }
  if (size !== undefined && writer.offset < size && lastError) {
    throw new AcpackError(
      'UNREACHABLE',
      `${name}: the download kept failing at ${formatBytes(writer.offset)} of ${formatBytes(size)}; run again to resume from there`,
      { cause: lastError },
    );
  }
  await writer.commit();
}

function resumedAt(res: HttpResponse, offset: number): boolean {
  if (res.status !== 206) return false;
  const m = /^bytes (\d+)-/.exec(res.header('content-range') ?? '');
  return m !== null && Number(m[1]) === offset;
}
