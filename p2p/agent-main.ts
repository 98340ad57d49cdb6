import { readFile } from 'node:fs/promises';
import type { Server } from 'node:http';
import { AcpackError } from '../oci/errors.js';
import { PeerAgent } from './agent.js';
import { localServer, peerServer } from './agent-server.js';

export interface AgentCommand {
  registry: string;
  ca?: string;
  listen: string;
  peerListen: string;
  dir: string;
  maxCache: string;
}

/** `acinstall agent`: runs until SIGTERM or SIGINT, then tells the tracker it is leaving. */
export async function runAgent(c: AgentCommand): Promise<void> {
  const registry = new URL(c.registry);
  if (registry.protocol !== 'https:' && registry.protocol !== 'http:') throw new AcpackError('BAD_ARGUMENT', `--registry ${c.registry} is not an http(s) URL`);
  const local = hostPort(c.listen, '--listen');
  const peer = hostPort(c.peerListen, '--peer-listen');
  const ca = c.ca ? await readFile(c.ca, 'utf8').catch((err: NodeJS.ErrnoException) => {
    throw new AcpackError('BAD_ARGUMENT', `--ca ${c.ca}: ${err.code ?? err.message}`);
  }) : undefined;
  const log = (line: string) => process.stderr.write(`acinstall agent: ${line}\n`);
  const agent = await PeerAgent.start({ registry: registry.origin, ca, dir: c.dir, maxBytes: parseBytes(c.maxCache), peerAddr: c.peerListen, log });
  const servers = [await listen(localServer(agent), local, '--listen'), await listen(peerServer(agent), peer, '--peer-listen')];
  log(`serving containerd on ${c.listen} and peers on ${c.peerListen}, from ${registry.origin}`);
  const stop = () => {
    log(`stopping: ${agent.describe()}`);
    for (const s of servers) s.closeAllConnections();
    void agent.stop().finally(() => process.exit(0));
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

function hostPort(addr: string, flag: string): { host: string; port: number } {
  const i = addr.lastIndexOf(':');
  const port = Number(addr.slice(i + 1));
  if (i <= 0 || !/^\d+$/.test(addr.slice(i + 1)) || port > 65535) throw new AcpackError('BAD_ARGUMENT', `${flag} "${addr}" is not host:port (e.g. 10.0.0.2:5001)`);
  return { host: addr.slice(0, i).replace(/^\[|\]$/g, ''), port };
}

function listen(server: Server, at: { host: string; port: number }, flag: string): Promise<Server> {
  return new Promise((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => reject(new AcpackError('LISTEN', `${flag}: cannot listen on ${at.host}:${at.port}: ${err.code ?? err.message}`)));
    server.listen(at.port, at.host, () => resolve(server));
  });
}

/** `20G`, `512M`, `1048576`: powers of 1024. */
export function parseBytes(text: string): number {
  const m = /^(\d+(?:\.\d+)?)([KMGT]?)i?B?$/i.exec(text.trim());
  if (!m) throw new AcpackError('BAD_ARGUMENT', `--max-cache "${text}" is not a size (e.g. 20G, 512M)`);
  return Math.floor(Number(m[1]) * 1024 ** ' KMGT'.indexOf(m[2].toUpperCase() || ' '));
}
