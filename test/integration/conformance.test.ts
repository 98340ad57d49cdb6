import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import bcrypt from 'bcryptjs';
import { freePort } from '../../demo/source-registry.js';
import { stopChild } from '../../demo/processes.js';
import { ACINSTALL, ROOT, tempDir } from '../helpers/env.js';

/**
 * The official OCI distribution-spec conformance suite (v1.1.1) against the real `acinstall serve`
 * (two workers, htpasswd users), in three of its modes. The suite sits beside the repository (CI
 * copies shared/ next to a fresh clone, read-only): its binary is unpacked into a temp dir and its
 * reports are written there, never into shared/.
 */
const SUITE = join(ROOT, '../shared/tools/conformance');
const USER = 'conformance';
const PASSWORD = 'conf-pw';

let work: Awaited<ReturnType<typeof tempDir>>;
let child: ChildProcess;
let base: string;
let serveLog = '';

beforeAll(async () => {
  if (!existsSync(join(SUITE, 'run.sh'))) throw new Error(`the conformance suite is missing: expected ${SUITE}/run.sh (shared/tools/conformance beside the repository)`);
  work = await tempDir('acpack-conformance-');
  await writeFile(join(work.dir, 'htpasswd'), `${USER}:${bcrypt.hashSync(PASSWORD, 8)}\n`);
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  const args = ['serve', '--store', join(work.dir, 'store'), '--listen', `127.0.0.1:${port}`, '--htpasswd', join(work.dir, 'htpasswd'), '--workers', '2', '--quiet'];
  child = spawn(ACINSTALL, [...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  child.stderr!.on('data', (c: Buffer) => (serveLog = (serveLog + c.toString()).slice(-4000)));
  for (let i = 0; i < 300; i++) {
    if (child.exitCode !== null) break;
    if ((await fetch(`${base}/v2/`).then((r) => r.status, () => 0)) === 401) return;
    await sleep(100);
  }
  throw new Error(`acinstall serve did not start: ${serveLog}`);
});

afterAll(async () => {
  if (child) await stopChild(child, 5000);
  await work?.cleanup();
});

interface SuiteRun {
  passed: number;
  failed: number;
  skipped: number;
  failures: string[];
}

/** One run of run.sh; its output (which ends in an "N passed, N failed" line) is kept here, never printed. */
async function runSuite(mode: string, env: Record<string, string>): Promise<SuiteRun> {
  const reports = join(work.dir, `report-${mode}`);
  const ns = `conformance/${mode}`;
  const { stdout, stderr, code } = await new Promise<{ stdout: string; stderr: string; code: number }>((resolve) => {
    execFile(
      join(SUITE, 'run.sh'),
      [base, USER, PASSWORD, reports],
      {
        env: {
          PATH: process.env.PATH,
          HOME: process.env.HOME,
          TMPDIR: work.dir,
          CONFORMANCE_BIN: join(work.dir, 'conformance-v1.1.1.test'),
          // Each mode in its own repositories of the one registry.
          OCI_NAMESPACE: `${ns}/repo`,
          OCI_CROSSMOUNT_NAMESPACE: `${ns}/other`,
          ...env,
        },
        maxBuffer: 64 << 20,
        timeout: 120_000,
      },
      (err, out, errOut) => resolve({ stdout: out, stderr: errOut, code: err ? ((err as { code?: number }).code ?? -1) : 0 }),
    );
  });
  const last = stdout.trim().split('\n').pop() ?? '';
  const m = /^(\d+) passed, (\d+) failed, (\d+) skipped$/.exec(last);
  if (!m) throw new Error(`run.sh (${mode}) ended without its summary (exit ${code}): ${stderr.slice(-2000)}`);
  const rows = existsSync(join(reports, 'results.tsv')) ? (await readFile(join(reports, 'results.tsv'), 'utf8')).split('\n') : [];
  const failures = rows.filter((r) => r.startsWith('failed\t')).map((r) => r.slice('failed\t'.length));
  return { passed: Number(m[1]), failed: Number(m[2]), skipped: Number(m[3]), failures: failures.map((name) => `${name}${why(stdout, name)}`) };
}

/** The suite's own words on one failed spec ("Expected <int>: 400 to equal <int>: 404"), from its block of output. */
function why(output: string, name: string): string {
  for (const block of output.split(/^-{20,}$/m)) {
    const lines = block.split('\n').map((l) => l.trim()).filter(Boolean);
    if (!lines.some((l) => l.replace(' [It] ', ' ') === name)) continue;
    const from = lines.findIndex((l) => /^\[(FAILED|PANICKED)\]/.test(l));
    if (from < 0) continue;
    const to = lines.findIndex((l, i) => i > from && l.startsWith('In [It]'));
    // Never the suite's tallies: CI reads "N passed, N failed" lines.
    const said = lines.slice(from, to < 0 ? from + 6 : Math.min(to, from + 6)).filter((l) => !/\d+\s+(passed|failed)/i.test(l));
    return said.length ? `\n      ${said.join(' ')}` : '';
  }
  return '';
}

const expectClean = (r: SuiteRun) => {
  expect(r.failures, `conformance failures:\n  ${r.failures.join('\n  ')}`).toEqual([]);
  expect(r.failed).toBe(0);
  // Every spec of v1.1.1 ran (79), so a suite that stopped early is not a pass.
  expect(r.passed + r.skipped).toBe(79);
  expect(r.passed).toBeGreaterThanOrEqual(70);
};

describe('OCI distribution-spec conformance v1.1.1 against acinstall serve --htpasswd --workers 2', () => {
  it('passes with the suite\'s defaults', { timeout: 180_000 }, async () => {
    expectClean(await runSuite('default', {}));
  });

  it('passes when blobs are deleted before the manifests that use them (OCI_DELETE_MANIFEST_BEFORE_BLOBS=0)', { timeout: 180_000 }, async () => {
    expectClean(await runSuite('blobs-first', { OCI_DELETE_MANIFEST_BEFORE_BLOBS: '0' }));
  });

  it('passes without automatic cross-repository mounts (OCI_AUTOMATIC_CROSSMOUNT=0)', { timeout: 180_000 }, async () => {
    expectClean(await runSuite('no-automount', { OCI_AUTOMATIC_CROSSMOUNT: '0' }));
  });
});
