/**
 * Issue 8: "the store can be corrupted by two writers at once". The store's promise is that what it
 * serves under a digest is that digest's bytes, and that an image it acknowledged (201) can be pulled
 * in full. This harness attacks that promise with separate OS processes only, the way a site does:
 *
 *  (a) two `acinstall import` CLIs of the same bundle at once (they share an ingest file; the writer
 *      lock is per process): in odd runs fed from standard input in steps so that both are inside the
 *      big layer together (the interleaving that breaks a per-process lock every time), in even runs
 *      both reading the file, left to chance;
 *  (b) an authenticated pusher holding a streaming PATCH open on one `acinstall serve --workers 2`
 *      worker while it sends `PUT ?digest=` of an existing layer through the other one (the commit
 *      renames over the existing blob, and the still-open PATCH keeps writing into it);
 *  (c) `acinstall gc` in a loop while skopeo pushes an image whose layers the registry already holds,
 *      orphaned and made old with utimes (skopeo finds them with HEAD and skips them; the sweep decided
 *      before the manifest arrived). Many young blobs beside them make each sweep last a while.
 *
 * Measured on 022d86d (before the store's cross-process locks): (a) 3 of 5 runs (every paced run),
 * (b) 5 of 5, (c) 4–5 of 5 broke the store.
 *
 * Every run ends with a scrub of the store (see `verifyStore`), and every image a client was told was
 * stored is pulled back with skopeo. The assertion: no corrupt or missing blob, no lost image, in any run.
 * Runs are bounded in count (STORE_HARNESS_RUNS, default 5 per scenario) and time (SCENARIO_BUDGET_MS).
 *
 * ACPACK_TARGET_ROOT points the harness at another checkout (default: this repository) to measure
 * older code; STORE_HARNESS_REPORT=<file> appends one JSON line per run there.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { appendFile, mkdir, open, readdir, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';
import bcrypt from 'bcryptjs';
import tar from 'tar-stream';
import { buildLayer, buildSingleImage, pushImage, type Layer, type SampleImage } from '../../demo/samples.js';
import { MT } from '../../oci/media-types.js';
import { freePort, startSourceRegistry, type SourceRegistry } from '../../demo/source-registry.js';
import { stopChild } from '../../demo/processes.js';
import { ROOT, tempDir } from '../helpers/env.js';
import { writeManifest } from '../helpers/fixtures.js';

/** The checkout whose CLIs are attacked. */
const TARGET = resolve(process.env.ACPACK_TARGET_ROOT ?? ROOT);
const RUNS = Math.max(1, Number(process.env.STORE_HARNESS_RUNS ?? 5));
/** No new run starts after this long in one scenario (a run under way finishes). */
const SCENARIO_BUDGET_MS = Number(process.env.SCENARIO_BUDGET_MS ?? 45_000);
const MiB = 1 << 20;
/** (a) the big layer two imports write at once (20 MiB was seen stored as 29–42 MB). */
const IMPORT_LAYER = Number(process.env.STORE_HARNESS_IMPORT_MIB ?? 20) * MiB;
/** (b) the layer attacked: the open PATCH sends three quarters of it before the PUT. */
const ATTACK_LAYER = Number(process.env.STORE_HARNESS_ATTACK_MIB ?? 16) * MiB;
/** (c) young blobs beside the image's: every sweep stats each of them, so it lasts a second or two. */
const GC_JUNK = Number(process.env.STORE_HARNESS_GC_JUNK ?? 16000);

const USER = 'bob:hunter2';
const AUTH = `Basic ${Buffer.from(USER).toString('base64')}`;
const TWO_DAYS_AGO = () => new Date(Date.now() - 2 * 86400_000);

// ---------------------------------------------------------------------------------------------
// The scrub: `acinstall verify --store` of TARGET. Checkouts from before it existed (measured through
// ACPACK_TARGET_ROOT) are scrubbed by the harness's own re-hash and walk (`scrubStore` below).
// ---------------------------------------------------------------------------------------------

interface ScrubReport {
  /** Files under blobs/sha256 checked. */
  blobs: number;
  /** Manifests (and index children) of the index checked. */
  manifests: number;
  /** Tags in the index. */
  tags: string[];
  /** Files whose bytes do not hash to their name. */
  corrupt: string[];
  /** Blobs some manifest of the index needs that the store does not hold. */
  missing: string[];
}

/** Re-hashes every blob against its name, then checks that every manifest in the index has its config, layers and children. */
async function scrubStore(root: string): Promise<ScrubReport> {
  const dir = join(root, 'blobs', 'sha256');
  const names = existsSync(dir) ? (await readdir(dir)).sort() : [];
  const report: ScrubReport = { blobs: names.length, manifests: 0, tags: [], corrupt: [], missing: [] };
  for (const name of names) {
    const { hex, size } = await hashFile(join(dir, name));
    if (hex !== name) report.corrupt.push(`sha256:${name.slice(0, 16)}… holds ${size} bytes hashing to sha256:${hex.slice(0, 16)}…`);
  }
  if (!existsSync(join(root, 'index.db'))) return report;
  const db = new Database(join(root, 'index.db'), { readonly: true, fileMustExist: true });
  let roots: { repo: string; digest: string; tag: string | null }[];
  try {
    roots = db
      .prepare('SELECT repo, digest, tag FROM tags UNION SELECT repo, digest, NULL FROM repo_manifests ORDER BY repo, digest')
      .all() as typeof roots;
  } finally {
    db.close();
  }
  report.tags = roots.filter((r) => r.tag !== null).map((r) => `${r.repo}:${r.tag}`);
  const seen = new Set<string>();
  const has = (digest: string) => /^sha256:[a-f0-9]{64}$/.test(digest) && existsSync(join(dir, digest.slice(7)));
  const walk = async (digest: string, by: string): Promise<void> => {
    if (seen.has(digest)) return;
    seen.add(digest);
    report.manifests++;
    if (!has(digest)) return void report.missing.push(`manifest ${digest.slice(0, 23)}… of ${by}`);
    let m: { config?: { digest?: string; mediaType?: string }; layers?: { digest?: string; mediaType?: string }[]; manifests?: { digest?: string }[] };
    try {
      m = JSON.parse(await readFile(join(dir, digest.slice(7)), 'utf8'));
    } catch {
      return; // a damaged manifest file is already reported as corrupt
    }
    for (const d of [m.config, ...(Array.isArray(m.layers) ? m.layers : [])]) {
      if (!d?.digest) continue;
      if (/nondistributable|foreign/.test(d.mediaType ?? '')) continue; // never in a bundle, by design
      if (!has(d.digest)) report.missing.push(`blob ${d.digest.slice(0, 23)}… of ${by}`);
    }
    for (const child of Array.isArray(m.manifests) ? m.manifests : []) if (child?.digest) await walk(child.digest, by);
  };
  for (const r of roots) await walk(r.digest, r.tag === null ? `${r.repo}@${r.digest.slice(7, 19)}` : `${r.repo}:${r.tag}`);
  return report;
}

async function hashFile(path: string): Promise<{ hex: string; size: number }> {
  const hash = createHash('sha256');
  if (statSync(path).size <= MiB) {
    const data = readFileSync(path); // most blobs are small: one read, no handle juggling
    return { hex: hash.update(data).digest('hex'), size: data.length };
  }
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.allocUnsafe(4 * MiB);
    let size = 0;
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      if (bytesRead === 0) break;
      hash.update(buf.subarray(0, bytesRead));
      size += bytesRead;
    }
    return { hex: hash.digest('hex'), size };
  } finally {
    await fh.close();
  }
}

/** The one place the scenarios check a store: TARGET's `acinstall verify --store --json`, or `scrubStore` for older checkouts. */
async function verifyStore(root: string): Promise<ScrubReport> {
  if (!existsSync(join(TARGET, 'registry/scrub.ts'))) return scrubStore(root);
  const own = await scrubStore(root); // for the tags and the manifest count only
  const r = await acinstall(['verify', '--store', root, '--json'], 120_000);
  if (r.code !== 0 && r.code !== 1) throw new Error(`acinstall verify failed: ${r.stderr.slice(-2000)}`);
  const report = JSON.parse(r.stdout) as { blobs: number; problems: { kind: string; what: string }[] };
  const of = (kinds: string[]) => report.problems.filter((p) => kinds.includes(p.kind)).map((p) => p.what);
  return { blobs: report.blobs, manifests: own.manifests, tags: own.tags, corrupt: of(['corrupt', 'stray', 'damaged']), missing: of(['missing', 'dangling']) };
}

// ---------------------------------------------------------------------------------------------
// Processes: the CLIs of TARGET, run from source as the other tests run them; skopeo.
// ---------------------------------------------------------------------------------------------

interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

const children = new Set<ChildProcess>();

/** A CLI of TARGET; with `stdin` its standard input is a pipe the caller feeds. */
function spawnCli(entry: string, args: string[], opts: { timeoutMs?: number; stdin?: boolean } = {}): { child: ChildProcess; done: Promise<CliResult> } {
  const started = Date.now();
  const child = spawn(process.execPath, ['--import', 'tsx', join(TARGET, entry), ...args], { cwd: TARGET, stdio: [opts.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'] });
  children.add(child);
  child.stdin?.on('error', () => {}); // a CLI that failed early stops reading: not the harness's error
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (stderr = (stderr + c.toString()).slice(-8000)));
  const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
  const done = new Promise<CliResult>((resolvePromise) =>
    child.on('close', (code) => {
      clearTimeout(timer);
      children.delete(child);
      resolvePromise({ code, stdout, stderr, ms: Date.now() - started });
    }),
  );
  return { child, done };
}

/** acinstall with --debug, so that an unexpected error comes with its stack (the notes keep its first lines). */
const acinstall = (args: string[], timeoutMs?: number) => spawnCli('installer/main.ts', ['--debug', ...args], { timeoutMs }).done;
const acpack = (args: string[], timeoutMs?: number) => spawnCli('packer/main.ts', args, { timeoutMs }).done;

/**
 * Writes `data` to a child's standard input; resolves once the pipe took it (the child has read all
 * but a pipe's worth), or the child is gone, or after `timeoutMs` (a child blocked elsewhere).
 */
function feed(child: ChildProcess, data: Buffer, end = false, timeoutMs = 10_000): Promise<void> {
  return new Promise((resolvePromise) => {
    if (!child.stdin || child.stdin.destroyed) return resolvePromise();
    const timer = setTimeout(settle, timeoutMs);
    function settle() {
      clearTimeout(timer);
      child.off('close', settle);
      resolvePromise();
    }
    child.once('close', settle);
    if (end) child.stdin.end(data, settle);
    else child.stdin.write(data, settle);
  });
}

/**
 * Feeds `data` in 256 KiB writes and resolves once the child has read it all, or has stopped reading
 * for `stallMs` after it started (an import waiting for the other), or never started within `startMs`.
 */
function feedUntilStalled(child: ChildProcess, data: Buffer, stallMs = 1000, startMs = 20_000): Promise<void> {
  return new Promise((resolvePromise) => {
    const stdin = child.stdin;
    if (!stdin || stdin.destroyed) return resolvePromise();
    const pieces: Buffer[] = [];
    for (let at = 0; at < data.length; at += 256 * 1024) pieces.push(data.subarray(at, at + 256 * 1024));
    let taken = 0;
    let last = Date.now();
    const started = Date.now();
    const timer = setInterval(() => {
      const now = Date.now();
      if ((taken > 0 && now - last > stallMs) || (taken === 0 && now - started > startMs)) settle();
    }, 50);
    function settle() {
      clearInterval(timer);
      child.off('close', settle);
      resolvePromise();
    }
    child.once('close', settle);
    for (const piece of pieces) {
      stdin.write(piece, () => {
        taken++;
        last = Date.now();
        if (taken === pieces.length) settle();
      });
    }
  });
}

function skopeo(args: string[], timeoutMs = 60_000): Promise<{ ok: boolean; out: string }> {
  return new Promise((resolvePromise) =>
    execFile('skopeo', args, { timeout: timeoutMs, maxBuffer: 16 * MiB }, (err, stdout, stderr) =>
      resolvePromise({ ok: !err, out: `${stdout}${stderr}`.trim().split('\n').slice(-3).join(' | ') }),
    ),
  );
}

const lastLine = (s: string) => s.trim().split('\n').slice(-1)[0] ?? '';
/** What a failed CLI said: its error line, and with --debug the first frame of the stack. */
const errorOf = (r: CliResult) => {
  const lines = r.stderr.trim().split('\n');
  const at = Math.max(0, lines.findIndex((l) => /error/i.test(l)));
  return lines.slice(at, at + 3).map((l) => l.trim()).join(' ').slice(0, 400);
};

/** `acinstall serve --workers 2 --htpasswd …` of TARGET on 127.0.0.1. */
interface Serve {
  host: string;
  port: number;
  store: string;
  stop(): Promise<void>;
}

async function startServe(store: string, htpasswd: string): Promise<Serve> {
  const port = await freePort();
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', join(TARGET, 'installer/main.ts'), 'serve', '--store', store, '--listen', `127.0.0.1:${port}`, '--workers', '2', '--htpasswd', htpasswd, '--quiet'],
    { cwd: TARGET, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  children.add(child);
  let log = '';
  child.stderr!.on('data', (c: Buffer) => (log = (log + c.toString()).slice(-4000)));
  const stop = async () => {
    await stopChild(child, 5000);
    children.delete(child);
  };
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`acinstall serve exited: ${log}`);
    if ((await http(port, 'GET', '/v2/', { auth: false }).then((r) => r.status, () => 0)) === 401) {
      // The primary answers once one worker listens; give the second one a moment to join.
      await sleep(1000);
      return { host: `127.0.0.1:${port}`, port, store, stop };
    }
    await sleep(100);
  }
  await stop();
  throw new Error(`acinstall serve did not start: ${log}`);
}

/** One request on a connection of its own, so node:cluster hands each to the next worker. */
function http(port: number, method: string, path: string, opts: { body?: Buffer; auth?: boolean; timeoutMs?: number } = {}): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
  return new Promise((resolvePromise, reject) => {
    const headers: Record<string, string | number> = { connection: 'close' };
    if (opts.auth !== false) headers.authorization = AUTH;
    if (opts.body) {
      headers['content-type'] = 'application/octet-stream';
      headers['content-length'] = opts.body.length;
    }
    const req = httpRequest({ host: '127.0.0.1', port, method, path, headers, agent: false, timeout: opts.timeoutMs ?? 30_000 }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolvePromise({ status: res.statusCode ?? 0, headers: res.headers, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${path}: no answer`)));
    req.on('error', reject);
    req.end(opts.body);
  });
}

/** An OCI layout holding `img` under the name `img`, for skopeo to push from. */
async function writeLayout(dir: string, img: SampleImage): Promise<string> {
  await mkdir(join(dir, 'blobs/sha256'), { recursive: true });
  for (const b of [...img.blobs.map((x) => x.data), ...img.manifests.map((x) => x.data), img.top.data]) {
    await writeFile(join(dir, 'blobs/sha256', createHash('sha256').update(b).digest('hex')), b);
  }
  await writeFile(join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  const entry = { mediaType: img.top.mediaType, digest: img.top.digest, size: img.top.data.length, annotations: { 'org.opencontainers.image.ref.name': 'img' } };
  await writeFile(join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [entry] }));
  return `oci:${dir}:img`;
}

const skopeoPush = (layout: string, host: string, ref: string) =>
  skopeo(['copy', '--preserve-digests', '--dest-tls-verify=false', '--dest-creds', USER, layout, `docker://${host}/${ref}`]);

/** Pulls an acknowledged image back in full (skopeo checks every digest); undefined when it came back whole. */
async function pullBack(host: string, ref: string, into: string): Promise<string | undefined> {
  await rm(into, { recursive: true, force: true });
  const r = await skopeo(['copy', '--src-tls-verify=false', `docker://${host}/${ref}`, `oci:${into}:img`]);
  await rm(into, { recursive: true, force: true });
  return r.ok ? undefined : `${ref} was acknowledged but cannot be pulled: ${r.out}`;
}

/** A single-arch image with one random layer of `size` bytes (random: gzip cannot shrink it). */
async function randomImage(repo: string, size: number, extra = 0): Promise<SampleImage> {
  const layers = [await buildLayer([{ path: 'data.bin', content: randomBytes(size) }])];
  for (let i = 0; i < extra; i++) layers.push(await buildLayer([{ path: `extra-${i}.bin`, content: randomBytes(256 * 1024) }]));
  return buildSingleImage(repo, '1', 'amd64', layers);
}

/** An uncompressed layer: a random file of `size` bytes plus a small `salt` file that changes its digest cheaply. */
async function rawLayer(content: Buffer, salt: string): Promise<Layer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  pack.on('data', (c) => void chunks.push(c as Buffer));
  const done = new Promise<void>((r) => pack.on('end', () => r()));
  const header = { mode: 0o644, mtime: new Date(0), uid: 0, gid: 0 };
  pack.entry({ ...header, name: 'data.bin', size: content.length }, content);
  pack.entry({ ...header, name: 'salt', size: Buffer.byteLength(salt) }, salt);
  pack.finalize();
  await done;
  const data = Buffer.concat(chunks);
  const digest = createHash('sha256').update(data).digest('hex');
  return { descriptor: { mediaType: MT.ociLayer, digest: `sha256:${digest}`, size: data.length }, data, diffId: `sha256:${digest}` };
}

/**
 * A one-layer image whose big layer is the last blob of the bundle (acpack writes manifests first,
 * then the other blobs by digest): the import that finishes it first goes straight on to check and
 * record the bundle while the other import is still appending to the shared ingest file.
 */
async function lastInBundle(repo: string, size: number, other: SampleImage): Promise<SampleImage> {
  const content = randomBytes(size);
  const others = other.blobs.map((b) => b.descriptor.digest);
  for (let salt = 0; ; salt++) {
    const img = buildSingleImage(repo, '1', 'amd64', [await rawLayer(content, String(salt))]);
    const [layer, config] = img.blobs.map((b) => b.descriptor.digest);
    if ([...others, config].every((d) => d < layer)) return img;
  }
}

// ---------------------------------------------------------------------------------------------
// Runs and their outcome.
// ---------------------------------------------------------------------------------------------

interface RunOutcome {
  scenario: string;
  run: number;
  ms: number;
  /** What the scrub found that no earlier run of the scenario had already reported. */
  corrupt: string[];
  missing: string[];
  /** Acknowledged images that did not come back whole. */
  lost: string[];
  /** What the clients saw (exit codes, statuses): context, not a verdict. */
  notes: string[];
}

const failed = (o: RunOutcome) => o.corrupt.length + o.missing.length + o.lost.length > 0;

async function record(outcomes: RunOutcome[]): Promise<void> {
  const bad = outcomes.filter(failed);
  const summary = `[store-concurrency] ${outcomes[0]?.scenario}: ${bad.length} of ${outcomes.length} runs broke the store (target ${TARGET})`;
  const lines = outcomes.map(
    (o) =>
      `  run ${o.run} (${(o.ms / 1000).toFixed(1)} s): ${failed(o) ? 'BROKEN' : 'ok'}` +
      `${o.corrupt.length ? `; corrupt: ${o.corrupt.join('; ')}` : ''}${o.missing.length ? `; missing: ${o.missing.join('; ')}` : ''}` +
      `${o.lost.length ? `; lost: ${o.lost.join('; ')}` : ''} [${o.notes.join(', ')}]`,
  );
  console.log([summary, ...lines].join('\n'));
  if (process.env.STORE_HARNESS_REPORT) {
    for (const o of outcomes) await appendFile(process.env.STORE_HARNESS_REPORT, `${JSON.stringify({ target: TARGET, ...o })}\n`);
  }
}

/** Runs `one` up to RUNS times within the scenario's budget. */
async function repeat(scenario: string, one: (run: number) => Promise<Omit<RunOutcome, 'scenario' | 'run' | 'ms'>>): Promise<RunOutcome[]> {
  const outcomes: RunOutcome[] = [];
  const until = Date.now() + SCENARIO_BUDGET_MS;
  for (let run = 1; run <= RUNS && (run === 1 || Date.now() < until); run++) {
    const started = Date.now();
    outcomes.push({ scenario, run, ...(await one(run)), ms: Date.now() - started });
  }
  await record(outcomes);
  return outcomes;
}

/** Scrub findings not already reported by an earlier run against the same store. */
function newFindings(report: ScrubReport, known: Set<string>): { corrupt: string[]; missing: string[] } {
  const fresh = (list: string[]) => list.filter((x) => !known.has(x));
  const out = { corrupt: fresh(report.corrupt), missing: fresh(report.missing) };
  for (const x of [...report.corrupt, ...report.missing]) known.add(x);
  return out;
}

const verdict = (outcomes: RunOutcome[]) =>
  outcomes.filter(failed).map((o) => `run ${o.run}: ${[...o.corrupt, ...o.missing, ...o.lost].join('; ')}`);

// ---------------------------------------------------------------------------------------------

let work: Awaited<ReturnType<typeof tempDir>>;
let htpasswd: string;

beforeAll(async () => {
  work = await tempDir('acpack-store-race-');
  htpasswd = join(work.dir, 'htpasswd');
  await writeFile(htpasswd, `bob:${bcrypt.hashSync('hunter2', 10)}\n`);
});

afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await work?.cleanup();
});

describe('(a) two acinstall import of the same bundle at once', () => {
  let bundle: string;
  let bigLayer: number;

  beforeAll(async () => {
    // A bundle with a big layer (where the ingest files collide), last, and small blobs before it.
    const dir = join(work.dir, 'a-source');
    let source: SourceRegistry | undefined;
    try {
      source = await startSourceRegistry(dir);
      const small = await randomImage('race/small', 300_000, 2);
      const big = await lastInBundle('race/big', IMPORT_LAYER, small);
      bigLayer = big.blobs[0].data.length;
      for (const img of [big, small]) await pushImage(source.host, img);
      const manifest = await writeManifest(work.dir, { images: [big, small].map((i) => `${source!.host}/${i.repository}:${i.tag}`) }, 'a.yaml');
      bundle = join(work.dir, 'a.tar.zst');
      const r = await acpack(['bundle', '-f', manifest, '--arch', 'amd64', '--cache', join(work.dir, 'a-cache'), '-o', bundle], 120_000);
      if (r.code !== 0) throw new Error(`acpack bundle failed: ${r.stderr}`);
    } finally {
      await source?.stop();
      await rm(join(work.dir, 'a-cache'), { recursive: true, force: true });
    }
  }, 180_000);

  /** Both CLIs read the bundle file, started together: the plain race, its timing left to chance. */
  async function atOnce(store: string): Promise<CliResult[]> {
    return Promise.all([0, 1].map(() => acinstall(['import', bundle, '--store', store])));
  }

  /**
   * Both CLIs read the bundle from standard input (a slow medium, say), fed in steps: the first just
   * into the big layer, then the second to the same point, then the first to its end, then the second.
   * The second never waits on the first for more than a few seconds, so a store that makes one import
   * wait for the other cannot deadlock the harness.
   */
  async function paced(store: string): Promise<CliResult[]> {
    const bytes = await readFile(bundle);
    const head = bytes.subarray(0, bytes.length - Math.floor(bigLayer * 0.9)); // ~10% into the big layer
    const tail = bytes.subarray(head.length);
    const [first, second] = [0, 1].map(() => spawnCli('installer/main.ts', ['--debug', 'import', '-', '--store', store], { stdin: true }));
    await feedUntilStalled(first.child, head);
    await sleep(800);
    await feedUntilStalled(second.child, head); // a store that makes it wait for the first stops it reading
    await sleep(800);
    // The tails are not awaited: an import waiting for the other reads nothing until the other is done.
    void feed(first.child, tail, true, 60_000);
    await Promise.race([first.done, sleep(5000)]);
    void feed(second.child, tail, true, 60_000);
    return Promise.all([first.done, second.done]);
  }

  it(
    'never stores a blob under a digest it does not have, nor records an image without its blobs',
    async () => {
      const outcomes = await repeat('a: two imports at once', async (run) => {
        const store = join(work.dir, `a-store-${run}`);
        // Odd runs paced (the interleaving that breaks a per-process lock every time), even runs left to chance.
        const mode = run % 2 === 1 ? 'paced' : 'at once';
        const both = await (mode === 'at once' ? atOnce(store) : paced(store));
        const scrub = await verifyStore(store);
        const notes = [mode, ...both.map((r, i) => `import ${i + 1} exit ${r.code} after ${(r.ms / 1000).toFixed(1)} s${r.code === 0 ? '' : `: ${errorOf(r)}`}`)];
        // An import that said it succeeded must have left the bundle's images in the index.
        const lost = both.some((r) => r.code === 0) && scrub.tags.length < 2 ? [`an import succeeded but the index holds ${scrub.tags.length} of 2 tags`] : [];
        notes.push(`${scrub.blobs} blobs, ${scrub.manifests} manifests checked`);
        await rm(store, { recursive: true, force: true });
        return { corrupt: scrub.corrupt, missing: scrub.missing, lost, notes };
      });
      expect(verdict(outcomes)).toEqual([]);
    },
    SCENARIO_BUDGET_MS + 90_000,
  );
});

describe('(b) a streaming PATCH held open on one worker, PUT ?digest= of an existing layer on the other', () => {
  let serve: Serve;

  beforeAll(async () => {
    serve = await startServe(join(work.dir, 'b-store'), htpasswd);
  }, 60_000);

  afterAll(() => serve?.stop());

  /** The upload's size on disk as the registry reports it (Range 0-(n-1)), once it stops growing. */
  async function settledSize(loc: string): Promise<number | undefined> {
    let last = -1;
    let same = 0;
    for (let i = 0; i < 100; i++) {
      const r = await http(serve.port, 'GET', loc).catch(() => undefined);
      if (r?.status !== 204) return undefined;
      const m = /^0-(\d+)$/.exec(String(r.headers.range ?? ''));
      const n = m ? Number(m[1]) + 1 : 0;
      if (n > 0 && n === last && ++same >= 3) return n;
      if (n !== last) same = 0;
      last = n;
      await sleep(50);
    }
    return last > 0 ? last : undefined;
  }

  it(
    'never lets an upload rewrite a committed blob',
    async () => {
      const known = new Set<string>();
      const outcomes = await repeat('b: PATCH and PUT on two workers', async (run) => {
        const notes: string[] = [];
        const img = await randomImage(`attack/run${run}`, ATTACK_LAYER);
        const layer = img.blobs[0].data;
        const digest = img.blobs[0].descriptor.digest;
        const layout = await writeLayout(join(work.dir, `b-layout-${run}`), img);
        const ref = `attack/run${run}:1`;
        const first = await skopeoPush(layout, serve.host, ref);
        if (!first.ok) throw new Error(`the setup push failed: ${first.out}`);

        // One upload: a PATCH streaming most of the layer, held open…
        const start = await http(serve.port, 'POST', `/v2/attack/run${run}/blobs/uploads/`);
        if (start.status !== 202) throw new Error(`starting an upload: ${start.status} ${start.body}`);
        const loc = String(start.headers.location);
        const sock = connect(serve.port, '127.0.0.1');
        const answer = new Promise<string>((res) => {
          let got = '';
          sock.on('data', (c) => (got += c.toString('latin1')));
          sock.on('close', () => res(got.split('\r\n')[0] || 'closed without an answer'));
          sock.on('error', () => res(got.split('\r\n')[0] || 'connection error'));
        });
        sock.setTimeout(30_000, () => sock.destroy());
        await new Promise((r) => sock.once('connect', r));
        const send = async (data: Buffer) => {
          if (sock.destroyed) return;
          const framed = Buffer.concat([Buffer.from(`${data.length.toString(16)}\r\n`), data, Buffer.from('\r\n')]);
          if (!sock.write(framed)) await new Promise((r) => (sock.once('drain', r), sock.once('close', r)));
        };
        sock.write(`PATCH ${loc} HTTP/1.1\r\nHost: ${serve.host}\r\nAuthorization: ${AUTH}\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n`);
        const held = Math.floor(layer.length * 0.75);
        for (let at = 0; at < held; at += 256 * 1024) await send(layer.subarray(at, Math.min(held, at + 256 * 1024)));
        // …then PUT ?digest= with the rest of the layer, on a connection of its own (so, another worker).
        const onDisk = (await settledSize(loc)) ?? 0;
        const putDone = (async () => {
          let put = { status: 0, body: '' };
          for (let attempt = 0; attempt < 6; attempt++) {
            put = await http(serve.port, 'PUT', `${loc}?digest=${digest}`, { body: layer.subarray(onDisk) }).catch((e: Error) => ({ status: 0, body: e.message }));
            // 500, or a reset before the answer was read: the PATCH's own worker (its writer is locked there); try the other.
            if (put.status !== 500 && put.status !== 0) break;
            await sleep(50);
          }
          return put;
        })();
        // A registry may make the PUT wait for the PATCH: then the PATCH must go on, or neither ends.
        await Promise.race([putDone, sleep(5000)]);
        // The PATCH goes on with the rest of the layer and ends.
        for (let at = held; at < layer.length; at += 256 * 1024) await send(layer.subarray(at, Math.min(layer.length, at + 256 * 1024)));
        if (!sock.destroyed) sock.write('0\r\n\r\n');
        const put = await putDone;
        notes.push(`PUT after ${(onDisk / MiB).toFixed(1)} MiB on disk: ${put.status}${put.status === 201 ? '' : ` ${put.body.slice(0, 160)}`}`);
        notes.push(`PATCH: ${(await answer).replace('HTTP/1.1 ', '')}`);
        await sleep(200);

        const found = newFindings(await verifyStore(serve.store), known);
        const lost = [await pullBack(serve.host, ref, join(work.dir, `b-pull-${run}`))].filter((x): x is string => !!x);
        await rm(join(work.dir, `b-layout-${run}`), { recursive: true, force: true });
        return { ...found, lost, notes };
      });
      expect(verdict(outcomes)).toEqual([]);
    },
    SCENARIO_BUDGET_MS + 90_000,
  );
});

describe('(c) acinstall gc in a loop while skopeo pushes an image whose old, orphaned layers the registry holds', () => {
  let serve: Serve;
  const blobDir = () => join(serve.store, 'blobs', 'sha256');

  /** Orphans named by their digest, written straight into the store; `old` ones are past gc's grace. */
  async function orphans(n: number, old: boolean): Promise<string[]> {
    const files: string[] = [];
    for (let i = 0; i < n; i++) {
      const bytes = randomBytes(32);
      files.push(join(blobDir(), createHash('sha256').update(bytes).digest('hex')));
      writeFileSync(files[i], bytes);
    }
    if (old) for (const f of files) await utimes(f, TWO_DAYS_AGO(), TWO_DAYS_AGO());
    return files;
  }

  beforeAll(async () => {
    serve = await startServe(join(work.dir, 'c-store'), htpasswd);
    // Blobs pushed in the last hour by other clients: every sweep looks at each of them (a long
    // sweep, as on a full site registry) and spares them.
    await orphans(GC_JUNK, false);
  }, 60_000);

  afterAll(() => serve?.stop());

  it(
    'never collects a blob of an image pushed during the sweep',
    async () => {
      const known = new Set<string>();
      const outcomes = await repeat('c: gc while pushing', async (run) => {
        const notes: string[] = [];
        const repo = `gc/run${run}`;
        const img = await randomImage(repo, 512 * 1024, 1);
        const layout = await writeLayout(join(work.dir, `c-layout-${run}`), img);
        // The image was pushed once, then deleted: its blobs wait for a collection, older than its grace.
        const first = await skopeoPush(layout, serve.host, `${repo}:1`);
        if (!first.ok) throw new Error(`the setup push failed: ${first.out}`);
        const del = await http(serve.port, 'DELETE', `/v2/${repo}/manifests/${img.top.digest}`);
        if (del.status !== 202) throw new Error(`deleting the setup image: ${del.status} ${del.body}`);
        for (const d of [...img.blobs.map((b) => b.descriptor.digest), img.top.digest]) {
          await utimes(join(blobDir(), d.slice(7)), TWO_DAYS_AGO(), TWO_DAYS_AGO()).catch(() => {});
        }
        // A few old orphans more: the first of them to go tells that a sweep is deleting.
        const sentinels = await orphans(200, true);

        // gc runs again and again until the push is over; the push starts once a sweep is deleting.
        let pushed = false;
        const gcs: CliResult[] = [];
        const loop = (async () => {
          do gcs.push(await acinstall(['gc', '--store', serve.store]));
          while (!pushed && gcs.length < 4);
        })();
        const waitUntil = Date.now() + 15_000;
        while (Date.now() < waitUntil && gcs.length === 0 && sentinels.every((f) => existsSync(f))) await sleep(20);
        const push = await skopeoPush(layout, serve.host, `${repo}:1`);
        pushed = true;
        await loop;
        notes.push(`push ${push.ok ? 'acknowledged' : `refused: ${push.out.split(' | ').pop()!.slice(0, 200)}`}`);
        notes.push(...gcs.map((g, i) => `gc ${i + 1} exit ${g.code} in ${(g.ms / 1000).toFixed(1)} s: ${g.code === 0 ? lastLine(g.stdout) : errorOf(g)}`));

        const found = newFindings(await verifyStore(serve.store), known);
        const lost = push.ok ? [await pullBack(serve.host, `${repo}:1`, join(work.dir, `c-pull-${run}`))].filter((x): x is string => !!x) : [];
        // The next run starts from a store the index agrees with: this run's image is deleted again.
        await http(serve.port, 'DELETE', `/v2/${repo}/manifests/${img.top.digest}`).catch(() => undefined);
        await rm(join(work.dir, `c-layout-${run}`), { recursive: true, force: true });
        return { ...found, lost, notes };
      });
      expect(verdict(outcomes)).toEqual([]);
    },
    SCENARIO_BUDGET_MS + 90_000,
  );
});
