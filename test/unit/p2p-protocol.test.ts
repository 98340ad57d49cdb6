import { describe, expect, it } from 'vitest';
import { sha256 } from '../../oci/digest.js';
import { Bitfield } from '../../p2p/bitfield.js';
import { PIECE_SIZE } from '../../p2p/pieces.js';
import { encodeAnnounce, encodeResponse, parseAnnounce, parseAnnounceResponse, type Announce } from '../../p2p/protocol.js';

const D = sha256('a layer');
const SIZE = 10 * PIECE_SIZE + 123; // 11 pieces, the last one short

function announce(): Announce {
  return {
    node: 'worker-1',
    addr: '10.0.0.7:5001',
    blobs: [{ digest: D, size: SIZE, pieceSize: PIECE_SIZE, have: new Bitfield(11).set(0).set(10), downloading: new Bitfield(11).set(3) }],
    done: [{ digest: sha256('held whole'), size: 42, pieceSize: PIECE_SIZE }],
    left: 9 * PIECE_SIZE, // 11 pieces less piece 0 and the short last one
    stopped: false,
  };
}

/** The announce as its JSON body, with one change. */
function body(change: (b: Record<string, any>) => void = () => {}): unknown {
  const b = JSON.parse(JSON.stringify(encodeAnnounce(announce())));
  change(b);
  return b;
}

describe('the announce', () => {
  it('round-trips through its JSON', () => {
    const back = parseAnnounce(body());
    expect(back.node).toBe('worker-1');
    expect(back.blobs[0].have.toArray()).toEqual([0, 10]);
    expect(back.blobs[0].downloading.toArray()).toEqual([3]);
    expect(back.done[0]).toEqual({ digest: sha256('held whole'), size: 42, pieceSize: PIECE_SIZE });
    expect(JSON.stringify(body())).not.toContain('pieceSize'); // the default is left out
  });

  it("carries the agent's traffic, for status", () => {
    const a = { ...announce(), bytes: { fromSeed: 5, fromPeers: 7, served: 9 } };
    expect(parseAnnounce(JSON.parse(JSON.stringify(encodeAnnounce(a)))).bytes).toEqual({ fromSeed: 5, fromPeers: 7, served: 9 });
    expect(parseAnnounce(body()).bytes).toBeUndefined();
  });

  it.each([
    ['a bad digest', (b: any) => (b.blobs[0].digest = 'sha256:XYZ'), /digest/],
    ['a bitfield for another piece count', (b: any) => (b.blobs[0].have = new Bitfield(40).toBase64()), /base64 characters/],
    ['a piece both had and fetched', (b: any) => (b.blobs[0].downloading = new Bitfield(11).set(0).toBase64()), /both had/],
    ['left that the bitfields do not give', (b: any) => (b.left += 1), /left is/],
    ['a blob listed twice', (b: any) => b.done.push({ digest: D, size: SIZE }), /listed twice/],
    ['an unknown field', (b: any) => (b.blobs[0].extra = 1), /unknown field "extra"/],
    ['an address without a port', (b: any) => (b.addr = '10.0.0.7'), /host:port/],
    ['a port out of range', (b: any) => (b.addr = '[fd00::7]:70000'), /host:port/],
    ['a node id with a slash', (b: any) => (b.node = '../etc'), /node id/],
    ['a zero-byte blob', (b: any) => (b.done[0].size = 0), /size/],
    ['a piece size below the minimum', (b: any) => (b.done[0].pieceSize = 1024), /pieceSize/],
    ['too many blobs', (b: any) => (b.done = Array.from({ length: 4097 }, (_, i) => ({ digest: sha256(`${i}`), size: 1 }))), /more than 4096/],
    ['traffic that is not a count of bytes', (b: any) => (b.bytes = { fromSeed: -1, fromPeers: 0, served: 0 }), /bytes.fromSeed/],
    ['traffic with a field missing', (b: any) => (b.bytes = { fromSeed: 1, served: 0 }), /lacks "fromPeers"/],
    ['not an object', (b: any) => (b.blobs = 'all of them'), /not an array/],
  ])('refuses %s', (_name, change, message) => {
    expect(() => parseAnnounce(body(change))).toThrow(message);
  });

  it('accepts IPv6 peers and host names', () => {
    expect(parseAnnounce(body((b) => (b.addr = '[fd00::7]:5001'))).addr).toBe('[fd00::7]:5001');
    expect(parseAnnounce(body((b) => (b.addr = 'worker-1.site:5001'))).addr).toBe('worker-1.site:5001');
  });
});

describe('the response', () => {
  it('names each peer once, a whole blob as "*", and a peer outside a blob as "-"', () => {
    const E = sha256('another');
    const wire = encodeResponse({
      interval: 2000,
      blobs: [
        { digest: D, peers: [{ id: 'a', addr: '10.0.0.1:5001', have: Bitfield.full(11) }, { id: 'b', addr: '10.0.0.2:5001', have: new Bitfield(11).set(4) }], seed: [7] },
        { digest: E, peers: [{ id: 'b', addr: '10.0.0.2:5001', have: Bitfield.full(1) }], seed: [] },
      ],
    });
    expect(wire.peers.map((p) => p.id)).toEqual(['a', 'b']);
    expect(wire.blobs[0].have[0]).toBe('*');
    expect(wire.blobs[1].have).toEqual(['-', '*']);
    const back = parseAnnounceResponse(JSON.parse(JSON.stringify(wire)), [
      { digest: D, pieces: 11 },
      { digest: E, pieces: 1 },
    ]);
    expect(back.blobs[0].peers.map((p) => [p.id, p.have.toArray()])).toEqual([
      ['a', [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]],
      ['b', [4]],
    ]);
    expect(back.blobs[0].seed).toEqual([7]);
    expect(back.blobs[1].peers.map((p) => p.id)).toEqual(['b']);
  });

  it('refuses a hint outside the blob and an answer for fewer blobs than announced', () => {
    const wire = { interval: 2000, peers: [], blobs: [{ have: [], seed: [11] }] };
    expect(() => parseAnnounceResponse(wire, [{ digest: D, pieces: 11 }])).toThrow(/seed\[0\]/);
    expect(() => parseAnnounceResponse({ ...wire, blobs: [] }, [{ digest: D, pieces: 11 }])).toThrow(/answers 0 blobs/);
  });
});
