import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { DIRECT_ALIGN, giveStage, takeStage } from './stages.js';

/**
 * Reads `length` bytes of the file at `path` from `start`, yielding views of one stage (stages.ts)
 * that are valid until the next: with O_DIRECT from the disk into the stage, not copied into the
 * page cache and out of it again (on this machine that copy cost the packer more CPU than reading
 * from the disk, for blobs it wrote with O_DIRECT moments before); through the page cache where
 * O_DIRECT is refused or no stage is free. Ends early, without an error, at the end of the file.
 */
export async function* readDirect(path: string, start: number, length: number): AsyncGenerator<Buffer> {
  const stage = takeStage();
  let direct = stage !== undefined;
  let fh: FileHandle | undefined;
  try {
    fh = await open(path, direct ? constants.O_RDONLY | constants.O_DIRECT : 'r').catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'EINVAL') throw err;
      direct = false;
      return open(path, 'r');
    });
    const buf = stage ?? Buffer.allocUnsafe(1 << 20);
    for (let at = 0; at < length; ) {
      // Direct reads start on a block: the bytes before `start + at` in it are skipped.
      const skip = direct ? (start + at) % DIRECT_ALIGN : 0;
      let bytesRead: number;
      try {
        ({ bytesRead } = await fh.read(buf, 0, direct ? buf.length : Math.min(buf.length, length - at), start + at - skip));
      } catch (err) {
        if (!direct || (err as NodeJS.ErrnoException).code !== 'EINVAL') throw err;
        await fh.close();
        fh = await open(path, 'r');
        direct = false;
        continue;
      }
      const n = Math.min(bytesRead - skip, length - at);
      if (n <= 0) return;
      yield buf.subarray(skip, skip + n);
      at += n;
    }
  } finally {
    await fh?.close();
    if (stage) giveStage(stage);
  }
}
