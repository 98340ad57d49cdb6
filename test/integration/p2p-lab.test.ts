import { describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { buildIndexImage, buildLayer, pushImage } from '../../demo/samples.js';
import { PIECE_SIZE } from '../../p2p/pieces.js';
import { acinstallOn, inHost, ssh, type LabHost } from '../hosts/lab.js';
import { kubeletBinary } from '../hosts/standins/kubeadm-standin.js';
import { ROOT } from '../helpers/env.js';
import { bundleSpec, imageRef, kubeadmContent } from '../helpers/fixtures.js';
import { useLab } from '../helpers/lab.js';

/**
 * The peer cache on test hosts, after `acinstall from` laid it down: links shaped to 200 Mbit/s
 * (tbf), every worker's containerd client (ctr, through the hosts.toml acinstall wrote) fetching the
 * same image at the same instant. The master sends about one copy; the workers the rest.
 */
const LAYERS = 4;
const LAYER_BYTES = 3 * PIECE_SIZE + 4321;

const t = useLab(5, async ({ host, dir }) => {
  const { images, kubeadm } = await kubeadmContent(host, dir);
  const layers = [];
  for (let i = 0; i < LAYERS; i++) layers.push(await buildLayer([{ path: `l${i}`, content: randomBytes(LAYER_BYTES) }]));
  const big = buildIndexImage('p2p/big', 'v1', { amd64: layers });
  const other = buildIndexImage('p2p/other', 'v1', { amd64: [await buildLayer([{ path: 'o', content: randomBytes(1000) }])] });
  await pushImage(host, big);
  await pushImage(host, other);
  const bundle = await bundleSpec(dir, { images: [...images, imageRef(host, big), imageRef(host, other)], binaries: [kubeadm, kubeletBinary()] }, join(dir, 'b.tar.zst'), 'amd64', { allowIncomplete: true });
  return { bundle, big: imageRef(host, big), other: imageRef(host, other), bytes: layers.reduce((n, l) => n + l.data.length, 0) };
});

/** Bytes the host's link sent (its own netns's counters: /sys is the machine's, not the namespace's). */
const txBytes = async (h: LabHost) => (JSON.parse((await inHost(h, 'ip', ['-s', '-j', 'link', 'show', 'eth0'])).stdout) as { stats64: { tx: { bytes: number } } }[])[0].stats64.tx.bytes;
const agentLog = async (h: LabHost) => (await ssh(t.lab, t.lab.hosts[0], h, 'journalctl -u acpack-agent -n 15 -o cat --no-pager 2>&1')).stdout;
const fetchOn = (h: LabHost, ref: string, ns = 'p2p') =>
  ssh(t.lab, t.lab.hosts[0], h, `ctr -n ${ns} content fetch --hosts-dir /etc/containerd/certs.d --platform linux/amd64 ${ref} >/dev/null && ctr -n ${ns} images ls -q`, 180_000);
const statsOf = async (h: LabHost) => JSON.parse((await ssh(t.lab, t.lab.hosts[0], h, 'curl -fsS http://127.0.0.1:5001/p2p/v1/stats')).stdout) as { fromSeed: number; fromPeers: number; served: number; badPieces: number };

describe('the peer cache on test hosts', { timeout: 400_000 }, () => {
  it('hands every worker the image with the master sending about one copy, and every worker taking bytes from peers', async () => {
    const [master, ...workers] = t.lab.hosts;
    const store = join(t.work.dir, 'site');
    const from = await acinstallOn(master, ['from', t.built.bundle, '-m', master.ip, '-n', workers.map((w) => w.ip).join(','), '-i', t.lab.key, '--store', store, '--ignore-preflight', 'disk,ip_forward,br_netfilter'], ROOT, 300_000);
    expect(from.code, `${from.stdout}\n${from.stderr}`).toBe(0);
    for (const h of t.lab.hosts) await inHost(h, 'tc', ['qdisc', 'replace', 'dev', 'eth0', 'root', 'tbf', 'rate', '200mbit', 'burst', '256kb', 'latency', '100ms']);

    const before = await txBytes(master);
    const pulled = await Promise.all(workers.map((w) => fetchOn(w, t.built.big)));
    for (const p of pulled) expect(p.stdout).toContain(t.built.big);
    const egress = (await txBytes(master)) - before;
    const stats = await Promise.all(workers.map(statsOf));
    const logs = (await Promise.all(workers.map(agentLog))).map((l, i) => `--- ${workers[i].name}'s agent:\n${l}`).join('\n');
    const summary = `S = ${t.built.bytes}, master egress ${egress} (${(egress / t.built.bytes).toFixed(2)} S); per worker from the registry/peers: ${stats.map((s) => `${s.fromSeed}/${s.fromPeers}`).join(', ')}\n${logs}`;
    console.info(summary.split('\n')[0]);
    // Every byte from the master would be 4·S. With 12 pieces of 4 MiB, each piece the seed hands
    // out twice costs 0.08·S: runs gave 1.01, 1.09 and 1.26·S. The issue's 1.2·S is bench/p2p's
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

  it('keeps what an agent verified across its restart: a second pull on that node takes nothing from anyone', async () => {
    const [, w1] = t.lab.hosts;
    await ssh(t.lab, t.lab.hosts[0], w1, 'systemctl restart acpack-agent && for i in $(seq 50); do curl -fsS -o /dev/null http://127.0.0.1:5001/v2/ && break; sleep 0.2; done');
    expect(await statsOf(w1)).toMatchObject({ fromSeed: 0, fromPeers: 0 });
    expect((await fetchOn(w1, t.built.big, 'again')).stdout).toContain(t.built.big);
    expect(await statsOf(w1)).toMatchObject({ fromSeed: 0, fromPeers: 0 });
  });

  it('with the registry stopped, a new pull fails fast, and what a node fetched stays with its agent', async () => {
    const [master, , w2] = t.lab.hosts;
    const stop = await acinstallOn(master, ['registry', 'stop', '--store', join(t.work.dir, 'site')], ROOT);
    expect(stop.code, stop.stderr).toBe(0);
    const started = Date.now();
    const r = await fetchOn(w2, t.built.other).then(
      () => 'pulled',
      (e: { stdout?: string; stderr?: string }) => `${e.stdout}${e.stderr}`,
    );
    expect(r).not.toBe('pulled');
    expect(Date.now() - started).toBeLessThan(60_000);
    // What the node already holds stays served: its agent keeps the blobs for its peers.
    const stats = await statsOf(w2);
    expect(stats.fromSeed + stats.fromPeers).toBe(t.built.bytes);
  });
});
