import { afterAll, beforeAll } from 'vitest';
import { join } from 'node:path';
import { labDown, labUp, type Lab } from '../hosts/lab.js';
import { tempDir } from './env.js';

/** A test file's test hosts and work directory, up before its tests and gone after them. */
export function useLab(count: number) {
  const ctx = {} as { lab: Lab; work: Awaited<ReturnType<typeof tempDir>> };
  beforeAll(async () => {
    ctx.work = await tempDir();
    ctx.lab = await labUp(count, { dir: join(ctx.work.dir, 'lab') });
  }, 120_000);
  afterAll(async () => {
    if (ctx.lab) await labDown(ctx.lab);
    await ctx.work?.cleanup();
  });
  return ctx;
}
