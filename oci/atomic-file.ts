import { open, rename, rm } from 'node:fs/promises';

/**
 * Replaces a small file whole or not at all: written beside it, flushed to disk, renamed over it.
 * A crash leaves the old file or the new one, never half of either.
 */
export async function writeFileAtomic(path: string, data: string, mode = 0o644): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`;
  try {
    const fh = await open(tmp, 'w', mode);
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}
