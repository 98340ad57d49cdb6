import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { spawn } from 'node:child_process';
import { startSourceRegistry, type SourceRegistry } from '../../demo/source-registry.js';
import { createReporter } from '../../ui/progress.js';
import { nodeArch } from '../../arch/platform.js';
import { siteExecutable } from '../../runtime/site-runtime.js';

export const ROOT = resolve(import.meta.dirname, '../..');
/** acinstall as it ships: this arch's single executable (test/global-site.ts keeps it built). */
export const ACINSTALL = siteExecutable(nodeArch());
export const silent = createReporter('silent');

/** A temp dir removed by the returned cleanup. */
export async function tempDir(prefix = 'acpack-test-'): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** A real docker-registry on 127.0.0.1 for the duration of a test file. */
export async function withRegistry(): Promise<{ registry: SourceRegistry; dir: string; cleanup: () => Promise<void> }> {
  const t = await tempDir('acpack-registry-');
  const registry = await startSourceRegistry(t.dir);
  return {
    registry,
    dir: t.dir,
    cleanup: async () => {
      await registry.stop();
      await t.cleanup();
    },
  };
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

type CliOptions = { env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number };
type RunningCli = Promise<CliResult> & { pid?: number; kill: (s?: NodeJS.Signals) => void };

/** Runs the acpack CLI from source (tsx), as a user would run it. */
export function runCli(args: string[], opts: CliOptions = {}): RunningCli {
  return runCommand([process.execPath, '--import', 'tsx', join(ROOT, 'packer/main.ts')], args, opts);
}

/** Runs acinstall's single executable, as a user on site would run it. */
export function runAcinstall(args: string[], opts: CliOptions = {}): RunningCli {
  return runCommand([ACINSTALL], args, opts);
}

function runCommand([bin, ...first]: string[], args: string[], opts: CliOptions): RunningCli {
  const child = spawn(bin, [...first, ...args], {
    cwd: opts.cwd ?? ROOT,
    env: { ...process.env, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
  const p = new Promise<CliResult>((resolvePromise) => {
    child.on('close', (code) => {
      clearTimeout(timer);
      resolvePromise({ code, stdout, stderr });
    });
  }) as RunningCli;
  p.pid = child.pid;
  p.kill = (s = 'SIGKILL') => child.kill(s);
  return p;
}
