/**
 * bench/http: what undici's retry interceptor costs on the happy path, against the same agent
 * without it (the hand-written retry loop it replaced wrapped `request()` and added nothing per byte),
 * in the same run, on 127.0.0.1:
 *   - bulk: GET a large body and drain it (CPU and wall time per GiB);
 *   - small: many sequential GETs of a manifest-sized body (time per request).
 * Each contender runs several rounds, alternating; the median round counts (on a busy machine a best
 * round is a lucky one). The load average goes into the JSON line appended to bench/results/http.jsonl.
 *
 *   npx tsx bench/http/retry.ts [--mb 1024] [--requests 3000] [--rounds 9]
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { appendFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { loadavg } from 'node:os';
import { Agent, interceptors, request, type Dispatcher } from 'undici';
import { numberOption, ROOT } from '../common.js';

const MB = numberOption('mb', 1024);
const REQUESTS = numberOption('requests', 3000);
const ROUNDS = numberOption('rounds', 9);

// The server runs in its own process, so that the CPU measured here is the client's alone.
const SERVER = `
const chunk = Buffer.alloc(4 << 20, 7);
const small = Buffer.alloc(600, 1);
const total = ${MB} * 1048576;
const server = require('node:http').createServer((req, res) => {
  if (req.url === '/small') return void res.writeHead(200, { 'content-length': small.length }).end(small);
  res.writeHead(200, { 'content-length': total });
  let sent = 0;
  const pump = () => {
    while (sent < total) {
      sent += chunk.length;
      if (!res.write(chunk)) return void res.once('drain', pump);
    }
    res.end();
  };
  pump();
});
server.listen(0, '127.0.0.1', () => process.stdout.write(String(server.address().port) + '\\n'));
`;

function agent(withRetry: boolean): Dispatcher {
  const base = new Agent({ connect: { timeout: 30_000 }, headersTimeout: 60_000, bodyTimeout: 120_000 });
  const redirect = interceptors.redirect({ maxRedirections: 5 });
  return withRetry ? base.compose(redirect, interceptors.retry({ maxRetries: 4, minTimeout: 250, maxTimeout: 15_000, throwOnError: false })) : base.compose(redirect);
}

async function bulk(base: string, dispatcher: Dispatcher): Promise<{ seconds: number; cpuSeconds: number }> {
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const r = await request(`${base}/bulk`, { dispatcher });
  let n = 0;
  for await (const c of r.body) n += (c as Buffer).length;
  if (n !== MB * 1048576) throw new Error(`short body: ${n}`);
  const cpu = process.cpuUsage(cpu0);
  return { seconds: Number(process.hrtime.bigint() - t0) / 1e9, cpuSeconds: (cpu.user + cpu.system) / 1e6 };
}

async function smalls(base: string, dispatcher: Dispatcher): Promise<{ usPerRequest: number }> {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < REQUESTS; i++) {
    const r = await request(`${base}/small`, { dispatcher });
    await r.body.arrayBuffer();
  }
  return { usPerRequest: Number(process.hrtime.bigint() - t0) / 1e3 / REQUESTS };
}

async function main(): Promise<void> {
  const server = spawn(process.execPath, ['-e', SERVER], { stdio: ['ignore', 'pipe', 'inherit'] });
  const [line] = (await once(server.stdout, 'data')) as [Buffer];
  const base = `http://127.0.0.1:${line.toString().trim()}`;
  const contenders = { plain: agent(false), retry: agent(true) };
  const load = loadavg()[0];
  const runs = { plain: [] as { seconds: number; cpuSeconds: number; usPerRequest: number }[], retry: [] as { seconds: number; cpuSeconds: number; usPerRequest: number }[] };
  await smalls(base, contenders.plain); // warm up the JIT and the connection pool
  await smalls(base, contenders.retry);
  for (let round = 0; round < ROUNDS; round++) {
    for (const name of round % 2 === 0 ? (['plain', 'retry'] as const) : (['retry', 'plain'] as const)) {
      const b = await bulk(base, contenders[name]);
      const s = await smalls(base, contenders[name]);
      runs[name].push({ ...b, ...s });
      process.stderr.write(`round ${round + 1} ${name}: bulk ${(MB / b.seconds).toFixed(0)} MB/s (${b.cpuSeconds.toFixed(2)} s CPU), small ${s.usPerRequest.toFixed(0)} µs/request\n`);
    }
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const mid = {
    plain: { seconds: median(runs.plain.map((r) => r.seconds)), cpuSeconds: median(runs.plain.map((r) => r.cpuSeconds)), usPerRequest: median(runs.plain.map((r) => r.usPerRequest)) },
    retry: { seconds: median(runs.retry.map((r) => r.seconds)), cpuSeconds: median(runs.retry.map((r) => r.cpuSeconds)), usPerRequest: median(runs.retry.map((r) => r.usPerRequest)) },
  };
  server.kill();
  const gib = MB / 1024;
  const result = {
    bench: 'http-retry',
    date: new Date().toISOString(),
    bulkMB: MB,
    requests: REQUESTS,
    rounds: ROUNDS,
    statistic: 'median',
    loadAverage: +load.toFixed(2),
    plainMBps: Math.round(MB / mid.plain.seconds),
    retryMBps: Math.round(MB / mid.retry.seconds),
    plainCpuSecondsPerGiB: +(mid.plain.cpuSeconds / gib).toFixed(3),
    retryCpuSecondsPerGiB: +(mid.retry.cpuSeconds / gib).toFixed(3),
    bulkTimeRatio: +(mid.retry.seconds / mid.plain.seconds).toFixed(3),
    bulkCpuRatio: +(mid.retry.cpuSeconds / mid.plain.cpuSeconds).toFixed(3),
    plainUsPerRequest: Math.round(mid.plain.usPerRequest),
    retryUsPerRequest: Math.round(mid.retry.usPerRequest),
    smallRatio: +(mid.retry.usPerRequest / mid.plain.usPerRequest).toFixed(3),
  };
  process.stdout.write(
    `bulk ${MB} MB: without the interceptor ${result.plainMBps} MB/s (${result.plainCpuSecondsPerGiB} s CPU/GiB), with it ${result.retryMBps} MB/s (${result.retryCpuSecondsPerGiB} s CPU/GiB): time ×${result.bulkTimeRatio}, CPU ×${result.bulkCpuRatio}\n` +
      `small GETs: ${result.plainUsPerRequest} µs vs ${result.retryUsPerRequest} µs per request: ×${result.smallRatio}\n`,
  );
  await mkdir(join(ROOT, 'bench/results'), { recursive: true });
  await appendFile(join(ROOT, 'bench/results/http.jsonl'), `${JSON.stringify(result)}\n`);
}

await main();
