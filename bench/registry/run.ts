/**
 * bench/registry: our registry against Debian's docker-registry (CNCF distribution 2.8) on the same
 * content, same client (wrk), same concurrency, in the same run: manifest GET and HEAD requests per
 * second with p50/p99 latency, and blob GET throughput for a 1 MB and a 64 MB blob.
 *
 *   npm run build && npx tsx bench/registry/run.ts [--seconds 10] [--connections 8]
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { appendFile, mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { stringify } from 'yaml';
import { buildIndexImage, pushImage } from '../../demo/samples.js';
import { numberOption, randomLayer, ROOT } from '../common.js';
import { freePort, startSourceRegistry } from '../../demo/source-registry.js';
import { MT } from '../../oci/media-types.js';

const SECONDS = numberOption('seconds', 10);
const CONNECTIONS = numberOption('connections', 8);


interface WrkResult {
  rps: number;
  p50ms: number;
  p99ms: number;
  mbps: number;
  errors: number;
}

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
  for (let i = 0; i < 100; i++) {
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
  let ours: ChildProcess | undefined;
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
    const port = await freePort();
    ours = spawn(node, [join(ROOT, 'dist/installer/main.js'), 'serve', '--store', join(work, 'store'), '--listen', `127.0.0.1:${port}`, '--quiet'], { stdio: 'ignore' });
    const oursHost = `127.0.0.1:${port}`;
    await waitFor(`http://${oursHost}/v2/`);

    // Re-rooted names make the paths identical on both servers.
    const accept = { Accept: [MT.ociIndex, MT.ociManifest, MT.dockerList, MT.dockerManifest].join(', ') };
    const paths = {
      manifestGet: '/v2/bench/app3/manifests/v1',
      blob1MB: `/v2/bench/app3/blobs/${small.descriptor.digest}`,
      blob64MB: `/v2/bench/app3/blobs/${large.descriptor.digest}`,
    };
    const measure = async (host: string) => ({
      manifestGet: wrk(`http://${host}${paths.manifestGet}`, 'GET', accept),
      // Debian's wrk waits for a body after HEAD; a closed-loop undici client measures HEAD on both.
      manifestHead: await headLoad(`http://${host}${paths.manifestGet}`, accept),
      blob1MB: wrk(`http://${host}${paths.blob1MB}`, 'GET'),
      blob64MB: wrk(`http://${host}${paths.blob64MB}`, 'GET'),
    });
    // Warm both page caches, then measure each in turn.
    measureWarm(distribution.host, paths);
    measureWarm(oursHost, paths);
    const d = await measure(distribution.host);
    const o = await measure(oursHost);
    const ratio = (a: number, b: number) => Math.round((a / b) * 100) / 100;
    const result = {
      bench: 'registry',
      date: new Date().toISOString(),
      seconds: SECONDS,
      connections: CONNECTIONS,
      distribution: d,
      acpack: o,
      ratios: {
        manifestGetRps: ratio(o.manifestGet.rps, d.manifestGet.rps),
        manifestHeadRps: ratio(o.manifestHead.rps, d.manifestHead.rps),
        manifestGetP99: ratio(o.manifestGet.p99ms, d.manifestGet.p99ms),
        blob1MBThroughput: ratio(o.blob1MB.mbps, d.blob1MB.mbps),
        blob64MBThroughput: ratio(o.blob64MB.mbps, d.blob64MB.mbps),
      },
    };
    const row = (name: string, x: WrkResult) => `${name.padEnd(22)} ${x.rps.toFixed(0).padStart(8)} req/s  p50 ${x.p50ms.toFixed(2)} ms  p99 ${x.p99ms.toFixed(2)} ms  ${x.mbps.toFixed(0)} MB/s  errors ${x.errors}`;
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
        `ratios acpack/distribution: ${JSON.stringify(result.ratios)} (goals: manifest rps ≥ 2, p99 lower (< 1), blob throughput ≥ 1.2)`,
      ].join('\n') + '\n',
    );
    await mkdir(join(ROOT, 'bench/results'), { recursive: true });
    await appendFile(join(ROOT, 'bench/results/registry.jsonl'), `${JSON.stringify(result)}\n`);
  } finally {
    ours?.kill('SIGTERM');
    await distribution.stop();
    await rm(work, { recursive: true, force: true });
  }
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
