import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import bcrypt from 'bcryptjs';
import { buildIndexImage, buildLayer, pushImage, type Layer } from '../../demo/samples.js';
import { freePort } from '../../demo/source-registry.js';
import { stopChild } from '../../demo/processes.js';
import { sha256 } from '../../oci/digest.js';
import { Database } from '../../oci/sqlite.js';
import { importBundle, IndexDb, startRegistry, type RunningRegistry } from '../../registry/index.js';
import { pieceHashes, PIECE_SIZE } from '../../p2p/pieces.js';
import { Bitfield } from '../../p2p/bitfield.js';
import { parseAnnounceResponse } from '../../p2p/protocol.js';
import { ACINSTALL, tempDir, withRegistry } from '../helpers/env.js';
import { bundleSpec, imageRef } from '../helpers/fixtures.js';

/**
 * The site registry's side of the peer cache: piece hashes recorded as import and push commit a
 * blob (and computed for a blob from before), and one tracker for every worker of a `serve`.
 */
let work: Awaited<ReturnType<typeof tempDir>>;
let layer: Layer;
let bundle: string;
/** The source registry the image came from: containerd names it in `ns` when it asks the site registry. */
let sourceHost: string;

beforeAll(async () => {
  work = await tempDir();
  // Random bytes do not compress: a layer of three pieces, the last one short.
  layer = await buildLayer([{ path: 'big', content: randomBytes(2 * PIECE_SIZE + 12345) }]);
  const source = await withRegistry();
  try {
    const image = buildIndexImage('p2p/big', 'v1', { amd64: [layer] });
    sourceHost = source.registry.host;
    await pushImage(source.registry.host, image);
    bundle = await bundleSpec(work.dir, { images: [imageRef(source.registry.host, image)] }, join(work.dir, 'b.tar.zst'));
  } finally {
    await source.cleanup();
  }
}, 120_000);

afterAll(() => work?.cleanup());

const piecesOf = async (base: string, digest: string, headers: Record<string, string> = {}) => {
  const r = await fetch(`${base}/p2p/v1/pieces/${digest}`, { headers });
  return { status: r.status, body: (await r.json()) as { size: number; pieceSize: number; hashes: string } };
};

describe('piece hashes', () => {
  let reg: RunningRegistry;
  const store = () => join(work.dir, 'store');

  beforeAll(async () => {
    await importBundle(bundle, store());
    const htpasswd = join(work.dir, 'htpasswd');
    await writeFile(htpasswd, `bob:${bcrypt.hashSync('hunter2', 4)}\n`);
    reg = await startRegistry({ storeRoot: store(), listen: '127.0.0.1:0', htpasswd });
  });
  afterAll(() => reg?.close());

  it('are recorded by import, in the pass that stores the blob, and served as recorded', async () => {
    const db = new IndexDb(store());
    try {
      const recorded = db.pieces(layer.descriptor.digest);
      expect(recorded?.pieceSize).toBe(PIECE_SIZE);
      expect(recorded?.hashes.equals(pieceHashes(layer.data))).toBe(true);
    } finally {
      db.close();
    }
    const r = await piecesOf(reg.url, layer.descriptor.digest);
    expect(r.status).toBe(200);
    expect(r.body.size).toBe(layer.data.length);
    expect(Buffer.from(r.body.hashes, 'base64').length).toBe(3 * 32);
    expect(Buffer.from(r.body.hashes, 'base64').equals(pieceHashes(layer.data))).toBe(true);
  });

  it('are recorded by a push', async () => {
    const data = randomBytes(PIECE_SIZE + 1);
    const digest = sha256(data);
    const auth = { authorization: `Basic ${Buffer.from('bob:hunter2').toString('base64')}` };
    const put = await fetch(`${reg.url}/v2/pushed/blobs/uploads/?digest=${digest}`, { method: 'POST', headers: { ...auth, 'content-type': 'application/octet-stream' }, body: data });
    expect(put.status).toBe(201);
    const db = new IndexDb(store());
    try {
      expect(db.pieces(digest)?.hashes.equals(pieceHashes(data))).toBe(true);
    } finally {
      db.close();
    }
  });

  it('are computed for a blob stored before pieces existed, then kept', async () => {
    const raw = Database.open(join(store(), 'index.db'), { busyTimeoutMs: 5000 });
    raw.prepare('DELETE FROM pieces WHERE digest = ?').run(layer.descriptor.digest);
    raw.close();
    const r = await piecesOf(reg.url, layer.descriptor.digest);
    expect(Buffer.from(r.body.hashes, 'base64').equals(pieceHashes(layer.data))).toBe(true);
    const db = new IndexDb(store());
    try {
      expect(db.pieces(layer.descriptor.digest)?.hashes.equals(pieceHashes(layer.data))).toBe(true);
    } finally {
      db.close();
    }
  });

  it('recorded at another piece size (an older release) are computed again at this one', async () => {
    const old = 4 * PIECE_SIZE;
    const db = new IndexDb(store());
    try {
      db.recordPieces(layer.descriptor.digest, old, pieceHashes(layer.data, old));
    } finally {
      db.close();
    }
    const r = await piecesOf(reg.url, layer.descriptor.digest);
    expect(r.body.pieceSize).toBe(PIECE_SIZE);
    expect(Buffer.from(r.body.hashes, 'base64').equals(pieceHashes(layer.data))).toBe(true);
    const after = new IndexDb(store());
    try {
      expect(after.pieces(layer.descriptor.digest)?.pieceSize).toBe(PIECE_SIZE);
    } finally {
      after.close();
    }
  });

  it('of a blob the store lacks are a 404, and a bad digest a 400', async () => {
    expect((await piecesOf(reg.url, sha256('nothing'))).status).toBe(404);
    expect((await fetch(`${reg.url}/p2p/v1/pieces/sha256:nope`)).status).toBe(400);
  });
});

describe("the seed's pieces", () => {
  it('wait their turn for a slot and each arrives whole; plain blob GETs do not wait', async () => {
    const store = join(work.dir, 'seed-store');
    await importBundle(bundle, store);
    const reg = await startRegistry({ storeRoot: store, listen: '127.0.0.1:0', seedSlots: 1, seedWaitMs: 10_000 });
    try {
      const url = `${reg.url}/v2/p2p/big/blobs/${layer.descriptor.digest}?ns=${sourceHost}`;
      const piece = async (i: number) => {
        const start = i * PIECE_SIZE;
        const end = Math.min(layer.data.length, start + PIECE_SIZE) - 1;
        const r = await fetch(url, { headers: { range: `bytes=${start}-${end}`, 'x-acpack-piece': String(i) } });
        return { status: r.status, ok: Buffer.from(await r.arrayBuffer()).equals(layer.data.subarray(start, end + 1)) };
      };
      // Nine at once through one slot: a slot that is not freed after a piece leaves the rest to a 503.
      const answers = await Promise.all([0, 1, 2, 0, 1, 2, 0, 1, 2].map(piece));
      expect(answers).toEqual(answers.map(() => ({ status: 206, ok: true })));
      const whole = await fetch(url);
      expect(whole.status).toBe(200);
      expect(sha256(Buffer.from(await whole.arrayBuffer()))).toBe(layer.descriptor.digest);
    } finally {
      await reg.close();
    }
  }, 60_000);
});

describe('the tracker of `acinstall serve --workers 2`', () => {
  let child: ChildProcess;
  let base: string;

  beforeAll(async () => {
    const port = await freePort();
    base = `http://127.0.0.1:${port}`;
    await mkdir(join(work.dir, 'served'));
    child = spawn(ACINSTALL, ['serve', '--store', join(work.dir, 'served'), '--listen', `127.0.0.1:${port}`, '--workers', '2', '--quiet'], { stdio: 'ignore' });
    for (let i = 0; i < 150; i++) {
      if ((await fetch(`${base}/v2/`).then((r) => r.status, () => 0)) === 200) return;
      await sleep(100);
    }
    throw new Error('acinstall serve did not start');
  }, 30_000);
  afterAll(async () => {
    if (child) await stopChild(child, 5000);
  });

  const digest = sha256('a blob of three pieces');
  const size = 3 * PIECE_SIZE;
  const announce = (node: string, addr: string, have: number[]) => {
    const bits = new Bitfield(3);
    for (const p of have) bits.set(p);
    const body = { node, addr, blobs: [{ digest, size, have: bits.toBase64(), downloading: new Bitfield(3).toBase64() }], done: [], left: (3 - have.length) * PIECE_SIZE };
    // A new connection each time: the two workers take turns, and both must see one tracker.
    return fetch(`${base}/p2p/v1/announce`, { method: 'POST', headers: { connection: 'close', 'content-type': 'application/json' }, body: JSON.stringify(body) });
  };

  it('is one for all workers: every node hears of the others, whichever worker took its announce', async () => {
    for (let i = 0; i < 6; i++) expect((await announce(`node-${i}`, `127.0.0.1:${7000 + i}`, [i % 3])).status).toBe(200);
    const r = await announce('node-last', '127.0.0.1:7100', []);
    const answer = parseAnnounceResponse(await r.json(), [{ digest, pieces: 3 }]);
    expect(answer.blobs[0].digest).toBe(digest);
    expect(answer.blobs[0].peers.map((p) => p.id).sort()).toEqual(['node-0', 'node-1', 'node-2', 'node-3', 'node-4', 'node-5']);
  });

  it("refuses an announce naming an address that is not its sender's", async () => {
    const r = await announce('liar', '10.9.9.9:5001', []);
    expect(r.status).toBe(400);
    expect(await r.text()).toContain('its sender\'s own address (127.0.0.1:PORT)');
  });

  it('refuses a malformed announce with a clear error', async () => {
    const r = await fetch(`${base}/p2p/v1/announce`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ node: 'x', addr: '127.0.0.1:1', blobs: [{ digest, size, have: 'AAAA', downloading: '' }], done: [], left: 0 }) });
    expect(r.status).toBe(400);
    expect(((await r.json()) as { errors: { code: string }[] }).errors[0].code).toBe('BAD_ANNOUNCE');
  });
});
