/**
 * bench/registry: our registry against Debian's docker-registry (CNCF distribution 2.8) on the same
 * content, same client (wrk), same concurrency, in the same run: manifest GET and HEAD requests per
 * second with p50/p99 latency, and blob GET throughput for a 1 MB and a 64 MB blob.
 *
 * Issue 11's budget: the site's runtime within 10% of acpack on Node 20 with the mmap addon. `--files`
 * also measures acpack serving every blob from its file (ACPACK_NO_MMAP=1), `--site-node N` that too
 * under another Node (the site's release), `--site-exe E` acinstall's single executable as it ships
 * (dist/site: it maps blobs with the addon it carries, written into the store) and as it serves when
 * its store is noexec (from files, ACPACK_NO_MMAP=1); either implies --files. The row says whether
 * the executable mapped (exeMapsBlobs: the addon is in its workers' /proc/PID/maps; a noexec
 * BENCH_DIR would make it serve from files). `--rounds R` measures every server R times in turn and
 * keeps each figure's median: on a busy machine, one pass says little.
 *
 *   npm run build && npx tsx bench/registry/run.ts [--seconds 10] [--connections 8] [--rounds 1]
 *     [--files] [--site-node /path/to/node24] [--site-exe dist/site/acinstall-linux-amd64]
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { appendFile, mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { stringify } from 'yaml';
import { buildIndexImage, pushImage } from '../../demo/samples.js';
import { numberOption, randomLayer, ROOT } from '../common.js';
import { freePort, startSourceRegistry } from '../../demo/source-registry.js';
import { MT } from '../../oci/media-types.js';

const SECONDS = numberOption('seconds', 10);
const CONNECTIONS = numberOption('connections', 8);
const ROUNDS = numberOption('rounds', 1);
const SITE_NODE = stringOption('site-node');
const SITE_EXE = stringOption('site-exe');
const FILES = process.argv.includes('--files') || SITE_NODE !== undefined || SITE_EXE !== undefined;

function stringOption(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}


interface WrkResult {
  rps: number;
  p50ms: number;
  p99ms: number;
  mbps: number;
  errors: number;
  /** CPU time the server (all its processes) spent per request, where the bench knows its process. */
  serverCpuMsPerReq?: number;
}

type Measure = Record<'manifestGet' | 'manifestHead' | 'blob1MB' | 'blob64MB', WrkResult>;

function toMs(v: string): number {
  const m = /^([\d.]+)(us|ms|s)$/.exec(v.trim());
  if (!m) return NaN;
  return Number(m[1]) * (m[2] === 'us' ? 0.001 : m[2] === 's' ? 1000 : 1);
}

function toMBps(v: string): number {
  const m = /^([\d.]+)(B|KB|MB|GB)$/.exec(v.trim());
  if (!m) return NaN;
  return Number(m[1]) * ({ B: 1e-6, KB: 1e-3, MB: 1, GB: 1e3 } as Record<string, number>)[m[2]];
}

function wrk(url: string, method: 'GET' | 'HEAD', headers: Record<string, string> = {}): WrkResult {
  const script = join(tmpdir(), `wrk-${process.pid}-${method}.lua`);
  spawnSync('sh', ['-c', `printf 'wrk.method = "${method}"\\n' > ${script}`]);
  const argv = ['-t', '2', '-c', String(CONNECTIONS), '-d', `${SECONDS}s`, '--latency', '-s', script];
  for (const [k, v] of Object.entries(headers)) argv.push('-H', `${k}: ${v}`);
  const r = spawnSync('wrk', [...argv, url], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`wrk failed: ${r.stderr}`);
  const out = r.stdout;
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]);
  const p50 = toMs(/\s50%\s+(\S+)/.exec(out)?.[1] ?? '');
  const p99 = toMs(/\s99%\s+(\S+)/.exec(out)?.[1] ?? '');
  const mbps = toMBps(/Transfer\/sec:\s+(\S+)/.exec(out)?.[1] ?? '');
  const non2xx = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(out)?.[1] ?? 0);
  const sockErr = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const errors = non2xx + (sockErr ? sockErr.slice(1).reduce((n, x) => n + Number(x), 0) : 0);
  return { rps, p50ms: p50, p99ms: p99, mbps, errors };
}

async function waitFor(url: string): Promise<void> {
  for (let i = 0; i < 300; i++) {
    if ((await fetch(url).then((r) => r.status, () => 0)) === 200) return;
    await sleep(100);
  }
  throw new Error(`${url} did not answer`);
}

async function main(): Promise<void> {
  if (spawnSync('which', ['wrk']).status !== 0) throw new Error('wrk is missing: apt-get install wrk');
  const work = join(process.env.BENCH_DIR ?? tmpdir(), `acpack-bench-registry-${process.pid}`);
  await rm(work, { recursive: true, force: true });
  await mkdir(work, { recursive: true });
  const distribution = await startSourceRegistry(join(work, 'distribution'));
  const servers: ChildProcess[] = [];
  try {
    const small = randomLayer(1 << 20);
    const large = randomLayer(64 << 20);
    const images = Array.from({ length: 10 }, (_, i) => buildIndexImage(`bench/app${i}`, 'v1', { amd64: [small, large], arm64: [small, large] }));
    for (const img of images) await pushImage(distribution.host, img);

    // The same content in our store: bundle from distribution, import.
    const manifest = join(work, 'm.yaml');
    await writeFile(manifest, stringify({ apiVersion: 'acpack/v1', kind: 'Bundle', metadata: { name: 'bench', version: 'v1' }, spec: { platforms: ['linux/amd64', 'linux/arm64'], images: images.map((i) => `${distribution.host}/${i.repository}:${i.tag}`) } }));
    const node = process.execPath;
    const pack = spawnSync(node, [join(ROOT, 'dist/packer/main.js'), 'bundle', '-f', manifest, '--cache', join(work, 'cache'), '-o', join(work, 'b.tar.zst')], { encoding: 'utf8' });
    if (pack.status !== 0) throw new Error(pack.stderr);
    const imp = spawnSync(node, [join(ROOT, 'dist/installer/main.js'), 'import', join(work, 'b.tar.zst'), '--store', join(work, 'store')], { encoding: 'utf8' });
    if (imp.status !== 0) throw new Error(imp.stderr);
    // Every variant serves the same store, all up at once (idle while another is measured).
    const pids = new Map<string, number>();
    const serve = async ([runtime, ...args]: string[], env: NodeJS.ProcessEnv = {}): Promise<string> => {
      const port = await freePort();
      const child = spawn(runtime, [...args, 'serve', '--store', join(work, 'store'), '--listen', `127.0.0.1:${port}`, '--quiet'], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...env } });
      servers.push(child);
      let stderr = '';
      child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
      await waitFor(`http://127.0.0.1:${port}/v2/`).catch((err: Error) => {
        throw new Error(`${err.message} (${runtime} serve: ${stderr.trim() || 'no output'})`);
      });
      pids.set(`127.0.0.1:${port}`, child.pid!);
      return `127.0.0.1:${port}`;
    };
    const acinstall = join(ROOT, 'dist/installer/main.js');
    const oursHost = await serve([node, acinstall], { ACPACK_NO_MMAP: '' });
    const filesHost = FILES ? await serve([node, acinstall], { ACPACK_NO_MMAP: '1' }) : undefined;
    // A plain Node 24 would load the addon (Node-API): the site's executable has none.
    const siteHost = SITE_NODE ? await serve([SITE_NODE, acinstall], { ACPACK_NO_MMAP: '1' }) : undefined;
    const exeHost = SITE_EXE ? await serve([SITE_EXE], { ACPACK_NO_MMAP: '' }) : undefined;
    const exeFilesHost = SITE_EXE ? await serve([SITE_EXE], { ACPACK_NO_MMAP: '1' }) : undefined;

    // Re-rooted names make the paths identical on both servers.
    const accept = { Accept: [MT.ociIndex, MT.ociManifest, MT.dockerList, MT.dockerManifest].join(', ') };
    const paths = {
      manifestGet: '/v2/bench/app3/manifests/v1',
      blob1MB: `/v2/bench/app3/blobs/${small.descriptor.digest}`,
      blob64MB: `/v2/bench/app3/blobs/${large.descriptor.digest}`,
    };
    // On a busy machine throughput follows the scheduler; the server's CPU time per request does much less.
    const cpu = async (host: string, load: () => WrkResult | Promise<WrkResult>): Promise<WrkResult> => {
      const pid = pids.get(host);
      const before = pid && cpuMs(pid);
      const r = await load();
      if (pid && r.rps > 0) r.serverCpuMsPerReq = Math.round(((cpuMs(pid) - before!) / (r.rps * SECONDS)) * 1000) / 1000;
      return r;
    };
    const measure = async (host: string): Promise<Measure> => ({
      manifestGet: await cpu(host, () => wrk(`http://${host}${paths.manifestGet}`, 'GET', accept)),
      // Debian's wrk waits for a body after HEAD; a closed-loop undici client measures HEAD on both.
      manifestHead: await cpu(host, () => headLoad(`http://${host}${paths.manifestGet}`, accept)),
      blob1MB: await cpu(host, () => wrk(`http://${host}${paths.blob1MB}`, 'GET')),
      blob64MB: await cpu(host, () => wrk(`http://${host}${paths.blob64MB}`, 'GET')),
    });
    const hosts = { distribution: distribution.host, acpack: oursHost, acpackFiles: filesHost, acpackSite: siteHost, acpackExe: exeHost, acpackExeFiles: exeFilesHost };
    const variants = Object.entries(hosts).filter((e): e is [string, string] => e[1] !== undefined);
    // Warm every page cache, then measure each in turn, round after round.
    for (const [, host] of variants) measureWarm(host, paths);
    const exeMapsBlobs = exeHost ? loadsAddon(pids.get(exeHost)!) : undefined;
    const loadBefore = loadavg();
    const runs = new Map<string, Measure[]>(variants.map(([name]) => [name, []]));
    for (let r = 0; r < ROUNDS; r++) for (const [name, host] of variants) runs.get(name)!.push(await measure(host));
    const m = Object.fromEntries([...runs].map(([name, all]) => [name, medianOf(all)])) as Record<string, Measure>;
    const d = m.distribution;
    const o = m.acpack;
    const ratio = (a: number, b: number) => Math.round((a / b) * 100) / 100;
    /** The figures issue 11's budget is about: a variant's throughput against acpack with the addon. */
    const against = (x: Measure) => ({
      manifestGetRps: ratio(x.manifestGet.rps, o.manifestGet.rps),
      manifestHeadRps: ratio(x.manifestHead.rps, o.manifestHead.rps),
      blob1MBThroughput: ratio(x.blob1MB.mbps, o.blob1MB.mbps),
      blob64MBThroughput: ratio(x.blob64MB.mbps, o.blob64MB.mbps),
      // CPU per request the other way up: below 1 costs more than with the addon.
      blob1MBCpu: ratio(o.blob1MB.serverCpuMsPerReq!, x.blob1MB.serverCpuMsPerReq!),
      blob64MBCpu: ratio(o.blob64MB.serverCpuMsPerReq!, x.blob64MB.serverCpuMsPerReq!),
    });
    const result = {
      bench: 'registry',
      date: new Date().toISOString(),
      seconds: SECONDS,
      connections: CONNECTIONS,
      ...(ROUNDS > 1 && { rounds: ROUNDS, figures: 'median of rounds' }),
      load: { before: loadBefore.map((x) => Math.round(x * 100) / 100), after: loadavg().map((x) => Math.round(x * 100) / 100), cores: availableParallelism() },
      node: process.version,
      ...(SITE_NODE && { siteNode: spawnSync(SITE_NODE, ['--version'], { encoding: 'utf8' }).stdout.trim() }),
      ...(SITE_EXE && { siteExe: SITE_EXE, exeMapsBlobs }),
      distribution: d,
      acpack: o,
      ...(m.acpackFiles && { acpackFiles: m.acpackFiles }),
      ...(m.acpackSite && { acpackSite: m.acpackSite }),
      ...(m.acpackExe && { acpackExe: m.acpackExe }),
      ...(m.acpackExeFiles && { acpackExeFiles: m.acpackExeFiles }),
      ratios: {
        manifestGetRps: ratio(o.manifestGet.rps, d.manifestGet.rps),
        manifestHeadRps: ratio(o.manifestHead.rps, d.manifestHead.rps),
        manifestGetP99: ratio(o.manifestGet.p99ms, d.manifestGet.p99ms),
        blob1MBThroughput: ratio(o.blob1MB.mbps, d.blob1MB.mbps),
        blob64MBThroughput: ratio(o.blob64MB.mbps, d.blob64MB.mbps),
        ...(m.acpackFiles && { filesVsMapped: against(m.acpackFiles) }),
        ...(m.acpackSite && { siteVsMapped: against(m.acpackSite) }),
        ...(m.acpackExe && { exeVsMapped: against(m.acpackExe) }),
        ...(m.acpackExeFiles && { exeFilesVsMapped: against(m.acpackExeFiles) }),
      },
    };
    const variantRows = (name: string, x: Measure | undefined) =>
      x ? [row(`${name} GET man.`, x.manifestGet), row(`${name} HEAD man.`, x.manifestHead), row(`${name} 1MB`, x.blob1MB), row(`${name} 64MB`, x.blob64MB)] : [];
    const row = (name: string, x: WrkResult) =>
      `${name.padEnd(22)} ${x.rps.toFixed(0).padStart(8)} req/s  p50 ${x.p50ms.toFixed(2)} ms  p99 ${x.p99ms.toFixed(2)} ms  ${x.mbps.toFixed(0)} MB/s  errors ${x.errors}` +
      (x.serverCpuMsPerReq === undefined ? '' : `  server CPU ${x.serverCpuMsPerReq.toFixed(2)} ms/req`);
    process.stdout.write(
      [
        `wrk (HEAD: undici closed loops), ${CONNECTIONS} connections, ${SECONDS} s each; acpack serves with its default workers`,
        row('distribution GET man.', d.manifestGet),
        row('acpack       GET man.', o.manifestGet),
        row('distribution HEAD man.', d.manifestHead),
        row('acpack       HEAD man.', o.manifestHead),
        row('distribution blob 1MB', d.blob1MB),
        row('acpack       blob 1MB', o.blob1MB),
        row('distribution blob 64MB', d.blob64MB),
        row('acpack       blob 64MB', o.blob64MB),
        ...variantRows('acpack files', m.acpackFiles),
        ...variantRows('acpack site', m.acpackSite),
        ...variantRows('acpack exe', m.acpackExe),
        ...variantRows('acpack exe files', m.acpackExeFiles),
        `ratios acpack/distribution: ${JSON.stringify(result.ratios)} (goals: manifest rps ≥ 2, p99 lower (< 1), blob throughput ≥ 1.2; files, site and exe within 10% of acpack: ≥ 0.9)`,
        ...(SITE_EXE ? [`the executable ${exeMapsBlobs ? 'mapped blobs with its addon' : 'served from files: its addon did not load'}`] : []),
        `load average ${result.load.before.join(' ')} before, ${result.load.after.join(' ')} after, ${result.load.cores} cores${ROUNDS > 1 ? `; medians of ${ROUNDS} rounds` : ''}`,
      ].join('\n') + '\n',
    );
    await mkdir(join(ROOT, 'bench/results'), { recursive: true });
    await appendFile(join(ROOT, 'bench/results/registry.jsonl'), `${JSON.stringify(result)}\n`);
  } finally {
    for (const s of servers) s.kill('SIGTERM');
    await distribution.stop();
    await rm(work, { recursive: true, force: true });
  }
}

/** Each figure's median over the rounds (per figure: the medians need not come from one round); errors are summed. */
function medianOf(all: Measure[]): Measure {
  const median = (xs: number[]) => {
    const s = [...xs].sort((x, y) => x - y);
    return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
  };
  const of = (k: keyof Measure): WrkResult => ({
    rps: median(all.map((x) => x[k].rps)),
    p50ms: median(all.map((x) => x[k].p50ms)),
    p99ms: median(all.map((x) => x[k].p99ms)),
    mbps: median(all.map((x) => x[k].mbps)),
    errors: all.reduce((n, x) => n + x[k].errors, 0),
    ...(all.every((x) => x[k].serverCpuMsPerReq !== undefined) && { serverCpuMsPerReq: median(all.map((x) => x[k].serverCpuMsPerReq!)) }),
  });
  return { manifestGet: of('manifestGet'), manifestHead: of('manifestHead'), blob1MB: of('blob1MB'), blob64MB: of('blob64MB') };
}

/** Whether a server process or one of its workers has an addon (a `.node` file) loaded as code. */
function loadsAddon(pid: number): boolean {
  const children = spawnSync('pgrep', ['-P', String(pid)], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean);
  return [String(pid), ...children].some((p) => {
    try {
      return readFileSync(`/proc/${p}/maps`, 'utf8')
        .split('\n')
        .some((l) => l.endsWith('.node') && l.split(' ')[1].includes('x'));
    } catch {
      return false;
    }
  });
}

/** CPU time (ms) a server process and its workers have used (Linux /proc, in clock ticks of 10 ms). */
function cpuMs(pid: number): number {
  const children = spawnSync('pgrep', ['-P', String(pid)], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean);
  let ticks = 0;
  for (const p of [String(pid), ...children]) {
    try {
      // Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th.
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks += Number(fields[11]) + Number(fields[12]);
    } catch {
      // a worker that just exited
    }
  }
  return ticks * 10;
}

/** HEAD requests from CONNECTIONS closed loops for SECONDS, over keep-alive connections. */
async function headLoad(url: string, headers: Record<string, string>): Promise<WrkResult> {
  const { Pool } = await import('undici');
  const u = new URL(url);
  const pool = new Pool(u.origin, { connections: CONNECTIONS });
  const latencies: number[] = [];
  let errors = 0;
  const end = Date.now() + SECONDS * 1000;
  await Promise.all(
    Array.from({ length: CONNECTIONS }, async () => {
      while (Date.now() < end) {
        const t0 = process.hrtime.bigint();
        const r = await pool.request({ path: u.pathname, method: 'HEAD', headers }).catch(() => undefined);
        if (!r || r.statusCode !== 200) errors++;
        await r?.body.dump();
        latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
      }
    }),
  );
  await pool.close();
  latencies.sort((a, b) => a - b);
  const at = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))];
  return { rps: latencies.length / SECONDS, p50ms: at(0.5), p99ms: at(0.99), mbps: 0, errors };
}

function measureWarm(host: string, paths: Record<string, string>): void {
  for (const p of Object.values(paths)) spawnSync('curl', ['-s', '-o', '/dev/null', `http://${host}${p}`]);
}

await main();
