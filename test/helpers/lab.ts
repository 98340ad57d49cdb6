import { afterAll, beforeAll } from 'vitest';
import { join } from 'node:path';
import { labDown, labUp, type Lab } from '../hosts/lab.js';
import { tempDir, withRegistry } from './env.js';

/**
 * A test file's test hosts and work directory, up before its tests and gone after them. With
 * `prepare`, a source registry runs first for it to push images to and build bundles from, in the
 * work directory; that registry is gone before the hosts come up (the site has no upstream), and
 * what `prepare` returns is `built`. `hosts.arm64` names hosts that play arm64 machines (see labUp).
 */
export function useLab<T = undefined>(count: number, prepare?: (source: { host: string; dir: string }) => Promise<T>, hosts: { arm64?: string[] } = {}) {
  const ctx = {} as { lab: Lab; work: Awaited<ReturnType<typeof tempDir>>; built: T };
  beforeAll(
    async () => {
      ctx.work = await tempDir();
      if (prepare) {
        const source = await withRegistry();
        try {
          ctx.built = await prepare({ host: source.registry.host, dir: ctx.work.dir });
        } finally {
          await source.cleanup();
        }
      }
      ctx.lab = await labUp(count, { dir: join(ctx.work.dir, 'lab'), ...hosts });
    },
    prepare ? 180_000 : 120_000,
  );
  afterAll(async () => {
    if (ctx.lab) await labDown(ctx.lab);
    await ctx.work?.cleanup();
  });
  return ctx;
}
