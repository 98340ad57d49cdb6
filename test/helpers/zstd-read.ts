import type { Chunks } from '../../oci/chunks.js';
import { ZstdReader } from '../../oci/zstd.js';

/** Chunks handed out from memory, counting how many were taken. */
export function memoryChunks(pieces: Buffer[]): Chunks & { taken: number } {
  let at = 0;
  return {
    taken: 0,
    async next() {
      if (at >= pieces.length) return undefined;
      this.taken++;
      return pieces[at++];
    },
    close() {},
  };
}

/** All that ZstdReader decompresses from `pieces`, copied out of its reused buffer. */
export async function inflate(pieces: Buffer[]): Promise<Buffer> {
  const reader = new ZstdReader(memoryChunks(pieces));
  const out: Buffer[] = [];
  try {
    for (let c = await reader.read(); c; c = await reader.read()) out.push(Buffer.from(c));
  } finally {
    reader.close();
  }
  return Buffer.concat(out);
}
