// A peer that lies, for test/integration/p2p-lab.test.ts: an HTTP proxy in front of a real agent's
// peer port that flips one byte in the middle of every piece it passes on, and passes everything
// else (a blob's piece hashes, refusals) as it is. The test redirects the host's incoming port 5001
// here with iptables; the proxy reaches the agent from inside the host, which that rule leaves alone.
//   node flip-proxy.mjs LISTEN_PORT AGENT_HOST:AGENT_PORT
import { createServer, request } from 'node:http';

const [listenPort, target] = process.argv.slice(2);
const [host, port] = target.split(':');
const PIECE = /\/pieces\/\d+$/;

createServer((req, res) => {
  const up = request({ host, port: Number(port), path: req.url, method: req.method, headers: req.headers }, (r) => {
    const chunks = [];
    r.on('data', (c) => chunks.push(c));
    r.on('end', () => {
      const body = Buffer.concat(chunks);
      if (r.statusCode === 200 && PIECE.test(req.url ?? '') && body.length > 0) body[body.length >> 1] ^= 0xff;
      res.writeHead(r.statusCode ?? 502, r.headers);
      res.end(body);
    });
    r.on('error', () => res.destroy());
  });
  up.on('error', () => res.destroy());
  req.pipe(up);
}).listen(Number(listenPort), '0.0.0.0', () => process.stdout.write('listening\n'));
