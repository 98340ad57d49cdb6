/**
 * bench/p2p: the peer cache on real agents. A lab of N + 1 test hosts (the first master and N
 * nodes), `acinstall from` once (unshaped, not timed), then every host's eth0 shaped to B with tbf
 * (what it sends, as test/integration/p2p-lab does; `--both-ways` shapes what it receives too, on
 * its port of the lab's bridge), and S bytes of layers (15 random layers in 5 images, p2p-sim's
 * sizes scaled to S) taken by every node in three ways, one after the other in the same lab:
 *
 *   - direct: every node's containerd (`ctr content fetch`, no unpacking) pulls every image at the
 *     same instant from the site registry, through a copy of acinstall's hosts.toml whose `[host]`
 *     is the registry instead of the node's agent: all from the master (the agents run, idle);
 *   - p2p: the same through acinstall's own hosts.toml, i.e. through each node's agent, which is
 *     asked to preheat the image list meanwhile, as the installer's pull-ahead does;
 *   - sealer: the same blobs as files, copied node after node, file after file, over SFTP from the
 *     master with md5sum before and after (bench/install/sftp-copy.ts).
 *
 * For each: the time until every node has everything, against T_phys = S/B + ⌈log₂N⌉·p/B (p the
 * 1 MiB piece; no netem, so no RTT term), the bytes the master's link sent (its namespace's
 * counters) over S, per node the bytes its agent took from the registry and from peers, and the
 * CPU seconds the machine spent meanwhile, by kind of process (bench/cpu-use.ts). Goals
 * (the issue): p2p ≤ 1.3·T_phys, its egress ≤ 1.2·S, its time ≤ 0.3 × sealer's. Every mode has a
 * containerd of its own on each node (fresh root, removed after), and agents' caches are emptied
 * before each p2p run, so nothing fetched before is reused. Appends a JSON line per rate to
 * bench/results/p2p.jsonl and prints a table.
 *
 * How to run: from the repository root, as root (test hosts are network namespaces), on a quiet
 * machine (`uptime` below 1.5: a busy CPU is what this measures at 1 Gbit/s):
 *
 *   npx tsx bench/p2p/run.ts --nodes 8 --mb 400 --rate 200mbit
 *   npx tsx bench/p2p/run.ts --nodes 8 --mb 400 --rate 1gbit
 *   npx tsx bench/p2p/run.ts --rate 200mbit,1gbit          # both rates in one lab, a line each
 *   npx tsx bench/p2p/run.ts --quick --no-record           # 4 nodes, 40 MB: a check of the bench
 *
 * Other options: `--modes direct,p2p,sealer` (a subset, run in the order given); `--agent-logs DIR`
 * (each node's agent log after each mode, DIR/<mode>-<node>.log); `--both-ways` (a node then
 * receives at B at most too, as on a real link; with eth0 alone it may take more than B from several
 * senders at once, while T_phys's S/B, the master sending every piece once, still holds). The site's
 * executables are rebuilt first when the sources changed (as the tests' global setup does). A
 * node's failed fetch ends the run with its agent's last log lines, a probe of the registry from
 * the node, the master's accept queue and its tbf's drops.
 * Hosts need 2·S of their 2 GB tmpfs (containerd's copy and the agent's); the machine about
 * 2·N·S + 4·S of memory and disk.
 */
import { appendFile, mkdir, rm, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { ARCHES } from '../../arch/platform.js';
import { buildIndexImage, pushImage } from '../../demo/samples.js';
import { startSourceRegistry, type SourceRegistry } from '../../demo/source-registry.js';
import { readDescriptor } from '../../oci/bundle-reader.js';
import type { Digest } from '../../oci/digest.js';
import { ContentStore } from '../../oci/store.js';
import { PIECE_SIZE } from '../../p2p/pieces.js';
import { gzippedExecutable } from '../../packer/site-runtime.js';
import { SITE_DIR } from '../../runtime/site-runtime.js';
import { buildSite } from '../../scripts/build-site.js';
import { pushKubeadmImages } from '../../test/helpers/kubeadm-images.js';
import { acinstallOn, inHost, labDown, labUp, shapeLinks, ssh, type Lab, type LabHost } from '../../test/hosts/lab.js';
import { kubeadmBinary, kubeletBinary } from '../../test/hosts/standins/kubeadm-standin.js';
import { benchBundle, numberOption, randomLayer, ROOT } from '../common.js';
import { sampleCpu, type CpuUse } from '../cpu-use.js';
import { agentStats, benchDir, contentList, directHostsDir, overlayUse, resetAgent, startContainerd, stopContainerd, timedFetch } from './node-steps.js';

const args = process.argv.slice(2);
const flag = (name: string) => args.includes(`--${name}`);
function stringOption(name: string, fallback: string): string {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1] : fallback;
}
const QUICK = flag('quick');
const NODES = numberOption('nodes', QUICK ? 4 : 8);
const MB = numberOption('mb', QUICK ? 40 : 400);
const RATES = stringOption('rate', '200mbit').split(',');
const MODES = stringOption('modes', 'direct,p2p,sealer').split(',');
const RECORD = !flag('no-record');
const BOTH_WAYS = flag('both-ways');
/** Where to keep each node's agent log after a p2p mode (`--agent-logs DIR`), to see what the agents did. */
const AGENT_LOGS = stringOption('agent-logs', '');

/** p2p-sim's layer sizes (MB, 400 in all), spread over 5 images of 3 layers, scaled to --mb. */
const LAYERS_MB = [118, 74, 52, 41, 29, 24, 19, 14.5, 11, 7.2, 4.8, 3.1, 1.6, 0.7, 0.1];
const IMAGES = 5;

type Mode = 'direct' | 'p2p' | 'sealer';
interface Agent {
  fromSeed: number;
  fromPeers: number;
  served: number;
  badPieces: number;
}
interface ModeResult {
  seconds: number;
  overTPhys: number;
  /** Each node's time to everything (sorted); for sealer, undefined (one copy after another). */
  nodeSeconds?: number[];
  /** Per image, in the order fetched, the median node's time until it was in (none for sealer). */
  imageSeconds?: number[];
  /** How late the last node started after the common instant. */
  startSkewSeconds?: number;
  masterSentBytes: number;
  egressOverS: number;
  /** Packets the master's tbf dropped during the mode. */
  masterDrops?: number;
  /** Body bytes the site registry answered with during the mode, by route (its /metrics; aborted answers count whole). */
  registryBytes?: Record<string, number>;
  /** Per node, what its agent took during the mode (none for sealer). */
  fromSeedBytes?: number[];
  fromPeersBytes?: number[];
  servedBytes?: number[];
  badPieces?: number;
  /** Where the machine's CPU went meanwhile (bench/cpu-use.ts). */
  cpu: CpuUse;
}

function parseRate(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(k|m|g)bit$/.exec(text);
  if (!m) throw new Error(`--rate ${text}: expected e.g. 200mbit or 1gbit`);
  return Number(m[1]) * { k: 1e3, m: 1e6, g: 1e9 }[m[2] as 'k' | 'm' | 'g'];
}
for (const r of RATES) parseRate(r);
for (const m of MODES) if (!['direct', 'p2p', 'sealer'].includes(m)) throw new Error(`--modes: ${m} is not direct, p2p or sealer`);
if (!(NODES >= 1 && NODES <= 20) || !(MB > 0 && MB <= 600)) throw new Error('--nodes 1..20 and --mb up to 600 (the hosts have 2 GB of tmpfs each)');

const round = (x: number, d = 2) => Math.round(x * 10 ** d) / 10 ** d;
const seconds = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e9;
const mb = (bytes: number) => (bytes / 1e6).toFixed(0);
const log = (line: string) => process.stderr.write(`[bench/p2p ${new Date().toISOString().slice(11, 19)}] ${line}\n`);

/** Bytes the host's eth0 has sent, from its own namespace's counters. */
async function txBytes(h: LabHost): Promise<number> {
  const links = JSON.parse((await inHost(h, 'ip', ['-s', '-j', 'link', 'show', 'eth0'])).stdout) as { stats64: { tx: { bytes: number } } }[];
  return links[0].stats64.tx.bytes;
}

/** Packets the host's eth0 qdisc (the tbf) dropped: a full queue, the shaped link's congestion. */
async function qdiscDrops(h: LabHost): Promise<number> {
  const q = JSON.parse((await inHost(h, 'tc', ['-s', '-j', 'qdisc', 'show', 'dev', 'eth0'])).stdout) as { root?: boolean; drops?: number }[];
  return q.find((x) => x.root)?.drops ?? 0;
}

/** The site registry's body bytes by route so far (acpack_registry_response_bytes_total on its /metrics). */
async function registryBytes(h: LabHost, store: string): Promise<Record<string, number>> {
  const text = (await inHost(h, 'curl', ['-fsS', '--max-time', '10', '--cacert', join(store, 'tls', 'ca.crt'), `https://${h.ip}:5000/metrics`])).stdout;
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^acpack_registry_response_bytes_total\{route="([^"]+)"\} (\S+)$/gm)) out[m[1]] = Number(m[2]);
  return out;
}

const minusBytes = (a: Record<string, number>, b: Record<string, number>) => Object.fromEntries(Object.entries(a).map(([k, v]) => [k, v - (b[k] ?? 0)]).filter(([, v]) => (v as number) > 0));

/** A command on a node, through SSH from the node to itself (loopback: nothing on the master's link). */
const onNode = (lab: Lab, n: LabHost, command: string, timeoutMs = 60_000) => ssh(lab, n, n, command, timeoutMs);

async function main(): Promise<void> {
  const load = loadavg()[0];
  log(`load average ${load.toFixed(2)}; ${NODES} nodes, ${MB} MB, rates ${RATES.join(', ')}, modes ${MODES.join(', ')}`);
  // The site's executables as the tests use them: rebuilt when the sources changed (a no-op otherwise).
  await buildSite(SITE_DIR);
  await Promise.all(ARCHES.map(gzippedExecutable));

  const work = join(process.env.BENCH_DIR ?? tmpdir(), `acpack-bench-p2p-${process.pid}`);
  let lab: Lab | undefined;
  let source: SourceRegistry | undefined;
  let cleaning: Promise<void> | undefined;
  const cleanup = () =>
    (cleaning ??= (async () => {
      if (lab) await labDown(lab).catch((e: Error) => log(`lab teardown: ${e.message}`));
      if (source) await source.stop().catch(() => {});
      await rm(work, { recursive: true, force: true });
    })());
  const onSignal = (sig: NodeJS.Signals) => {
    log(`${sig}: tearing the lab down`);
    void cleanup().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  try {
    await rm(work, { recursive: true, force: true });
    await mkdir(work, { recursive: true });

    // The distribution: 5 images of random layers, and what `acinstall from` needs (kubeadm's
    // images, the kubeadm and kubelet stand-ins), bundled for amd64 (as p2p-lab's).
    log('building the bundle');
    source = await startSourceRegistry(join(work, 'source'));
    const refs: string[] = [];
    const layerDigests: Digest[] = [];
    let layerBytes = 0;
    for (let i = 0; i < IMAGES; i++) {
      const layers = LAYERS_MB.filter((_, j) => j % IMAGES === i).map((m) => randomLayer(Math.max(1, Math.round((m * MB * 1e6) / 400))));
      for (const l of layers) {
        layerDigests.push(l.descriptor.digest);
        layerBytes += l.data.length;
      }
      await pushImage(source.host, buildIndexImage(`bench/p2p${i}`, 'v1', { amd64: layers }));
      refs.push(`${source.host}/bench/p2p${i}:v1`);
    }
    const kubeadmImages = await pushKubeadmImages(source.host, { arches: ['amd64'] });
    const bundlePath = await benchBundle(work, 'bench-p2p', { images: [...refs, ...kubeadmImages], binaries: [await kubeadmBinary(join(work, 'bin')), kubeletBinary()] }, 'amd64', true);
    await source.stop();
    source = undefined;

    // Sealer's files: every blob of the benchmark's images for amd64 (index, manifest, config, layers).
    const d = await readDescriptor(bundlePath);
    const cache = await ContentStore.open(join(work, 'cache'));
    const files = new Set<string>();
    for (const img of d.images.filter((x) => refs.includes(x.ref))) {
      files.add(cache.path(img.digest));
      for (const p of img.platforms.filter((x) => x.platform === 'linux/amd64')) {
        files.add(cache.path(p.digest as Digest));
        const m = JSON.parse((await cache.readBytes(p.digest as Digest)).toString()) as { config: { digest: Digest }; layers: { digest: Digest }[] };
        for (const b of [m.config, ...m.layers]) files.add(cache.path(b.digest));
      }
    }
    const fileList = join(work, 'files');
    await writeFile(fileList, [...files].join('\n'));

    lab = await labUp(NODES + 1, { dir: join(work, 'lab') });
    const [master, ...nodes] = lab.hosts;
    const theLab = lab;
    log(`lab ${lab.id} up (${lab.subnet}); acinstall from`);
    let t0 = process.hrtime.bigint();
    const from = await acinstallOn(master, ['from', bundlePath, '-m', master.ip, '-n', nodes.map((n) => n.ip).join(','), '-i', lab.key, '--store', join(work, 'site'), '--ignore-preflight', 'disk,ip_forward,br_netfilter,memory,cpu'], ROOT, 900_000);
    if (from.code !== 0) throw new Error(`acinstall from failed (${from.code}):\n${from.stdout}\n${from.stderr}`);
    const fromSeconds = round(seconds(t0));
    log(`from: ${fromSeconds} s`);

    const stats = async () => Promise.all(nodes.map(async (n) => JSON.parse((await onNode(theLab, n, agentStats)).stdout) as Agent));
    const minus = (a: Agent[], b: Agent[]) => a.map((x, i) => ({ fromSeed: x.fromSeed - b[i].fromSeed, fromPeers: x.fromPeers - b[i].fromPeers, served: x.served - b[i].served, badPieces: x.badPieces - b[i].badPieces }));

    /** Every node fetches every image at one instant through `hostsDir`; the mode's containerd is removed after. */
    async function fetchAll(mode: string, hostsDir: (dir: string) => string, setup?: (dir: string) => string, preheat = false): Promise<Omit<ModeResult, 'overTPhys' | 'egressOverS'>> {
      const dir = benchDir(mode);
      await Promise.all(nodes.map((n) => onNode(theLab, n, `${startContainerd(dir)}${setup ? `\n${setup(dir)}` : ''}`)));
      try {
        const before = await stats();
        const tx0 = await txBytes(master);
        const drops0 = await qdiscDrops(master);
        const reg0 = await registryBytes(master, join(work, 'site'));
        const at = Date.now() / 1000 + 3; // time enough for every SSH connection (~50 ms each)
        const cpuUse = sampleCpu();
        const spans = await Promise.all(
          nodes.map(async (n) => {
            const r = await onNode(theLab, n, timedFetch(dir, hostsDir(dir), refs, at, preheat), 1_800_000).catch(async (e: { stderr?: string; message: string }) => {
              // What the lead needs to tell a product fault from the machine's: the agent's last
              // lines and how congested the master's link was.
              const agentLog = (await onNode(theLab, n, 'journalctl -u acpack-agent -n 20 -o cat --no-pager 2>&1').catch(() => ({ stdout: '(no log)' }))).stdout;
              const drops = (await qdiscDrops(master).catch(() => drops0)) - drops0;
              // Can the node reach the registry now, from its default address and from the agent's?
              const probe = (src: string) => `curl -sS -o /dev/null -w '%{http_code} in %{time_connect}s/%{time_appconnect}s' --max-time 12 --cacert /etc/acpack/registry-ca.crt ${src} https://${master.ip}:5000/v2/ 2>&1 || true`;
              const reach = (await onNode(theLab, n, `echo "registry from the default address: $(${probe('')}); from ${n.ip}: $(${probe(`--interface ${n.ip}`)})"`).catch((x: Error) => ({ stdout: x.message }))).stdout;
              const listen = (await inHost(master, 'ss', ['-ltn', 'sport = :5000']).catch((x: Error) => ({ stdout: x.message }))).stdout;
              throw new Error(`${mode}: the fetch on ${n.name} failed: ${e.stderr || e.message}\n--- its agent's log:\n${agentLog}\n--- ${reach.trim()}\n--- the master's listening socket (Recv-Q: connections not yet accepted):\n${listen}--- the master's tbf dropped ${drops} packets in this mode; load ${loadavg()[0].toFixed(2)}`);
            });
            const [times, imagesIn = ''] = r.stdout.trim().split('\n');
            const [start, end] = times.trim().split(/\s+/).map(Number);
            return { start, end, imagesIn: imagesIn.trim().split(/\s+/).map(Number) };
          }),
        );
        const cpu = await cpuUse();
        if (AGENT_LOGS) {
          await mkdir(AGENT_LOGS, { recursive: true });
          for (const n of nodes) await writeFile(join(AGENT_LOGS, `${mode}-${n.name}.log`), (await onNode(theLab, n, 'journalctl -u acpack-agent -o cat --no-pager 2>&1 | tail -n 400')).stdout);
        }
        const masterSentBytes = (await txBytes(master)) - tx0;
        const masterDrops = (await qdiscDrops(master)) - drops0;
        const registrySent = minusBytes(await registryBytes(master, join(work, 'site')), reg0);
        const agents = minus(await stats(), before);
        // Everything there: each node's containerd holds every layer.
        for (const n of nodes) {
          const have = new Set((await onNode(theLab, n, contentList(dir))).stdout.split('\n'));
          const missing = layerDigests.filter((x) => !have.has(x));
          if (missing.length) throw new Error(`${mode}: ${n.name} lacks ${missing.length} layers after its fetch`);
        }
        const space = (await onNode(theLab, nodes[0], overlayUse)).stdout.trim().split(/\s+/).map(Number);
        log(`${mode}: ${nodes[0].name}'s tmpfs: ${mb(space[0])} MB used, ${mb(space[1])} MB free`);
        return {
          seconds: round(Math.max(...spans.map((s) => s.end)) - at),
          nodeSeconds: spans.map((s) => round(s.end - at)).sort((a, b) => a - b),
          imageSeconds: refs.map((_, i) => round(spans.map((s) => s.imagesIn[i] - at).sort((a, b) => a - b)[Math.floor((spans.length - 1) / 2)])),
          startSkewSeconds: round(Math.max(...spans.map((s) => s.start)) - at, 3),
          masterSentBytes,
          masterDrops,
          registryBytes: registrySent,
          fromSeedBytes: agents.map((a) => a.fromSeed),
          fromPeersBytes: agents.map((a) => a.fromPeers),
          servedBytes: agents.map((a) => a.served),
          badPieces: agents.reduce((k, a) => k + a.badPieces, 0),
          cpu,
        };
      } finally {
        await Promise.all(nodes.map((n) => onNode(theLab, n, stopContainerd(dir)).catch(() => {})));
      }
    }

    for (const rate of RATES) {
      const B = parseRate(rate) / 8;
      const tPhys = layerBytes / B + Math.ceil(Math.log2(NODES)) * (PIECE_SIZE / B);
      await shapeLinks(lab, rate, BOTH_WAYS);
      const results: Partial<Record<Mode, ModeResult>> = {};
      const finish = (r: Omit<ModeResult, 'overTPhys' | 'egressOverS'>): ModeResult => ({ ...r, overTPhys: round(r.seconds / tPhys), egressOverS: round(r.masterSentBytes / layerBytes) });
      for (const mode of MODES as Mode[]) {
        log(`${rate}: ${mode}`);
        if (mode === 'direct') {
          // All from the master: the same pull with the agent left out of hosts.toml (the agents run,
          // idle: their counters below show they carried nothing).
          results.direct = finish(await fetchAll(`direct-${rate}`, (dir) => `${dir}/certs.d`, directHostsDir));
        } else if (mode === 'p2p') {
          // Agents with empty caches and counters: nothing from an earlier run is served.
          await Promise.all(nodes.map((n) => onNode(theLab, n, resetAgent)));
          results.p2p = finish(await fetchAll(`p2p-${rate}`, () => '/etc/containerd/certs.d', undefined, true));
          // The agents' copies leave room in the tmpfs for sealer's files.
          await Promise.all(nodes.map((n) => onNode(theLab, n, resetAgent)));
        } else {
          const tx0 = await txBytes(master);
          const drops0 = await qdiscDrops(master);
          t0 = process.hrtime.bigint();
          const cpuUse = sampleCpu();
          await inHost(master, process.execPath, ['--import', 'tsx', join(ROOT, 'bench/install/sftp-copy.ts'), lab.key, fileList, ...nodes.map((n) => n.ip)], 3_600_000);
          const s = round(seconds(t0));
          results.sealer = finish({ seconds: s, masterSentBytes: (await txBytes(master)) - tx0, masterDrops: (await qdiscDrops(master)) - drops0, cpu: await cpuUse() });
          await Promise.all(nodes.map((n) => onNode(theLab, n, 'rm -rf /var/lib/sealer-copy')));
        }
      }

      const p2p = results.p2p;
      const result = {
        bench: 'p2p',
        date: new Date().toISOString(),
        loadAtStart: round(load),
        nodes: NODES,
        rate,
        shaped: BOTH_WAYS ? 'both ways' : 'egress only',
        layerBytes,
        layers: layerDigests.length,
        images: refs.length,
        pieceBytes: PIECE_SIZE,
        tPhys: round(tPhys),
        fromSeconds,
        ...results,
        p2pOverSealer: p2p && results.sealer ? round(p2p.seconds / results.sealer.seconds) : undefined,
        goals: p2p
          ? {
              timeWithin13TPhys: p2p.overTPhys <= 1.3,
              egressWithin12S: p2p.egressOverS <= 1.2,
              ...(results.sealer ? { within03Sealer: p2p.seconds <= 0.3 * results.sealer.seconds } : {}),
            }
          : undefined,
      };
      process.stdout.write(table(result, results, tPhys, B) + '\n');
      if (RECORD) {
        await mkdir(join(ROOT, 'bench/results'), { recursive: true });
        await appendFile(join(ROOT, 'bench/results/p2p.jsonl'), `${JSON.stringify(result)}\n`);
      }
    }
  } finally {
    await cleanup();
  }
}

function table(r: { nodes: number; rate: string; shaped: string; layerBytes: number; layers: number; images: number; loadAtStart: number; p2pOverSealer?: number }, results: Partial<Record<Mode, ModeResult>>, tPhys: number, B: number): string {
  const lines = [
    `bench/p2p: ${r.nodes} nodes + the master, S = ${mb(r.layerBytes)} MB in ${r.layers} layers (${r.images} images), links ${r.rate} (${r.shaped}), load ${r.loadAtStart} at start`,
    `T_phys = S/B + ⌈log₂N⌉·p/B = ${round(r.layerBytes / B)} + ${Math.ceil(Math.log2(r.nodes))}·${round(PIECE_SIZE / B, 3)} = ${round(tPhys)} s`,
    '',
    `${'mode'.padEnd(14)}${'time s'.padStart(9)}${'×T_phys'.padStart(9)}${'median s'.padStart(10)}${'egress MB'.padStart(11)}${'egress/S'.padStart(10)}${'drops'.padStart(8)}  from registry / from peers per node (MB)`,
  ];
  const names: Record<Mode, string> = { p2p: 'p2p', direct: 'no p2p', sealer: 'sealer sftp' };
  for (const mode of ['p2p', 'direct', 'sealer'] as Mode[]) {
    const m = results[mode];
    if (!m) continue;
    const median = m.nodeSeconds ? m.nodeSeconds[Math.floor((m.nodeSeconds.length - 1) / 2)] : undefined;
    const perNode = m.fromSeedBytes ? m.fromSeedBytes.map((s, i) => `${mb(s)}/${mb(m.fromPeersBytes![i])}`).join(' ') : '-';
    lines.push(
      `${names[mode].padEnd(14)}${m.seconds.toFixed(2).padStart(9)}${m.overTPhys.toFixed(2).padStart(9)}${(median?.toFixed(2) ?? '-').padStart(10)}${mb(m.masterSentBytes).padStart(11)}${m.egressOverS.toFixed(2).padStart(10)}${String(m.masterDrops ?? '-').padStart(8)}  ${perNode}`,
    );
  }
  lines.push('', 'each image in, in the order fetched (median node, s):');
  for (const mode of ['p2p', 'direct'] as Mode[]) if (results[mode]?.imageSeconds) lines.push(`  ${names[mode].padEnd(12)} ${results[mode]!.imageSeconds!.join(' ')}`);
  lines.push('', "the site registry's answers by route, MB (aborted ones count whole):");
  for (const mode of ['p2p', 'direct'] as Mode[]) {
    const b = results[mode]?.registryBytes;
    if (b) lines.push(`  ${names[mode].padEnd(12)} ${Object.entries(b).map(([k, v]) => `${k} ${(v / 1e6).toFixed(1)}`).join(', ')}`);
  }
  lines.push('', 'CPU seconds used while each mode ran (busy: all cores; by kind of process):');
  for (const mode of ['p2p', 'direct', 'sealer'] as Mode[]) {
    const c = results[mode]?.cpu;
    if (!c) continue;
    const kinds = Object.entries(c.byKind).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v}`).join(', ');
    lines.push(`  ${names[mode].padEnd(12)} busy ${c.busySeconds}, idle ${c.idleSeconds}: ${kinds}`);
  }
  const p = results.p2p;
  if (p) {
    lines.push(
      '',
      `goals: p2p ${p.overTPhys}·T_phys (≤ 1.3), egress ${p.egressOverS}·S (≤ 1.2)${r.p2pOverSealer !== undefined ? `, p2p/sealer ${r.p2pOverSealer} (≤ 0.3)` : ''}; nodes started within ${p.startSkewSeconds} s; bad pieces ${p.badPieces}`,
    );
  }
  lines.push('(drops: packets the master tbf dropped, its queue full)');
  return lines.join('\n');
}

await main();
