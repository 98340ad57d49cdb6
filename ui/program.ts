import type { Command } from 'commander';
import cluster from 'node:cluster';
import { readFileSync } from 'node:fs';
import { isSea } from 'node:sea';
import { dirname, join } from 'node:path';
import { AcpackError } from '../oci/errors.js';

/** Set by the site build (scripts/build-site.ts): the executable has no package.json beside it. */
declare const ACPACK_VERSION: string | undefined;

/** This acpack's version, from the package.json above this module (the same from source and from dist/). */
export function ownVersion(): string {
  if (typeof ACPACK_VERSION === 'string') return ACPACK_VERSION;
  for (let dir = import.meta.dirname; dirname(dir) !== dir; dir = dirname(dir)) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'acpack' && pkg.version) return pkg.version;
    } catch {
      // not here: one level up
    }
  }
  return 'unknown';
}

/** Runs a CLI program (acpack or acinstall): AcpackErrors print their message only; anything else is a bug, said so. */
export async function runProgram(program: Command, argv: string[]): Promise<number> {
  try {
    program.version(ownVersion(), '-V, --version', 'print the version');
    await program.parseAsync(argv);
    return 0;
  } catch (err) {
    const debug = argv.includes('--debug');
    process.stderr.write(`error: ${(err as Error)?.message ?? String(err)}\n`);
    // With --json a script reads events on stdout: the error is one more event there.
    if (argv.includes('--json')) {
      const code = err instanceof AcpackError ? err.code : 'UNEXPECTED';
      process.stdout.write(`${JSON.stringify({ event: 'error', code, message: (err as Error)?.message ?? String(err) })}\n`);
    }
    if (err instanceof AcpackError) {
      if (debug && err.stack) process.stderr.write(`${err.stack}\n`);
      if (debug && err.cause) process.stderr.write(`caused by: ${(err.cause as Error).stack ?? String(err.cause)}\n`);
    } else if (debug || !(err instanceof Error)) {
      process.stderr.write(`${(err as Error)?.stack ?? ''}\n`);
    } else {
      process.stderr.write('(an unexpected error: run with --debug for details and report it)\n');
    }
    return 1;
  }
}

/**
 * The command line that runs this very program again (the registry's unit, its worker processes):
 * node and the script from source or dist/, the executable alone as a single executable.
 */
export function selfCommand(): string[] {
  return isSea() ? [process.execPath] : [process.execPath, ...process.execArgv, process.argv[1]];
}

/**
 * This process's arguments as commander reads them (program, script, arguments). A single executable
 * is given its own path as argv[1]; a cluster worker of one is also given the module path that
 * cluster.fork always passes, which is not an argument of ours.
 */
export function programArgv(): string[] {
  return isSea() && cluster.isWorker ? [process.argv[0], process.argv[1], ...process.argv.slice(3)] : process.argv;
}
