import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';

/**
 * An HTTP proxy in front of a real docker-registry that can misbehave the ways real registries and
 * CDNs do: rate-limit (429 + Retry-After), fail (503), redirect blobs elsewhere (307), demand a
 * bearer token. Everything not intercepted is passed through untouched.
 */
export type Intercept = (req: IncomingMessage, res: ServerResponse) => boolean | Promise<boolean>;

export interface FaultProxy {
  host: string;
  /** Every request as it arrived (`at`: Date.now() then). */
  log: { method: string; url: string; authorization?: string; range?: string; at: number }[];
  intercept: Intercept[];
  close(): Promise<void>;
}

export async function startFaultProxy(upstream: string): Promise<FaultProxy> {
  const proxy: FaultProxy = { host: '', log: [], intercept: [], close: async () => {} };
  const server: Server = createServer(async (req, res) => {
    proxy.log.push({ method: req.method!, url: req.url!, authorization: req.headers.authorization, range: req.headers.range, at: Date.now() });
    for (const i of proxy.intercept) if (await i(req, res)) return;
    const headers: Record<string, string> = {};
    for (const k of ['accept', 'range', 'content-type']) if (req.headers[k]) headers[k] = String(req.headers[k]);
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = chunks.length > 0 ? Buffer.concat(chunks) : undefined;
    const up = await fetch(`http://${upstream}${req.url}`, { method: req.method, headers, body, redirect: 'manual' });
    const out: Record<string, string> = {};
    up.headers.forEach((v, k) => {
      if (k !== 'content-encoding' && k !== 'transfer-encoding') out[k] = v;
    });
    res.writeHead(up.status, out);
    res.end(Buffer.from(await up.arrayBuffer()));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  proxy.host = `127.0.0.1:${(server.address() as { port: number }).port}`;
  proxy.close = () =>
    new Promise((r) => {
      server.closeAllConnections();
      server.close(() => r());
    });
  return proxy;
}
