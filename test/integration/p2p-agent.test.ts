import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, type Server } from 'node:http';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { buildIndexImage, buildLayer, pushImage, type Layer } from '../../demo/samples.js';
import { freePort } from '../../demo/source-registry.js';
import { sha256 } from '../../oci/digest.js';
import { importBundle, startRegistry, type RunningRegistry } from '../../registry/index.js';
import { PASS_THROUGH_BYTES, PeerAgent } from '../../p2p/agent.js';
import { localServer, peerServer } from '../../p2p/agent-server.js';
import { PIECE_SIZE } from '../../p2p/pieces.js';
import { tempDir, withRegistry } from '../helpers/env.js';
import { startFaultProxy } from '../helpers/fault-proxy.js';
import { bundleSpec, imageRef } from '../helpers/fixtures.js';

/**
 * Agents on this machine's loopback, a site registry with its tracker, and a blob of several
 * pieces: the first agent takes it from the registry, the next ones mostly from it and each other.
 * (The lab test runs them on test hosts, behind containerd.)
 */
let work: Awaited<ReturnType<typeof tempDir>>;
let layer: Layer;
/** A second blob of several pieces, in the same image. */
let layer2: Layer;
/** A blob of one piece, larger than PASS_THROUGH_BYTES: from peers too. */
let onePiece: Layer;
/** A blob of PASS_THROUGH_BYTES or less: passed through from the registry, and kept. */
let small: Layer;
/** A blob of many pieces in an image of its own (p2p/paced), for the seed's pace. */
let paced: Layer;
let registryClosed = false;
let source: string;
let reg: RunningRegistry;
const running: { agent: PeerAgent; servers: Server[] }[] = [];

beforeAll(async () => {
  work = await tempDir();
  layer = await buildLayer([{ path: 'big', content: randomBytes(5 * PIECE_SIZE + 777) }]);
  layer2 = await buildLayer([{ path: 'big2', content: randomBytes(3 * PIECE_SIZE + 55) }]);
  onePiece = await buildLayer([{ path: 'one', content: randomBytes(PIECE_SIZE / 3) }]);
  small = await buildLayer([{ path: 'small', content: randomBytes(PASS_THROUGH_BYTES / 2) }]);
  paced = await buildLayer([{ path: 'paced', content: randomBytes(12 * PIECE_SIZE) }]);
  const src = await withRegistry();
  try {
    source = src.registry.host;
    const image = buildIndexImage('p2p/big', 'v1', { amd64: [layer, layer2, onePiece, small] });
    const pacedImage = buildIndexImage('p2p/paced', 'v1', { amd64: [paced] });
    await pushImage(source, image);
    await pushImage(source, pacedImage);
    const bundle = await bundleSpec(work.dir, { images: [imageRef(source, image), imageRef(source, pacedImage)] }, join(work.dir, 'b.tar.zst'));
    await importBundle(bundle, join(work.dir, 'store'));
  } finally {
    await src.cleanup();
  }
  reg = await startRegistry({ storeRoot: join(work.dir, 'store'), listen: '127.0.0.1:0' });
}, 120_000);

afterAll(async () => {
  for (const r of running) {
    for (const s of r.servers) s.close();
    await r.agent.stop();
  }
  if (!registryClosed) await reg?.close();
  await work?.cleanup();
});

async function startAgent(name: string, o: { registry?: string; stallMs?: number } = {}): Promise<{ agent: PeerAgent; url: string; logs: string[] }> {
  const port = await freePort();
  const logs: string[] = [];
  const agent = await PeerAgent.start({ registry: o.registry ?? reg.url, dir: join(work.dir, name), maxBytes: 2 ** 30, peerAddr: `127.0.0.1:${port}`, log: (l) => logs.push(l), stallMs: o.stallMs });
  const peers = peerServer(agent);
  await new Promise<void>((resolve) => peers.listen(port, '127.0.0.1', resolve));
  const local = localServer(agent);
  await new Promise<void>((resolve) => local.listen(0, '127.0.0.1', resolve));
  running.push({ agent, servers: [peers, local] });
  return { agent, url: `http://127.0.0.1:${(local.address() as { port: number }).port}`, logs };
}

/** A pull of a layer through an agent, as containerd asks in mirror mode. */
async function pull(url: string, l = layer, repo = 'p2p/big'): Promise<Buffer> {
  const r = await fetch(`${url}/v2/${repo}/blobs/${l.descriptor.digest}?ns=${source}`);
  expect(r.status).toBe(200);
  expect(r.headers.get('docker-content-digest')).toBe(l.descriptor.digest);
  return Buffer.from(await r.arrayBuffer());
}

describe('peer agents', () => {
  it('serve a blob piece by piece: the first from the registry, the others mostly from peers', async () => {
    const a = await startAgent('a');
    expect(sha256(await pull(a.url))).toBe(layer.descriptor.digest);
    expect(a.agent.stats.fromSeed).toBe(layer.data.length);

    const [b, c] = [await startAgent('b'), await startAgent('c')];
    const [got1, got2] = await Promise.all([pull(b.url), pull(c.url)]);
    expect(sha256(got1)).toBe(layer.descriptor.digest);
    expect(sha256(got2)).toBe(layer.descriptor.digest);
    const fromSeed = b.agent.stats.fromSeed + c.agent.stats.fromSeed;
    const fromPeers = b.agent.stats.fromPeers + c.agent.stats.fromPeers;
    expect(fromSeed + fromPeers).toBe(2 * layer.data.length);
    // The registry sends each byte about once: two more nodes took less than one more copy from it.
    expect(fromSeed).toBeLessThan(layer.data.length);
    expect(a.agent.stats.served).toBeGreaterThan(0);
    // The counters on /metrics, on the peer face too (where a scraper reaches the node).
    const metrics = await (await fetch(`http://${b.agent.o.peerAddr}/metrics`)).text();
    expect(metrics).toContain(`acpack_agent_fetched_bytes_total{from="registry"} ${b.agent.stats.fromSeed}\n`);
    expect(metrics).toContain(`acpack_agent_fetched_bytes_total{from="peers"} ${b.agent.stats.fromPeers}\n`);
    expect(metrics).toContain(`acpack_agent_served_bytes_total ${b.agent.stats.served}\n`);
    // A pull of what the node holds now costs nobody anything.
    const before = { ...b.agent.stats };
    expect(sha256(await pull(b.url))).toBe(layer.descriptor.digest);
    expect(b.agent.stats).toEqual(before);
  }, 120_000);

  it('fetch a blob of one piece from peers too: the registry sends it once', async () => {
    const [x, y] = [await startAgent('one-x'), await startAgent('one-y')];
    expect(sha256(await pull(x.url, onePiece))).toBe(onePiece.descriptor.digest);
    expect(x.agent.stats.fromSeed).toBe(onePiece.data.length);
    for (let i = 0; i < 50 && (await x.agent.store.whole(onePiece.descriptor.digest)) === undefined; i++) await new Promise((r) => setTimeout(r, 100));
    expect(sha256(await pull(y.url, onePiece))).toBe(onePiece.descriptor.digest);
    expect(y.agent.stats).toMatchObject({ fromSeed: 0, fromPeers: onePiece.data.length });
  }, 60_000);

  it('ask the tracker for the next seed piece as soon as one arrives, not an interval later', async () => {
    // Each agent reaches the registry through a proxy of its own, which logs when each request came.
    const proxies = [await startFaultProxy(new URL(reg.url).host), await startFaultProxy(new URL(reg.url).host)];
    try {
      const agents = [await startAgent('pace-a', { registry: `http://${proxies[0].host}` }), await startAgent('pace-b', { registry: `http://${proxies[1].host}` })];
      const got = await Promise.all(agents.map((a) => pull(a.url, paced, 'p2p/paced')));
      for (const g of got) expect(sha256(g)).toBe(paced.descriptor.digest);
      // Super-seeding: the master sent each piece about once, a few to each node.
      const fromSeed = agents.map((a) => a.agent.stats.fromSeed);
      expect(fromSeed[0] + fromSeed[1]).toBeLessThanOrEqual(paced.data.length + 2 * PIECE_SIZE);
      // The tracker hands a node one seed piece per announce. Had the agent waited for its next
      // announce (a stalled blob brings it within 500 ms at the tracker's 2 s), each gap between a
      // node's seed pieces would be that long; announcing when a piece arrives makes it a round trip.
      const gaps: number[] = [];
      for (const p of proxies) {
        const seeds = p.log.filter((l) => l.method === 'GET' && l.range && l.url.includes(paced.descriptor.digest)).map((l) => l.at);
        expect(seeds.length).toBeGreaterThanOrEqual(2);
        for (let i = 1; i < seeds.length; i++) gaps.push(seeds[i] - seeds[i - 1]);
      }
      gaps.sort((a, b) => a - b);
      expect(gaps[Math.floor(gaps.length / 2)]).toBeLessThan(250);
    } finally {
      for (const p of proxies) await p.close();
    }
  }, 60_000);

  it('hand a peer with no agent yet a whole blob they verified, and nothing they do not hold whole', async () => {
    const w = await startAgent('whole');
    const url = (l: Layer) => `http://${w.agent.o.peerAddr}/p2p/v1/blobs/${l.descriptor.digest}`;
    expect((await fetch(url(layer2))).status).toBe(404);
    await pull(w.url, layer2);
    // containerd's stream ends with the last piece; the whole check and the move in place follow.
    for (let i = 0; i < 50 && (await w.agent.store.whole(layer2.descriptor.digest)) === undefined; i++) await new Promise((r) => setTimeout(r, 100));
    const served = w.agent.stats.served;
    const r = await fetch(url(layer2));
    expect(r.status).toBe(200);
    expect(Number(r.headers.get('content-length'))).toBe(layer2.data.length);
    expect(sha256(Buffer.from(await r.arrayBuffer()))).toBe(layer2.descriptor.digest);
    expect(w.agent.stats.served - served).toBe(layer2.data.length);
    // Another blob of the same image, never asked for here.
    expect((await fetch(url(layer))).status).toBe(404);
  }, 120_000);

  it('pass manifests through from the registry, untouched', async () => {
    const a = running[0];
    const url = `http://127.0.0.1:${(a.servers[1].address() as { port: number }).port}`;
    const r = await fetch(`${url}/v2/p2p/big/manifests/v1?ns=${source}`, { headers: { accept: 'application/vnd.oci.image.index.v1+json' } });
    expect(r.status).toBe(200);
    const direct = await fetch(`${reg.url}/v2/p2p/big/manifests/v1?ns=${source}`, { headers: { accept: 'application/vnd.oci.image.index.v1+json' } });
    expect(Buffer.from(await r.arrayBuffer()).equals(Buffer.from(await direct.arrayBuffer()))).toBe(true);
    expect((await fetch(`${url}/v2/p2p/big/manifests/nope?ns=${source}`)).status).toBe(404);
  });


  it('preheat an image list: every layer over PASS_THROUGH_BYTES whole before containerd asks, what fails named, the rest still fetched', async () => {
    const p = await startAgent('preheat');
    const preheat = (body: unknown) => fetch(`${p.url}/p2p/v1/preheat`, { method: 'POST', body: JSON.stringify(body) });
    const r = await preheat({ images: [`${source}/p2p/big:v1`, `${source}/p2p/missing:v1`], platform: 'linux/amd64' });
    expect(r.status).toBe(200);
    const result = await r.json();
    expect(result).toMatchObject({ images: 2, blobs: 3, bytes: layer.data.length + layer2.data.length + onePiece.data.length, skipped: 0 });
    expect(result.failed).toHaveLength(1);
    expect(result.failed[0].image).toBe(`${source}/p2p/missing:v1`);
    expect(result.failed[0].error).toContain('404');
    for (const l of [layer, layer2, onePiece]) expect(await p.agent.store.whole(l.descriptor.digest)).toBe(l.data.length);
    // A layer of PASS_THROUGH_BYTES or less is left to containerd's own request, passed through.
    expect(await p.agent.store.whole(small.descriptor.digest)).toBeUndefined();
    expect(p.agent.stats.fromSeed + p.agent.stats.fromPeers).toBe(layer.data.length + layer2.data.length + onePiece.data.length);
    // containerd's pulls then cost nobody anything.
    const before = { ...p.agent.stats };
    expect(sha256(await pull(p.url, layer2))).toBe(layer2.descriptor.digest);
    expect(p.agent.stats).toEqual(before);

    const arm = await (await preheat({ images: [`${source}/p2p/big:v1`], platform: 'linux/arm64' })).json();
    expect(arm.failed[0].error).toContain('no manifest for linux/arm64');
    expect(arm.blobs).toBe(0);
    expect((await preheat({ images: 'p2p/big' })).status).toBe(400);
    expect((await preheat({ images: [], platform: 'linux/amd64/v8/x' })).status).toBe(400);
  }, 120_000);
  it('catch a peer that serves bad bytes by the piece hash, shun it, and still finish', async () => {
    // A liar: it tells the tracker it holds the whole blob and answers every piece with flipped bytes.
    const port = await freePort();
    const liar = createServer((_req, res) => {
      const bytes = randomBytes(PIECE_SIZE);
      res.writeHead(200, { 'content-length': bytes.length });
      res.end(bytes);
    });
    await new Promise<void>((resolve) => liar.listen(port, '127.0.0.1', resolve));
    try {
      // Every honest agent leaves, so the liar is the one peer listed.
      for (const r of running.splice(0)) {
        for (const s of r.servers) s.close();
        await r.agent.stop();
      }
      const said = await fetch(`${reg.url}/p2p/v1/announce`, {
        method: 'POST',
        body: JSON.stringify({ node: `liar_${port}`, addr: `127.0.0.1:${port}`, blobs: [], done: [{ digest: layer.descriptor.digest, size: layer.data.length }], left: 0 }),
      });
      expect(said.status).toBe(200);
      const d = await startAgent('d');
      expect(sha256(await pull(d.url))).toBe(layer.descriptor.digest);
      expect(d.agent.stats.badPieces).toBeGreaterThan(0);
      expect(d.logs.join('\n')).toContain(`peer liar_${port} served piece`);
      expect(d.logs.join('\n')).toContain('shunned for this run');
    } finally {
      liar.close();
    }
  }, 120_000);

  it('give a fetch up when no piece comes for the stall limit, keeping the pieces verified so far', async () => {
    // The registry as a master that dies mid-blob: after two pieces of layer2, its connections are cut.
    let served = 0;
    const proxy = createServer((req, res) => {
      if (req.url?.includes(layer2.descriptor.digest) && req.headers.range && ++served > 2) return void req.socket.destroy();
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        fetch(`${reg.url}${req.url}`, { method: req.method, headers: req.headers as Record<string, string>, body: req.method === 'POST' ? Buffer.concat(chunks) : undefined })
          .then(async (r) => {
            res.writeHead(r.status, Object.fromEntries([...r.headers].filter(([k]) => k !== 'content-encoding' && k !== 'transfer-encoding')));
            res.end(Buffer.from(await r.arrayBuffer()));
          })
          .catch(() => res.destroy());
      });
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    try {
      const g = await startAgent('g', { registry: `http://127.0.0.1:${(proxy.address() as { port: number }).port}`, stallMs: 4000 });
      const started = Date.now();
      // containerd's request is cut (before or after the headers, as the pieces came): it never ends whole.
      const outcome = await fetch(`${g.url}/v2/p2p/big/blobs/${layer2.descriptor.digest}?ns=${source}`)
        .then((r) => r.arrayBuffer())
        .then(() => 'whole', () => 'cut');
      expect(outcome).toBe('cut');
      expect(Date.now() - started).toBeLessThan(15_000);
      expect(g.logs.join('\n')).toMatch(/no piece arrived for \d+ s; no peer this node reaches has the rest and the registry does not answer: given up/);
      expect(g.agent.stats.fromSeed).toBeGreaterThan(0);
      expect(g.agent.stats.fromSeed).toBeLessThan(layer2.data.length);
      // Asked once a second, not in a loop: a handful of cut requests in 4 s.
      expect(served).toBeLessThan(12);
      expect(existsSync(join(work.dir, 'g', 'partial', layer2.descriptor.digest.slice(7)))).toBe(true);
    } finally {
      proxy.close();
    }
  }, 60_000);

  it('finish from peers with the registry gone: a blob not begun comes from a peer that has it; one nobody has is a 404 at once', async () => {
    const [e, f] = [await startAgent('e'), await startAgent('f')];
    expect(sha256(await pull(e.url))).toBe(layer.descriptor.digest);
    expect(sha256(await pull(e.url, layer2))).toBe(layer2.descriptor.digest);
    expect(sha256(await pull(e.url, small))).toBe(small.descriptor.digest);
    // The small one was passed through (one request to the registry), not fetched piece by piece.
    expect(e.agent.stats.fromSeed + e.agent.stats.fromPeers).toBe(layer.data.length + layer2.data.length);
    // f takes the first layer, and learns e as a peer from the tracker.
    expect(sha256(await pull(f.url))).toBe(layer.descriptor.digest);
    await reg.close();
    registryClosed = true;
    const before = f.agent.stats.fromPeers;
    expect(sha256(await pull(f.url, layer2))).toBe(layer2.descriptor.digest);
    expect(f.agent.stats.fromPeers - before).toBe(layer2.data.length);
    expect(f.logs.join('\n')).toContain(`${layer2.descriptor.digest}: the registry does not answer`);
    // The small blob e passed through, e kept: f takes it from e.
    expect(sha256(await pull(f.url, small))).toBe(small.descriptor.digest);
    expect(f.agent.stats.fromPeers - before).toBe(layer2.data.length + small.data.length);
    const started = Date.now();
    const none = await fetch(`${f.url}/v2/p2p/big/blobs/sha256:${'0'.repeat(64)}?ns=${source}`);
    // 404: containerd goes on to the registry itself only after one (and fails the pull on a 502).
    expect(none.status).toBe(404);
    expect(Date.now() - started).toBeLessThan(5_000);
  }, 120_000);
});
