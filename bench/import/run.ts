/**
 * bench/import: `acinstall import` (the single executable, as it ships) of one bundle into a fresh
 * store, against what unpacking the same file costs at its plainest: `zstd -dc | tar -x` and a
 * sync, interleaved in the same run, with the disk's write speed measured there too (dd with
 * fdatasync), so that a ratio near 1 where the disk is the limit is told apart from one where the
 * CPU is. Issue 13's goal: import within 1.3× of the pipeline where the disk is not the limit.
 *
 * Without BUNDLE it builds one: 5 images of random layers, S MB in all (400 by default), the
 * layer sizes of bench/p2p, plus many small blobs (each image's config and manifest).
 * Prints medians and appends a JSON line to bench/results/import.jsonl.
 *
 *   npm run build && npx tsx bench/import/run.ts [BUNDLE] [--runs 5] [--mb 400]
 */
import { spawnSync } from 'node:child_process';
import { statSync } from 'node:fs';
import { appendFile, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { nodeArch } from '../../arch/platform.js';
import { siteExecutable } from '../../runtime/site-runtime.js';
import { benchBundle, numberOption, randomLayer, ROOT } from '../common.js';
import { startSourceRegistry } from '../../demo/source-registry.js';
import { buildIndexImage, pushImage } from '../../demo/samples.js';

const RUNS = numberOption('runs', 5);
const MB = numberOption('mb', 400);
const LAYERS_MB = [118, 74, 52, 41, 29, 24, 19, 14.5, 11, 7.2, 4.8, 3.1, 1.6, 0.7, 0.1];

const work = await mkdtemp(join(tmpdir(), 'acpack-bench-import-'));
try {
  let bundle = process.argv[2] && !process.argv[2].startsWith('--') ? process.argv[2] : '';
  if (!bundle) {
    const source = await startSourceRegistry(join(work, 'source'));
    try {
      const refs: string[] = [];
      for (let i = 0; i < 5; i++) {
        const layers = LAYERS_MB.filter((_, j) => j % 5 === i).map((m) => randomLayer(Math.max(1, Math.round((m * MB * 1e6) / 400))));
        await pushImage(source.host, buildIndexImage(`bench/import${i}`, 'v1', { amd64: layers }));
        refs.push(`${source.host}/bench/import${i}:v1`);
      }
      await mkdir(join(work, 'b'));
      bundle = await benchBundle(join(work, 'b'), 'bench-import', { images: refs, binaries: [] }, 'amd64');
    } finally {
      await source.stop();
    }
  }
  const size = statSync(bundle).size;
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const timed = (argv: string[]) => {
    const t0 = process.hrtime.bigint();
    const r = spawnSync('/usr/bin/time', ['-f', '%U %S', ...argv], { encoding: 'utf8' });
    const wall = Number(process.hrtime.bigint() - t0) / 1e9;
    if (r.status !== 0) throw new Error(`${argv.join(' ')}: ${r.stderr}`);
    const [user, sys] = r.stderr.trim().split('\n').pop()!.split(' ').map(Number);
    return { wall, cpu: user + sys };
  };
  const variants: Record<string, (dir: string) => string[]> = {
    import: (dir) => [siteExecutable(nodeArch()), 'import', bundle, '--store', dir],
    'zstd|tar+sync': (dir) => ['sh', '-c', `zstd -dc "$1" | tar -x -C "$2" && sync -f "$2"`, 'sh', bundle, dir],
  };
  const times: Record<string, { wall: number[]; cpu: number[] }> = {};
  const disk: number[] = [];
  const load = [loadavg()[0]];
  for (let run = 0; run < RUNS; run++) {
    // Each from a quiet disk, in turn first: the disk is mounted with `discard` here, and what the
    // step before left (a store removed, the dd file) is otherwise paid by whoever comes next.
    const order = Object.entries(variants);
    if (run % 2 === 1) order.reverse();
    for (const [name, argv] of order) {
      const dir = join(work, `run-${run}-${name.replace(/\W/g, '')}`);
      await mkdir(dir);
      spawnSync('sync');
      try {
        const t = timed(argv(dir));
        (times[name] ??= { wall: [], cpu: [] }).wall.push(t.wall);
        times[name].cpu.push(t.cpu);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    }
    // The disk where the stores go, written as the unpacked bundle is: 512 MiB, made durable.
    const dd = spawnSync('dd', ['if=/dev/zero', `of=${join(work, 'dd')}`, 'bs=1M', 'count=512', 'conv=fdatasync'], { encoding: 'utf8' });
    const m = /(\d+(?:\.\d+)?) s, /.exec(dd.stderr);
    if (m) disk.push((512 * 1048576) / 1e6 / Number(m[1]));
    await rm(join(work, 'dd'), { force: true });
  }
  load.push(loadavg()[0]);

  const result = Object.fromEntries(Object.entries(times).map(([name, t]) => [name, { wallSeconds: median(t.wall), mbPerSecond: size / 1e6 / median(t.wall), cpuSeconds: median(t.cpu) }]));
  for (const [name, r] of Object.entries(result)) {
    process.stdout.write(`${name.padEnd(14)} ${r.wallSeconds.toFixed(2)} s wall, ${r.mbPerSecond.toFixed(0)} MB/s of bundle, ${r.cpuSeconds.toFixed(2)} s CPU\n`);
  }
  const diskMBps = median(disk);
  const ratio = result.import.wallSeconds / result['zstd|tar+sync'].wallSeconds;
  process.stdout.write(
    `import / (zstd -dc | tar -x + sync): ${ratio.toFixed(2)} (goal ≤ 1.3 where the disk is not the limit); disk writes ${diskMBps.toFixed(0)} MB/s (dd, fdatasync); ${RUNS} runs each, ${(size / 1e6).toFixed(0)} MB bundle, load ${load.map((l) => l.toFixed(1)).join(' → ')}\n`,
  );
  await appendFile(join(ROOT, 'bench/results/import.jsonl'), `${JSON.stringify({ at: new Date().toISOString(), bundleBytes: size, runs: RUNS, load, diskMBps, result, ratio })}\n`);
} finally {
  await rm(work, { recursive: true, force: true });
}
