/**
 * bench/import: `acinstall import` of one bundle into a fresh store, as it ran before issue 11 (this
 * machine's Node on the tsc output, zstd-napi and better-sqlite3) and as it ships (the single
 * executable: Node 24, zlib's zstd, node:sqlite), interleaved in the same run. Issue 11's budget:
 * the executable within 10% of the old throughput. Prints medians of wall time, MB/s of bundle
 * read and CPU time, with the load, and appends a JSON line to bench/results/import.jsonl.
 *
 *   npm run build && npx tsx bench/import/run.ts BUNDLE [--runs 5]
 */
import { spawnSync } from 'node:child_process';
import { statSync } from 'node:fs';
import { appendFile, mkdtemp, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { nodeArch } from '../../arch/platform.js';
import { siteExecutable } from '../../runtime/site-runtime.js';
import { numberOption, ROOT } from '../common.js';

const bundle = process.argv[2];
if (!bundle || bundle.startsWith('--')) throw new Error('usage: bench/import/run.ts BUNDLE [--runs N]');
const RUNS = numberOption('runs', 5);
const size = statSync(bundle).size;

const variants: Record<string, string[]> = {
  'node-dist': [process.execPath, join(ROOT, 'dist/installer/main.js')],
  executable: [siteExecutable(nodeArch())],
};

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const times: Record<string, { wall: number[]; cpu: number[] }> = {};
const load = [loadavg()[0]];
for (let run = 0; run < RUNS; run++) {
  for (const [name, command] of Object.entries(variants)) {
    const store = await mkdtemp(join(tmpdir(), 'acpack-bench-import-'));
    try {
      const t0 = process.hrtime.bigint();
      const r = spawnSync('/usr/bin/time', ['-f', '%U %S', ...command, 'import', bundle, '--store', store], { encoding: 'utf8' });
      const wall = Number(process.hrtime.bigint() - t0) / 1e9;
      if (r.status !== 0) throw new Error(`${name}: ${r.stderr}`);
      const [user, sys] = r.stderr.trim().split('\n').pop()!.split(' ').map(Number);
      (times[name] ??= { wall: [], cpu: [] }).wall.push(wall);
      times[name].cpu.push(user + sys);
    } finally {
      await rm(store, { recursive: true, force: true });
    }
  }
}
load.push(loadavg()[0]);

const result = Object.fromEntries(
  Object.entries(times).map(([name, t]) => [name, { wallSeconds: median(t.wall), mbPerSecond: size / 1e6 / median(t.wall), cpuSeconds: median(t.cpu) }]),
);
for (const [name, r] of Object.entries(result)) {
  process.stdout.write(`${name.padEnd(12)} ${r.wallSeconds.toFixed(2)} s wall, ${r.mbPerSecond.toFixed(0)} MB/s, ${r.cpuSeconds.toFixed(2)} s CPU\n`);
}
const ratio = result.executable.mbPerSecond / result['node-dist'].mbPerSecond;
process.stdout.write(`executable / node-dist throughput: ${ratio.toFixed(2)} (${RUNS} runs each, ${(size / 1e6).toFixed(0)} MB bundle, load ${load.map((l) => l.toFixed(1)).join(' → ')})\n`);
await appendFile(join(ROOT, 'bench/results/import.jsonl'), `${JSON.stringify({ at: new Date().toISOString(), bundleBytes: size, runs: RUNS, load, result, ratio })}\n`);
