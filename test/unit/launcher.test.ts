import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { chmod, copyFile, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { LAUNCHER, siteExecutable } from '../../runtime/site-runtime.js';
import { ROOT } from '../helpers/env.js';

/**
 * The medium's `acinstall` launcher (runtime/acinstall.sh), run by sh as on site. What it asks the
 * machine (uname -m, getconf GNU_LIBC_VERSION) is answered by small scripts first on PATH where a
 * test plays another machine; the executable it starts is the real amd64 one.
 */
const run = promisify(execFile);
const VERSION = (JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;

let dir: string;
let medium: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'acpack-launcher-'));
  medium = join(dir, 'medium');
  await mkdir(medium);
  await copyFile(LAUNCHER, join(medium, 'acinstall'));
  await chmod(join(medium, 'acinstall'), 0o755);
  await symlink(siteExecutable('amd64'), join(medium, 'acinstall-linux-amd64'));
});
afterAll(() => rm(dir, { recursive: true, force: true }));

/** Runs `launcher args` with `fakes` (command → what it prints; null: it fails) first on PATH. */
async function launch(fakes: Record<string, string | null>, args: string[], launcher = join(medium, 'acinstall')) {
  const bin = await mkdtemp(join(dir, 'bin-'));
  for (const [name, out] of Object.entries(fakes)) {
    await writeFile(join(bin, name), out === null ? '#!/bin/sh\nexit 1\n' : `#!/bin/sh\necho '${out}'\n`, { mode: 0o755 });
  }
  return run('sh', [launcher, ...args], { env: { PATH: `${bin}:${process.env.PATH}` } }).then(
    (r) => ({ code: 0, ...r }),
    (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
  );
}

/** A refusal: exit 1, one line on stderr, nothing on stdout. */
function oneLine(r: { code: number; stdout: string; stderr: string }): string {
  expect(r.code).toBe(1);
  expect(r.stdout).toBe('');
  expect(r.stderr.trim().split('\n')).toHaveLength(1);
  return r.stderr;
}

describe('the acinstall launcher', () => {
  it("starts this machine's executable with the arguments given", async () => {
    const r = await launch({}, ['--version']);
    expect(r.stdout.trim()).toBe(VERSION);
  });

  it('starts it through a symlink on the PATH, finding the executables beside the real file', async () => {
    await symlink(join(medium, 'acinstall'), join(dir, 'acinstall-link'));
    expect((await launch({}, ['--version'], join(dir, 'acinstall-link'))).stdout.trim()).toBe(VERSION);
  });

  it('says in one line that another arch is not supported', async () => {
    expect(oneLine(await launch({ uname: 'riscv64' }, ['--version']))).toMatch(/this machine is riscv64; acinstall runs on amd64 \(x86_64\) and arm64 \(aarch64\) Linux/);
  });

  it("names the executable the medium lacks for this machine's arch, and what it carries", async () => {
    expect(oneLine(await launch({ uname: 'aarch64' }, ['--version']))).toMatch(/this machine is arm64, and .* has no acinstall-linux-arm64 \(it has: acinstall-linux-amd64 \); bundle with --arch arm64/);
  });

  it('refuses a glibc older than 2.28, comparing versions as numbers', async () => {
    expect(oneLine(await launch({ getconf: 'glibc 2.17' }, ['--version']))).toMatch(/needs glibc 2\.28 or later .* this machine has glibc 2\.17/);
    // 2.9 is older than 2.28, though "2.9" sorts after "2.28" as text.
    expect(oneLine(await launch({ getconf: 'glibc 2.9' }, ['--version']))).toContain('this machine has glibc 2.9');
    expect((await launch({ getconf: 'glibc 2.28' }, ['--version'])).stdout.trim()).toBe(VERSION);
    expect((await launch({ getconf: 'glibc 3.1' }, ['--version'])).stdout.trim()).toBe(VERSION);
  });

  it('refuses a C library that is not glibc', async () => {
    expect(oneLine(await launch({ getconf: null }, ['--version']))).toMatch(/not glibc .*musl/);
  });
});
