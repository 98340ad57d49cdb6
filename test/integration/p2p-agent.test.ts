import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, type Server } from 'node:http';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { buildIndexImage, buildLayer, pushImage, type Layer } from '../../demo/samples.js';
import { freePort } from '../../demo/source-registry.js';
import { sha256 } from '../../oci/digest.js';
import { importBundle, startRegistry, type RunningRegistry } from '../../registry/index.js';
import { PeerAgent } from '../../p2p/agent.js';
import { localServer, peerServer } from '../../p2p/agent-server.js';
import { PIECE_SIZE } from '../../p2p/pieces.js';
import { tempDir, withRegistry } from '../helpers/env.js';
import { bundleSpec, imageRef } from '../helpers/fixtures.js';

/**
 * Agents on this machine's loopback, a site registry with its tracker, and a blob of several
 * pieces: the first agent takes it from the registry, the next ones mostly from it and each other.
 * (The lab test runs them on test hosts, behind containerd.)
 */
let work: Awaited<ReturnType<typeof tempDir>>;
let layer: Layer;
let source: string;
let reg: RunningRegistry;
const running: { agent: PeerAgent; servers: Server[] }[] = [];

beforeAll(async () => {
  work = await tempDir();
  layer = await buildLayer([{ path: 'big', content: randomBytes(5 * PIECE_SIZE + 777) }]);
  const src = await withRegistry();
  try {
    source = src.registry.host;
    const image = buildIndexImage('p2p/big', 'v1', { amd64: [layer] });
    await pushImage(source, image);
    const bundle = await bundleSpec(work.dir, { images: [imageRef(source, image)] }, join(work.dir, 'b.tar.zst'));
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
  await reg?.close();
  await work?.cleanup();
});

async function startAgent(name: string): Promise<{ agent: PeerAgent; url: string; logs: string[] }> {
  const port = await freePort();
  const logs: string[] = [];
  const agent = await PeerAgent.start({ registry: reg.url, dir: join(work.dir, name), maxBytes: 2 ** 30, peerAddr: `127.0.0.1:${port}`, log: (l) => logs.push(l) });
  const peers = peerServer(agent);
  await new Promise<void>((resolve) => peers.listen(port, '127.0.0.1', resolve));
  const local = localServer(agent);
  await new Promise<void>((resolve) => local.listen(0, '127.0.0.1', resolve));
  running.push({ agent, servers: [peers, local] });
  return { agent, url: `http://127.0.0.1:${(local.address() as { port: number }).port}`, logs };
}

/** A pull of the layer through an agent, as containerd asks in mirror mode. */
async function pull(url: string): Promise<Buffer> {
  const r = await fetch(`${url}/v2/p2p/big/blobs/${layer.descriptor.digest}?ns=${source}`);
  expect(r.status).toBe(200);
  expect(r.headers.get('docker-content-digest')).toBe(layer.descriptor.digest);
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
    // A pull of what the node holds now costs nobody anything.
    const before = { ...b.agent.stats };
    expect(sha256(await pull(b.url))).toBe(layer.descriptor.digest);
    expect(b.agent.stats).toEqual(before);
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
});
