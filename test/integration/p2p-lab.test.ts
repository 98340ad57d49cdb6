import { describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { buildIndexImage, buildLayer, pushImage } from '../../demo/samples.js';
import { PIECE_SIZE } from '../../p2p/pieces.js';
import { acinstallOn, inHost, shapeLinks, ssh, type LabHost } from '../hosts/lab.js';
import { kubeletBinary } from '../hosts/standins/kubeadm-standin.js';
import { stopChild } from '../../demo/processes.js';
import { ROOT } from '../helpers/env.js';
import { bundleSpec, imageRef, kubeadmContent } from '../helpers/fixtures.js';
import { useLab } from '../helpers/lab.js';

/**
 * The peer cache on test hosts, after `acinstall from` laid it down: 6 hosts, links shaped to 200
 * Mbit/s (tbf), the workers' containerd clients (ctr, through the hosts.toml acinstall wrote)
 * fetching the same image at the same instant. The master sends about one copy; the workers the
 * rest. Then the faults, each on an image of its own: a peer that flips bytes, a peer killed while it
 * serves, an agent restarted, and the master stopped once it has seeded an image.
 */
const LAYERS = 4;
/** Twelve pieces and a bit: long enough on a 200 Mbit/s link for a fault to strike mid-transfer. */
const LAYER_BYTES = 12 * PIECE_SIZE + 4321;
/** The images of the fault tests: two such layers. */
const FAULTS = ['flip', 'kill', 'gone'] as const;

const t = useLab(6, async ({ host, dir }) => {
  const { images, kubeadm } = await kubeadmContent(host, dir);
  const image = async (name: string, layers: number) => {
    const built = [];
    for (let i = 0; i < layers; i++) built.push(await buildLayer([{ path: `l${i}`, content: randomBytes(LAYER_BYTES) }]));
    const img = buildIndexImage(`p2p/${name}`, 'v1', { amd64: built });
    await pushImage(host, img);
    return { ref: imageRef(host, img), bytes: built.reduce((n, l) => n + l.data.length, 0) };
  };
  const big = await image('big', LAYERS);
  const faults = Object.fromEntries(await Promise.all(FAULTS.map(async (f) => [f, await image(f, 2)] as const))) as Record<(typeof FAULTS)[number], { ref: string; bytes: number }>;
  const other = buildIndexImage('p2p/other', 'v1', { amd64: [await buildLayer([{ path: 'o', content: randomBytes(1000) }])] });
  await pushImage(host, other);
  const refs = [big.ref, ...FAULTS.map((f) => faults[f].ref), imageRef(host, other)];
  const bundle = await bundleSpec(dir, { images: [...images, ...refs], binaries: [kubeadm, kubeletBinary()] }, join(dir, 'b.tar.zst'), 'amd64', { allowIncomplete: true });
  return { bundle, big: big.ref, bytes: big.bytes, faults, other: imageRef(host, other) };
});

/** Bytes the host's link sent (its own netns's counters: /sys is the machine's, not the namespace's). */
const txBytes = async (h: LabHost) => (JSON.parse((await inHost(h, 'ip', ['-s', '-j', 'link', 'show', 'eth0'])).stdout) as { stats64: { tx: { bytes: number } } }[])[0].stats64.tx.bytes;
const agentLog = async (h: LabHost) => (await ssh(t.lab, t.lab.hosts[0], h, 'journalctl -u acpack-agent -n 15 -o cat --no-pager 2>&1')).stdout;
const fetchOn = (h: LabHost, ref: string, ns = 'p2p') =>
  ssh(t.lab, t.lab.hosts[0], h, `ctr -n ${ns} content fetch --hosts-dir /etc/containerd/certs.d --platform linux/amd64 ${ref} >/dev/null && ctr -n ${ns} images ls -q`, 180_000);
type Stats = { fromSeed: number; fromPeers: number; served: number; badPieces: number };
const statsOf = async (h: LabHost): Promise<Stats> => JSON.parse((await ssh(t.lab, t.lab.hosts[0], h, 'curl -fsS http://127.0.0.1:5001/p2p/v1/stats')).stdout) as Stats;
const fetched = (s: Stats) => s.fromSeed + s.fromPeers;
const logsOf = async (hs: LabHost[]) => (await Promise.all(hs.map(agentLog))).map((l, i) => `--- ${hs[i].name}'s agent:\n${l}`).join('\n');

describe('the peer cache on test hosts', { timeout: 400_000 }, () => {
  it('hands every worker the image with the master sending about one copy, and every worker taking bytes from peers', async () => {
    const [master, ...workers] = t.lab.hosts;
    const store = join(t.work.dir, 'site');
    const from = await acinstallOn(master, ['from', t.built.bundle, '-m', master.ip, '-n', workers.map((w) => w.ip).join(','), '-i', t.lab.key, '--store', store, '--ignore-preflight', 'disk,ip_forward,br_netfilter'], ROOT, 300_000);
    expect(from.code, `${from.stdout}\n${from.stderr}`).toBe(0);
    // acinstall's runtime: the registry hands it to two nodes at a time and they hand it on, so of
    // five workers at least one took it from a peer (the first master takes its own, off the link).
    const runtimeLine = /acinstall's runtime: (\d+) node\(s\) took it from the registry, (\d+) from peers/.exec(from.stderr);
    expect(runtimeLine, from.stderr).not.toBeNull();
    console.info(runtimeLine![0]);
    expect(Number(runtimeLine![1]) + Number(runtimeLine![2])).toBe(t.lab.hosts.length);
    expect(Number(runtimeLine![2]), from.stderr).toBeGreaterThanOrEqual(1);
    // Each worker's agent runs on it and keeps it whole for the next: a blob named by its sha256
    // that unpacks to the very executable the node runs.
    const keptRuntime = [
      'r=$(sha256sum < /usr/local/lib/acpack/acinstall)',
      'for f in /var/lib/acpack-agent/blobs/*; do',
      '  if [ "$(sha256sum < "$f" | cut -c1-64)" = "$(basename "$f")" ] && [ "$(gzip -dc "$f" 2>/dev/null | sha256sum)" = "$r" ]; then echo runtime-kept; fi',
      'done',
      'systemctl is-active acpack-agent',
    ].join('\n');
    for (const w of workers) expect((await ssh(t.lab, master, w, keptRuntime)).stdout).toBe('runtime-kept\nactive\n');
    await shapeLinks(t.lab, '200mbit');

    const before = await txBytes(master);
    const pulled = await Promise.all(workers.map((w) => fetchOn(w, t.built.big)));
    for (const p of pulled) expect(p.stdout).toContain(t.built.big);
    const egress = (await txBytes(master)) - before;
    const stats = await Promise.all(workers.map(statsOf));
    const logs = await logsOf(workers);
    const summary = `S = ${t.built.bytes}, master egress ${egress} (${(egress / t.built.bytes).toFixed(2)} S); per worker from the registry/peers: ${stats.map((s) => `${s.fromSeed}/${s.fromPeers}`).join(', ')}\n${logs}`;
    console.info(summary.split('\n')[0]);
    // Every byte from the master would be 4·S. With 48 pieces, each piece the seed hands out twice
    // costs 0.02·S (with 12 pieces of 4 MiB, runs gave 1.01, 1.09 and 1.26·S). The issue's 1.2·S is bench/p2p's
    // goal, over 400 MB; this bound catches a peer cache that does not work, without flaking.
    expect(egress, summary).toBeLessThanOrEqual(1.5 * t.built.bytes);
    for (const s of stats) {
      expect(s.fromPeers, summary).toBeGreaterThan(0);
      expect(s.fromSeed + s.fromPeers, summary).toBe(t.built.bytes);
      expect(s.badPieces).toBe(0);
    }
    expect(stats.reduce((n, s) => n + s.served, 0), summary).toBeGreaterThan(0);
    // acinstall status shows each node's traffic as its agent last announced it (the next announce: within 30 s).
    let table = '';
    for (let i = 0; i < 70 && !workers.every((w) => new RegExp(`${w.ip.replace(/\./g, '\\.')}\\s+\\S+ \\S+\\s+[1-9]`).test(table)); i++) {
      table = (await acinstallOn(master, ['status', '--store', store], ROOT)).stdout;
      await new Promise((r) => setTimeout(r, 500));
    }
    expect(table).toContain('PEER CACHE');
    for (const w of workers) expect(table, table).toMatch(new RegExp(`${w.ip.replace(/\./g, '\\.')}\\s+\\S+ \\S+\\s+[1-9]`));
  });

  it('catches a peer that flips bytes by the piece hash: re-fetched elsewhere, the peer shunned and logged', async () => {
    const [, ...workers] = t.lab.hosts;
    const liar = workers[workers.length - 1];
    const askers = workers.slice(0, -1);
    const { ref, bytes } = t.built.faults.flip;
    // The liar holds the whole image (from the registry), then a proxy that flips a byte of every
    // piece stands in front of its agent: peers' connections to its port 5001 go to the proxy.
    expect((await fetchOn(liar, ref)).stdout).toContain(ref);
    const proxy = spawn('nsenter', [`--net=/run/netns/${liar.netns}`, '--', process.execPath, join(ROOT, 'test/hosts/flip-proxy.mjs'), '5003', `${liar.ip}:5001`], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      await new Promise((resolve, reject) => {
        proxy.stdout!.once('data', resolve);
        proxy.once('exit', (code) => reject(new Error(`the flipping proxy exited (${code})`)));
      });
      await inHost(liar, 'iptables', ['-t', 'nat', '-A', 'PREROUTING', '-p', 'tcp', '--dport', '5001', '-j', 'REDIRECT', '--to-ports', '5003']);
      const before = await Promise.all(askers.map(statsOf));
      for (const p of await Promise.all(askers.map((w) => fetchOn(w, ref)))) expect(p.stdout).toContain(ref);
      const after = await Promise.all(askers.map(statsOf));
      const logs = await logsOf(askers);
      // Every asker got the image whole (ctr checked each blob's digest) and counted no bad byte as fetched.
      after.forEach((s, i) => expect(fetched(s) - fetched(before[i]), logs).toBe(bytes));
      expect(after.reduce((n, s, i) => n + s.badPieces - before[i].badPieces, 0), logs).toBeGreaterThan(0);
      expect(logs).toMatch(new RegExp(`peer ${liar.ip.replace(/\./g, '\\.')}_5001 served piece \\d+ of sha256:[0-9a-f]{64} with bytes that do not match its hash: shunned for this run`));
    } finally {
      await inHost(liar, 'iptables', ['-t', 'nat', '-F', 'PREROUTING']).catch(() => {});
      await stopChild(proxy);
    }
  });

  it('drops a peer killed while it serves, and fetches its pieces elsewhere', async () => {
    const [, victim, ...askers] = t.lab.hosts;
    const { ref, bytes } = t.built.faults.kill;
    expect((await fetchOn(victim, ref)).stdout).toContain(ref);
    const before = await Promise.all(askers.map(statsOf));
    // On the victim: as soon as its agent has started serving a piece of this image, it is killed;
    // its supervisor restarts it 2 s later. Its PID and its count of bytes served (the earlier
    // tests' too) are read before the askers start: the stand-in systemctl is a Node start, slower
    // than the whole image on these links.
    const served = `curl -fsS http://127.0.0.1:5001/p2p/v1/stats | grep -o '"served":[0-9]*' | cut -d: -f2`;
    const [pid, served0] = (await ssh(t.lab, t.lab.hosts[0], victim, `systemctl show -p MainPID acpack-agent | cut -d= -f2 && ${served}`)).stdout.split('\n');
    expect(`${pid} ${served0}`).toMatch(/^[1-9]\d* \d+$/);
    const killer = ssh(
      t.lab,
      t.lab.hosts[0],
      victim,
      `for i in $(seq 400); do s=$(${served}) || exit 1; if [ "$s" -gt ${served0} ]; then kill -9 ${pid}; echo killed; exit 0; fi; sleep 0.02; done; exit 1`,
      60_000,
    );
    const pulled = await Promise.all(askers.map((w) => fetchOn(w, ref)));
    expect((await killer).stdout).toContain('killed');
    for (const p of pulled) expect(p.stdout).toContain(ref);
    const after = await Promise.all(askers.map(statsOf));
    const logs = await logsOf(askers);
    after.forEach((s, i) => expect(fetched(s) - fetched(before[i]), logs).toBe(bytes));
    expect(logs).toMatch(new RegExp(`peer ${victim.ip.replace(/\./g, '\\.')}_5001 failed \\(.*\\): its pieces are fetched elsewhere`));
  });

  it('keeps what an agent verified across its restart: a second pull on that node takes nothing from anyone', async () => {
    const [, w1] = t.lab.hosts;
    await ssh(t.lab, t.lab.hosts[0], w1, 'systemctl restart acpack-agent && for i in $(seq 50); do curl -fsS -o /dev/null http://127.0.0.1:5001/v2/ && break; sleep 0.2; done');
    expect(await statsOf(w1)).toMatchObject({ fromSeed: 0, fromPeers: 0 });
    expect((await fetchOn(w1, t.built.big, 'again')).stdout).toContain(t.built.big);
    expect(await statsOf(w1)).toMatchObject({ fromSeed: 0, fromPeers: 0 });
  });

  it('with the master stopped once it seeded an image, nodes that resolved it finish from peers, and a new pull fails fast', async () => {
    const [master, seeded, ...askers] = t.lab.hosts;
    const { ref, bytes } = t.built.faults.gone;
    // The master seeds the image once, to one node; the others start, and once each has its first
    // bytes (the manifests resolved), the site registry — and its tracker — stop.
    expect((await fetchOn(seeded, ref)).stdout).toContain(ref);
    // Slower links, both ways, so that the stop comes while the askers are still fetching (checked
    // below): each asker then takes ≥ 20 s for the image however many peers send to it. Shaped at
    // 20 Mbit/s on the senders' side only, a CI run had every asker done before the stop landed.
    await shapeLinks(t.lab, '10mbit', true);
    const before = await Promise.all(askers.map(statsOf));
    const pulls = askers.map((w) => fetchOn(w, ref).then((p) => p.stdout, (e: { stdout?: string; stderr?: string }) => `failed: ${e.stdout}${e.stderr}`));
    for (let i = 0; i < 300; i++) {
      const now = await Promise.all(askers.map(statsOf));
      if (now.every((s, j) => fetched(s) > fetched(before[j]))) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    const stop = await acinstallOn(master, ['registry', 'stop', '--store', join(t.work.dir, 'site')], ROOT);
    expect(stop.code, stop.stderr).toBe(0);
    const egress = await txBytes(master);
    const atStop = await Promise.all(askers.map(statsOf));
    expect(atStop.some((s, i) => fetched(s) - fetched(before[i]) < bytes), 'every asker had finished before the registry stopped').toBe(true);
    const pulled = await Promise.all(pulls);
    const after = await Promise.all(askers.map(statsOf));
    const logs = await logsOf(askers);
    for (const p of pulled) expect(p, logs).toContain(ref);
    after.forEach((s, i) => expect(fetched(s) - fetched(before[i]), logs).toBe(bytes));
    expect(logs).toContain('the tracker cannot be reached');
    // With the registry gone, nothing more left the master: the rest came from the nodes.
    expect((await txBytes(master)) - egress).toBeLessThan(bytes / 10);

    const started = Date.now();
    const r = await fetchOn(askers[0], t.built.other).then(
      () => 'pulled',
      (e: { stdout?: string; stderr?: string }) => `${e.stdout}${e.stderr}`,
    );
    expect(r).not.toBe('pulled');
    expect(Date.now() - started).toBeLessThan(60_000);
  });
});
