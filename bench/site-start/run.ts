/**
 * bench/site-start: how long acinstall takes to start, as `acinstall --version` (commander answers it
 * once every module of the program is loaded, so this is the start every command pays). Issue 11's
 * budget: ≤ 0.5 s natively for the single executable.
 *
 *   sea          dist/site/acinstall-linux-amd64 --version          (what ships: Node 24, SEA, no code cache)
 *   node20-dist  node dist/installer/main.js --version              (the old way: tsc output, ESM, this Node)
 *   node24-cjs   node24 acinstall.cjs --version                     (the same bundle, outside the SEA)
 *   node24-min   node24 acinstall.min.cjs --version                 (that bundle minified by esbuild)
 *   node24-e0    node24 -e 0                                        (the floor: Node's own start, no acinstall)
 *
 * `--sea` also builds two executables of its own in a temp dir (postject, half a minute each) and
 * measures them: the minified bundle, and the plain one with V8's code cache in the blob
 * (useCodeCache: true, which scripts/build-site.ts leaves off because the cache is specific to the
 * generating binary's arch; amd64's made here is its own).
 *
 * Every variant runs `--runs N` times, interleaved (one of each in turn, so load drifts alike on
 * all), through /usr/bin/time for CPU time (user + sys) beside the wall time: on a loaded machine
 * the wall time says more about the neighbours than about us. Prints medians and the load, and
 * appends a JSON line to bench/results/site-start.jsonl.
 *
 *   npm run build && npx tsx bench/site-start/run.ts [--runs 20] [--sea]
 */
import { execFile, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { appendFile, chmod, copyFile, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { build } from 'esbuild';
import { bundleSite } from '../../scripts/build-site.js';
import { siteExecutable, siteNode } from '../../runtime/site-runtime.js';
import { numberOption, ROOT } from '../common.js';

const run = promisify(execFile);
const RUNS = numberOption('runs', 20);
const SEA = process.argv.includes('--sea');
/** Postject's marker for Node's SEA blob, as in scripts/build-site.ts. */
const SEA_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';

interface Variant {
  name: string;
  argv: string[];
}

interface Sample {
  wall: number;
  cpu: number;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

const round = (x: number, d = 3) => Number(x.toFixed(d));

function uptime(): string {
  return spawnSync('uptime', { encoding: 'utf8' }).stdout.trim();
}

/** One run: wall time around the process, CPU time (user + sys) as /usr/bin/time reports it. */
async function once(v: Variant, timeFile: string): Promise<Sample> {
  const t0 = process.hrtime.bigint();
  const r = spawnSync('/usr/bin/time', ['-o', timeFile, '-f', '%U %S', ...v.argv], { encoding: 'utf8' });
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.status !== 0) throw new Error(`${v.argv.join(' ')} failed (${r.status}): ${r.stderr.slice(-2000)}`);
  const [user, sys] = (await readFile(timeFile, 'utf8')).trim().split('\n').at(-1)!.split(' ').map(Number);
  return { wall, cpu: user + sys };
}

/** An executable of `script` on Node 24 amd64, as scripts/build-site.ts makes one, with or without V8's code cache. */
async function seaOf(script: string, out: string, useCodeCache: boolean): Promise<void> {
  const config = `${out}.sea-config.json`;
  const blob = `${out}.blob`;
  await writeFile(config, JSON.stringify({ main: script, output: blob, disableExperimentalSEAWarning: true, useSnapshot: false, useCodeCache }));
  await run(siteNode('amd64'), ['--experimental-sea-config', config]);
  await copyFile(siteNode('amd64'), out);
  await run(process.execPath, [join(ROOT, 'node_modules', 'postject', 'dist', 'cli.js'), out, 'NODE_SEA_BLOB', blob, '--sentinel-fuse', SEA_FUSE]);
  await chmod(out, 0o755);
}

async function main(): Promise<void> {
  const distMain = join(ROOT, 'dist', 'installer', 'main.js');
  const sea = siteExecutable('amd64');
  for (const f of [distMain, sea]) if (!existsSync(f)) throw new Error(`${f} is missing: run npm run build`);
  if (!existsSync('/usr/bin/time')) throw new Error('/usr/bin/time is missing: apt-get install time');
  const node24 = siteNode('amd64');
  const work = await mkdtemp(join(tmpdir(), 'acpack-bench-start-'));
  try {
    // The bundle from the sources as they are now, and its minified copy (esbuild's minify over the
    // bundled file: what `minify: true` in bundleSite would give, up to the banner's spacing).
    const plain = join(work, 'acinstall.cjs');
    const min = join(work, 'acinstall.min.cjs');
    await bundleSite(plain);
    await build({ entryPoints: [plain], outfile: min, bundle: false, minify: true, platform: 'node', format: 'cjs', target: 'node24', legalComments: 'none', logLevel: 'error' });
    const sizes = { bundleBytes: (await stat(plain)).size, minifiedBytes: (await stat(min)).size };
    const variants: Variant[] = [
      { name: 'sea', argv: [sea, '--version'] },
      { name: 'node20-dist', argv: [process.execPath, distMain, '--version'] },
      { name: 'node24-cjs', argv: [node24, plain, '--version'] },
      { name: 'node24-min', argv: [node24, min, '--version'] },
      { name: 'node24-e0', argv: [node24, '-e', '0'] },
    ];
    if (SEA) {
      process.stderr.write('bench: building a minified executable and a code-cached one (postject, about a minute)\n');
      await seaOf(min, join(work, 'sea-min'), false);
      await seaOf(plain, join(work, 'sea-codecache'), true);
      variants.push({ name: 'sea-min', argv: [join(work, 'sea-min'), '--version'] }, { name: 'sea-codecache', argv: [join(work, 'sea-codecache'), '--version'] });
    }
    const version = (JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
    for (const v of variants.filter((x) => x.name !== 'node24-e0')) {
      const out = spawnSync(v.argv[0], v.argv.slice(1), { encoding: 'utf8' }).stdout.trim();
      if (out !== version) throw new Error(`${v.name} printed "${out}", not ${version}`);
    }

    const loadBefore = loadavg();
    const uptimeBefore = uptime();
    process.stderr.write(`bench: ${RUNS} runs of ${variants.length} variants, interleaved; ${uptimeBefore}\n`);
    const samples = new Map<string, Sample[]>(variants.map((v) => [v.name, []]));
    const timeFile = join(work, 'time.out');
    for (let i = 0; i < RUNS; i++) for (const v of variants) samples.get(v.name)!.push(await once(v, timeFile));
    const loadAfter = loadavg();
    const uptimeAfter = uptime();

    const results: Record<string, { wallMedian: number; wallMin: number; cpuMedian: number; cpuMin: number }> = {};
    for (const [name, s] of samples) {
      results[name] = { wallMedian: round(median(s.map((x) => x.wall))), wallMin: round(Math.min(...s.map((x) => x.wall))), cpuMedian: round(median(s.map((x) => x.cpu)), 2), cpuMin: round(Math.min(...s.map((x) => x.cpu)), 2) };
    }
    process.stdout.write(`\n${'variant'.padEnd(14)} ${'wall median'.padStart(11)} ${'wall min'.padStart(9)} ${'cpu median'.padStart(11)} ${'cpu min'.padStart(8)}   (seconds; cpu = user + sys)\n`);
    for (const [name, r] of Object.entries(results)) {
      process.stdout.write(`${name.padEnd(14)} ${r.wallMedian.toFixed(3).padStart(11)} ${r.wallMin.toFixed(3).padStart(9)} ${r.cpuMedian.toFixed(2).padStart(11)} ${r.cpuMin.toFixed(2).padStart(8)}\n`);
    }
    const s = results.sea;
    process.stdout.write(`\nbudget 0.5 s: the executable's wall median ${s.wallMedian.toFixed(3)} s (min ${s.wallMin.toFixed(3)}), CPU median ${s.cpuMedian.toFixed(2)} s: ${s.wallMin <= 0.5 ? 'within' : 'OVER'} at best\n`);
    process.stdout.write(`bundle ${sizes.bundleBytes} bytes, minified ${sizes.minifiedBytes}; ${availableParallelism()} CPUs\nload before: ${uptimeBefore}\nload after:  ${uptimeAfter}\n`);

    const line = {
      bench: 'site-start',
      date: new Date().toISOString(),
      runs: RUNS,
      cpus: availableParallelism(),
      load: { before: loadBefore.map((x) => round(x, 2)), after: loadAfter.map((x) => round(x, 2)) },
      node20: process.version,
      ...sizes,
      results,
    };
    await mkdir(join(ROOT, 'bench/results'), { recursive: true });
    await appendFile(join(ROOT, 'bench/results/site-start.jsonl'), `${JSON.stringify(line)}\n`);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

await main();
