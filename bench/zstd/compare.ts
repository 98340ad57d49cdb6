/**
 * zstd implementation benchmark for acpack's bundle.tar.zst.
 *
 * Compares, on the same generated data, streaming file -> compressor -> file (and back):
 *   - zstd-napi  (native addon, CompressStream / DecompressStream Transforms)
 *   - zstd-codec (wasm, ZstdCompressTransform / ZstdDecompressTransform)
 *   - the zstd CLI spawned with stdin/stdout pipes (-T1 / -T0 / -T2 / --single-thread)
 * and reports throughput, peak RSS, event-loop delay/utilisation, determinism
 * (same candidate twice) and byte-identity between candidates.
 *
 * Needs no network. Packages are resolved with require() relative to this file
 * (or via NODE_PATH); a candidate whose package is missing is reported and skipped.
 *
 *   npx tsx bench/zstd/compare.ts [--gz-mb=512] [--text-mb=256] [--runs=3]
 *                                 [--only=napi,cli-T0,...] [--keep]
 *
 * Each measurement runs in a fresh child process (same node + loader flags),
 * so maxRSS is per candidate. Data is generated from a fixed seed, so output
 * hashes are comparable between runs and machines.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createCipheriv, createHash } from 'node:crypto';
import { createReadStream, createWriteStream, readFileSync, type WriteStream } from 'node:fs';
import { mkdtemp, rm, stat, unlink } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import type { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { gzip as gzipCb } from 'node:zlib';
import { promisify } from 'node:util';

const require = createRequire(import.meta.url);
const gzip = promisify(gzipCb);
const LEVEL = 3;
const MB = 1024 * 1024;

// ---------------------------------------------------------------- candidates
type Op = 'c' | 'd';
interface Cand {
  name: string;
  op: Op;
  pkg?: string; // npm package needed
  cli?: string[]; // zstd CLI args
  napi?: Record<string, unknown>; // zstd-napi parameters
  codec?: boolean;
  copy?: boolean;
  readHwm?: number; // fs read chunk size (default 64 KiB)
}
const COMPRESS: Cand[] = [
  { name: 'copy (no zstd)', op: 'c', copy: true },
  { name: 'napi', op: 'c', pkg: 'zstd-napi', napi: { compressionLevel: LEVEL } },
  { name: 'napi-w1', op: 'c', pkg: 'zstd-napi', napi: { compressionLevel: LEVEL, nbWorkers: 1 } },
  { name: 'napi-w2', op: 'c', pkg: 'zstd-napi', napi: { compressionLevel: LEVEL, nbWorkers: 2 } },
  { name: 'napi-w2-ck', op: 'c', pkg: 'zstd-napi', napi: { compressionLevel: LEVEL, nbWorkers: 2, checksumFlag: true } },
  { name: 'napi-w1-ck/16k-reads', op: 'c', pkg: 'zstd-napi', napi: { compressionLevel: LEVEL, nbWorkers: 1, checksumFlag: true }, readHwm: 16384 },
  { name: 'codec', op: 'c', pkg: 'zstd-codec', codec: true },
  { name: 'cli-st', op: 'c', cli: [`-${LEVEL}`, '--single-thread', '-q', '-c'] },
  { name: 'cli-T1', op: 'c', cli: [`-${LEVEL}`, '-T1', '-q', '-c'] },
  { name: 'cli-T0', op: 'c', cli: [`-${LEVEL}`, '-T0', '-q', '-c'] },
  { name: 'cli-T2', op: 'c', cli: [`-${LEVEL}`, '-T2', '-q', '-c'] },
];
const DECOMPRESS: Cand[] = [
  { name: 'napi', op: 'd', pkg: 'zstd-napi', napi: {} },
  { name: 'codec', op: 'd', pkg: 'zstd-codec', codec: true },
  { name: 'cli', op: 'd', cli: ['-d', '-q', '-c'] },
];
/** Which compressed output the decompressors read (falls back to the first available). */
const DECOMP_SOURCES = ['napi-w2-ck', 'napi', 'cli-T0'];

// ---------------------------------------------------------------- child side
interface Spec { cand: Cand; input: string; output: string }
interface Result {
  /** maxRssMB: process.resourceUsage().maxRSS; hwmMB: VmHWM of /proc/self/status (see note in main) */
  secs: number; maxRssMB: number; hwmMB: number; childHwmMB: number; eldMaxMs: number; eldP99Ms: number;
  elu: number; cpuSecs: number;
}

async function makeTransform(c: Cand): Promise<() => Transform> {
  if (c.napi) {
    const z = require('zstd-napi') as typeof import('zstd-napi');
    return c.op === 'c' ? () => new z.CompressStream(c.napi) : () => new z.DecompressStream();
  }
  if (c.codec) {
    const zs = require('zstd-codec/lib/zstd-stream.js') as {
      run(f: (s: { ZstdCompressTransform: new (level: number) => Transform; ZstdDecompressTransform: new () => Transform }) => void): void;
    };
    const s = await new Promise<Parameters<Parameters<typeof zs.run>[0]>[0]>((res) => zs.run(res));
    return c.op === 'c' ? () => new s.ZstdCompressTransform(LEVEL) : () => new s.ZstdDecompressTransform();
  }
  throw new Error(`no transform for ${c.name}`);
}

function readHwmKB(pid: number | 'self'): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch { return 0; }
}

async function child(spec: Spec): Promise<Result> {
  const { cand, input, output } = spec;
  const make = cand.napi || cand.codec ? await makeTransform(cand) : undefined; // load outside timing
  const h = monitorEventLoopDelay({ resolution: 1 });
  h.enable();
  const elu0 = performance.eventLoopUtilization();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  let hwmKB = 0;
  const rs = () => createReadStream(input, { highWaterMark: cand.readHwm ?? 64 * 1024 });
  if (cand.cli) {
    const cp = spawn('zstd', cand.cli, { stdio: ['pipe', 'pipe', 'inherit'] });
    const poll = setInterval(() => { hwmKB = Math.max(hwmKB, readHwmKB(cp.pid!)); }, 50);
    const exited = new Promise<void>((res, rej) => cp.on('close', (code) => {
      clearInterval(poll);
      code === 0 ? res() : rej(new Error(`zstd ${cand.cli!.join(' ')} exited ${code}`));
    }));
    await Promise.all([
      pipeline(rs(), cp.stdin),
      pipeline(cp.stdout, createWriteStream(output)),
      exited,
    ]);
  } else if (make) {
    await pipeline(rs(), make(), createWriteStream(output));
  } else {
    await pipeline(rs(), createWriteStream(output));
  }
  const secs = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const elu = performance.eventLoopUtilization(elu0).utilization;
  h.disable();
  return {
    secs,
    maxRssMB: process.resourceUsage().maxRSS / 1024,
    hwmMB: readHwmKB('self') / 1024 || process.resourceUsage().maxRSS / 1024,
    childHwmMB: hwmKB / 1024,
    eldMaxMs: h.max / 1e6,
    eldP99Ms: h.percentile(99) / 1e6,
    elu,
    cpuSecs: (cpu.user + cpu.system) / 1e6,
  };
}

// ---------------------------------------------------------------- data generation
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const WORDS = ('error warn info debug request response handler pod node container image layer registry ' +
  'manifest digest sha256 pull push mount volume kubelet apiserver etcd scheduler controller ' +
  'namespace deployment service ingress timeout retry connection established closed ready').split(' ');
const SVCS = ['kubelet', 'containerd', 'etcd', 'kube-apiserver', 'coredns', 'registry', 'acinstall'];

function logLines(rnd: () => number, approxBytes: number): string {
  const parts: string[] = [];
  let n = 0;
  while (n < approxBytes) {
    const words = Array.from({ length: 3 + Math.floor(rnd() * 8) }, () => WORDS[Math.floor(rnd() * WORDS.length)]).join(' ');
    const line = `{"ts":"2024-05-${String(1 + Math.floor(rnd() * 28)).padStart(2, '0')}T${String(Math.floor(rnd() * 24)).padStart(2, '0')}:${String(Math.floor(rnd() * 60)).padStart(2, '0')}:${String(Math.floor(rnd() * 60)).padStart(2, '0')}.${Math.floor(rnd() * 1e6)}Z",` +
      `"level":"${['info', 'info', 'info', 'warn', 'error', 'debug'][Math.floor(rnd() * 6)]}","svc":"${SVCS[Math.floor(rnd() * SVCS.length)]}",` +
      `"req":"${Math.floor(rnd() * 0xffffffff).toString(16).padStart(8, '0')}","dur_ms":${Math.floor(rnd() * 5000)},"msg":"${words}"}\n`;
    parts.push(line);
    n += line.length;
  }
  return parts.join('');
}

async function writeAll(ws: WriteStream, b: Buffer | string): Promise<void> {
  if (!ws.write(b)) await new Promise<void>((r) => ws.once('drain', () => r()));
}
async function closeWs(ws: WriteStream): Promise<void> {
  await new Promise<void>((res, rej) => ws.end((err?: Error | null) => (err ? rej(err) : res())));
}

async function genText(path: string, mb: number): Promise<void> {
  const rnd = mulberry32(42);
  const ws = createWriteStream(path);
  let left = mb * MB;
  while (left > 0) {
    const chunk = Buffer.from(logLines(rnd, Math.min(MB, left)));
    const part = chunk.subarray(0, Math.min(chunk.length, left));
    await writeAll(ws, part);
    left -= part.length;
  }
  await closeWs(ws);
}

function tarHeader(name: string, size: number): Buffer {
  const b = Buffer.alloc(512);
  b.write(name, 0, 100);
  b.write('0000644\0', 100); b.write('0000000\0', 108); b.write('0000000\0', 116);
  b.write(size.toString(8).padStart(11, '0') + '\0', 124);
  b.write('00000000000\0', 136); // mtime 0
  b.write('        ', 148); b.write('0', 156); b.write('ustar\0', 257); b.write('00', 263);
  let sum = 0;
  for (const x of b) sum += x;
  b.write(sum.toString(8).padStart(6, '0') + '\0 ', 148);
  return b;
}

/** A tar of gzip'd "layers" (75% incompressible 256 KiB runs, 25% text), each followed by a small JSON. */
async function genLayers(path: string, mb: number): Promise<void> {
  const rnd = mulberry32(7);
  const textPool = Buffer.from(logLines(mulberry32(9), 8 * MB));
  const aes = createCipheriv('aes-128-ctr', Buffer.alloc(16, 1), Buffer.alloc(16, 2));
  const RUN = 256 * 1024;
  const makeLayer = (size: number): Buffer => {
    const b = Buffer.allocUnsafe(size);
    for (let o = 0; o < size; o += RUN) {
      const n = Math.min(RUN, size - o);
      if (rnd() < 0.25) {
        const s = Math.floor(rnd() * (textPool.length - n));
        textPool.copy(b, o, s, s + n);
      } else {
        aes.update(Buffer.alloc(n)).copy(b, o);
      }
    }
    return b;
  };
  const ws = createWriteStream(path);
  const target = mb * MB;
  let written = 0;
  let i = 0;
  const pad = (n: number) => Buffer.alloc((512 - (n % 512)) % 512);
  const emit = async (name: string, data: Buffer) => {
    for (const part of [tarHeader(name, data.length), data, pad(data.length)]) await writeAll(ws, part);
    written += 512 + data.length + pad(data.length).length;
  };
  await emit('index.json', Buffer.from(JSON.stringify({ schemaVersion: 2, manifests: [] }, null, 2)));
  while (written < target) {
    // two layers in flight: zlib.gzip runs in the libuv threadpool
    const sizes = [0, 1].map(() => Math.floor((2 + rnd() * 46) * MB));
    const gz = await Promise.all(sizes.map((s) => gzip(makeLayer(s), { level: 6 })));
    for (const g of gz) {
      if (written >= target) break;
      const data = written + g.length + 1024 > target ? g.subarray(0, Math.max(0, target - written - 2048)) : g;
      const digest = createHash('sha256').update(data).digest('hex');
      await emit(`blobs/sha256/${digest}`, data);
      await emit(`blobs/sha256/cfg${i++}.json`, Buffer.from(JSON.stringify({
        mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: `sha256:${digest}`, size: data.length,
        annotations: { 'org.opencontainers.image.title': `layer-${i}` },
      })));
    }
  }
  await writeAll(ws, Buffer.alloc(1024));
  await closeWs(ws);
}

// ---------------------------------------------------------------- parent side
async function sha256(path: string): Promise<string> {
  const h = createHash('sha256');
  await pipeline(createReadStream(path), h);
  return h.digest('hex');
}

function runChild(spec: Spec): Promise<Result> {
  const self = fileURLToPath(import.meta.url);
  return new Promise((res, rej) => {
    const cp = spawn(process.execPath, [...process.execArgv, self, '--child', JSON.stringify(spec)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    cp.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    cp.on('close', (code) => {
      if (code !== 0) return rej(new Error(`${spec.cand.name}: child exited ${code}`));
      res(JSON.parse(out.trim().split('\n').pop()!) as Result);
    });
  });
}

function available(c: Cand, hasCli: boolean): string | null {
  if (c.cli && !hasCli) return 'zstd CLI not found';
  if (c.pkg) {
    try { require.resolve(c.pkg); } catch { return `${c.pkg} not installed`; }
  }
  return null;
}

function pkgVersion(name: string): string {
  try {
    // package.json may not be in "exports"; walk from the resolved main file
    let dir = require.resolve(name);
    for (let k = 0; k < 6; k++) {
      dir = join(dir, '..');
      try {
        const p = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string };
        if (p.name === name) return p.version ?? '?';
      } catch { /* keep walking */ }
    }
    return '?';
  } catch { return 'not installed'; }
}

/** Speed figures from the fastest run, memory and event-loop delay from the worst. */
function merge(rs: Result[]): Result {
  const best = rs.reduce((a, b) => (b.secs < a.secs ? b : a));
  const worst = (k: keyof Result) => Math.max(...rs.map((x) => x[k]));
  return {
    ...best, maxRssMB: worst('maxRssMB'), hwmMB: worst('hwmMB'), childHwmMB: worst('childHwmMB'),
    eldMaxMs: worst('eldMaxMs'), eldP99Ms: worst('eldP99Ms'),
  };
}

interface Row { data: string; op: string; cand: string; mbps: number; r: Result; outMB: number; det: string; sha: string }

async function main(): Promise<void> {
  const arg = (k: string, d: string) => process.argv.find((a) => a.startsWith(`--${k}=`))?.split('=')[1] ?? d;
  const gzMB = Number(arg('gz-mb', '512'));
  const textMB = Number(arg('text-mb', '256'));
  const runs = Number(arg('runs', '3'));
  const only = arg('only', '').split(',').filter(Boolean);
  const keep = process.argv.includes('--keep');
  const cliV = spawnSync('zstd', ['-V'], { encoding: 'utf8' });
  const hasCli = cliV.status === 0;

  console.log(`node ${process.version}; zstd-napi ${pkgVersion('zstd-napi')}` +
    (pkgVersion('zstd-napi') !== 'not installed' ? ` (libzstd ${(require('zstd-napi/binding') as { versionString(): string }).versionString()})` : '') +
    `; zstd-codec ${pkgVersion('zstd-codec')}; @mongodb-js/zstd ${pkgVersion('@mongodb-js/zstd')}; ` +
    `CLI: ${hasCli ? cliV.stdout.trim() : 'not found'}`);

  const dir = await mkdtemp(join(tmpdir(), 'zstd-bench-'));
  const rows: Row[] = [];
  try {
    const datasets: [string, string, number][] = [];
    if (gzMB > 0) datasets.push(['gz-layers', join(dir, 'layers.tar'), gzMB]);
    if (textMB > 0) datasets.push(['text', join(dir, 'text.jsonl'), textMB]);
    for (const [name, path, mb] of datasets) {
      const t = performance.now();
      await (name === 'text' ? genText(path, mb) : genLayers(path, mb));
      console.log(`generated ${name}: ${mb} MB in ${((performance.now() - t) / 1000).toFixed(1)} s`);
    }

    for (const [dname, input] of datasets) {
      const inBytes = (await stat(input)).size;
      const inSha = await sha256(input);
      const outputs = new Map<string, string>();
      for (const c of COMPRESS) {
        if (only.length && !only.includes(c.name) && !c.copy) continue;
        const why = available(c, hasCli);
        if (why) { console.log(`skip ${c.name}: ${why}`); continue; }
        const shas: string[] = [];
        const rs: Result[] = []; let outBytes = 0;
        for (let i = 0; i < runs; i++) {
          const output = join(dir, `${dname}.${c.name.replace(/\W+/g, '_')}.${i}.zst`);
          const r = await runChild({ cand: c, input, output });
          shas.push(await sha256(output));
          outBytes = (await stat(output)).size;
          if (i === 0 && !c.copy) outputs.set(c.name, output); else await unlink(output);
          rs.push(r);
        }
        const r = merge(rs);
        const row: Row = {
          data: dname, op: 'compress', cand: c.name, mbps: inBytes / MB / r.secs, r, outMB: outBytes / MB,
          det: shas.every((s) => s === shas[0]) ? `yes x${runs}` : 'NO', sha: shas[0].slice(0, 12),
        };
        rows.push(row);
        console.log(JSON.stringify(row));
      }
      // identical outputs across candidates
      const bySha = new Map<string, string[]>();
      for (const row of rows.filter((x) => x.data === dname && x.op === 'compress' && !x.cand.startsWith('copy'))) {
        bySha.set(row.sha, [...(bySha.get(row.sha) ?? []), row.cand]);
      }
      console.log(`[${dname}] byte-identical groups: ` + [...bySha.values()].map((g) => `{${g.join(', ')}}`).join(' '));

      const srcName = DECOMP_SOURCES.find((n) => outputs.has(n)) ?? [...outputs.keys()][0];
      if (srcName) {
        const src = outputs.get(srcName)!;
        for (const c of DECOMPRESS) {
          const why = available(c, hasCli);
          if (why) { console.log(`skip decompress ${c.name}: ${why}`); continue; }
          const rs: Result[] = []; let ok = true;
          for (let i = 0; i < runs; i++) {
            const output = join(dir, `${dname}.d.${c.name}`);
            const r = await runChild({ cand: c, input: src, output });
            ok &&= (await sha256(output)) === inSha;
            await unlink(output);
            rs.push(r);
          }
          const r = merge(rs);
          const row: Row = {
            data: dname, op: `decomp(${srcName})`, cand: c.name, mbps: inBytes / MB / r.secs, r,
            outMB: inBytes / MB, det: ok ? 'roundtrip ok' : 'MISMATCH', sha: inSha.slice(0, 12),
          };
          rows.push(row);
          console.log(JSON.stringify(row));
        }
      }
      if (!keep) for (const f of outputs.values()) await unlink(f);
    }
  } finally {
    if (!keep) await rm(dir, { recursive: true, force: true });
    else console.log(`kept ${dir}`);
  }

  // ------------------------------------------------------------ table
  const head = ['data', 'op', 'candidate', 'MB/s', 'node peak RSS MB', 'zstd proc MB', 'ELD max ms', 'ELD p99 ms', 'ELU', 'CPU s (node)', 'out MB', 'deterministic / check', 'sha256'];
  const lines = rows.map((x) => [
    x.data, x.op, x.cand, x.mbps.toFixed(0), x.r.hwmMB.toFixed(0), x.r.childHwmMB ? x.r.childHwmMB.toFixed(0) : '-',
    x.r.eldMaxMs.toFixed(1), x.r.eldP99Ms.toFixed(1), x.r.elu.toFixed(2), x.r.cpuSecs.toFixed(1), x.outMB.toFixed(1), x.det, x.sha,
  ]);
  console.log('\n| ' + head.join(' | ') + ' |\n|' + head.map(() => '---').join('|') + '|');
  for (const l of lines) console.log('| ' + l.join(' | ') + ' |');
  console.log(`\nMB/s = uncompressed MB / wall s, best of ${runs}; RSS and ELD = worst of ${runs}. ` +
    'ELU = event-loop utilisation of the node process (1.0 = main thread never idle). ' +
    '"zstd proc MB" = VmHWM of the spawned CLI, polled every 50 ms. "node peak RSS" = VmHWM of the measuring ' +
    'child process: on Linux process.resourceUsage().maxRSS of a process spawned by node starts at the ' +
    "spawner's RSS (ru_maxrss survives fork+exec), so it is kept only in the JSON lines (maxRssMB).");
}

if (process.argv[2] === '--child') {
  child(JSON.parse(process.argv[3]) as Spec).then(
    (r) => { process.stdout.write(JSON.stringify(r) + '\n'); },
    (e: unknown) => { console.error(e); process.exit(1); },
  );
} else {
  main().catch((e: unknown) => { console.error(e); process.exit(1); });
}
