import cluster from 'node:cluster';
import { randomUUID } from 'node:crypto';
import client from 'prom-client';
import type { NextFunction, Request, Response } from 'express';

/**
 * Prometheus metrics: requests, bytes and latency by route (a handful of values, never raw paths).
 * With several worker processes, /metrics on any of them answers for all: the worker asks the
 * primary, which gathers every worker's numbers (prom-client's AggregatorRegistry).
 */
const requests = new client.Counter({ name: 'acpack_registry_requests_total', help: 'HTTP requests by route, method and status', labelNames: ['route', 'method', 'status'] });
const bytes = new client.Counter({ name: 'acpack_registry_response_bytes_total', help: 'Response body bytes by route', labelNames: ['route'] });
const errors = new client.Counter({ name: 'acpack_registry_errors_total', help: 'Responses with status 400 or more, by route', labelNames: ['route', 'status'] });
const latency = new client.Histogram({
  name: 'acpack_registry_request_seconds',
  help: 'Time to the last response byte, by route',
  labelNames: ['route'],
  buckets: [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30],
});

// prom-client installs a worker's answer to the primary's gathering only when an AggregatorRegistry
// is made in that worker.
if (cluster.isWorker) new client.AggregatorRegistry();

export function routeOf(path: string): string {
  if (path === '/v2/' || path === '/v2') return 'ping';
  if (path === '/v2/_catalog') return 'catalog';
  if (path === '/metrics') return 'metrics';
  const m = /\/(manifests|blobs\/uploads|blobs|tags|referrers)\//.exec(path);
  return m ? m[1].replace('blobs/uploads', 'uploads') : 'other';
}

/** Body bytes a finished response sent: a HEAD, a 204 or a 304 carries a Content-Length but no body. */
export function bodyBytes(req: Request, res: Response): number {
  if (req.method === 'HEAD' || res.statusCode === 204 || res.statusCode === 304) return 0;
  return Number(res.getHeader('content-length') ?? 0);
}

/**
 * One hook per request at its end: Prometheus counters, and the access log line when `log` is given.
 */
export function observeRequests(log?: (line: Record<string, unknown>) => void) {
  return (req: Request, res: Response, next: NextFunction): void => {
    const t0 = process.hrtime.bigint();
    res.on('finish', () => {
      const route = routeOf(req.path);
      const status = String(res.statusCode);
      const sent = bodyBytes(req, res);
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      requests.inc({ route, method: req.method, status });
      bytes.inc({ route }, sent);
      if (res.statusCode >= 400) errors.inc({ route, status });
      latency.observe({ route }, seconds);
      log?.({ time: new Date().toISOString(), method: req.method, path: req.originalUrl, status: res.statusCode, bytes: sent, ms: seconds * 1000 });
    });
    next();
  };
}

export async function metricsHandler(_req: Request, res: Response): Promise<void> {
  res.type(client.register.contentType);
  res.send(cluster.isWorker ? await askPrimary() : await client.register.metrics());
}

function askPrimary(): Promise<string> {
  return new Promise((resolve, reject) => {
    const id = randomUUID();
    const timer = setTimeout(() => {
      process.off('message', onMessage);
      reject(new Error('the primary did not answer for metrics'));
    }, 3000);
    const onMessage = (m: { type?: string; id?: string; text?: string; error?: string }) => {
      if (m?.type !== 'acpack:metrics-reply' || m.id !== id) return;
      clearTimeout(timer);
      process.off('message', onMessage);
      if (m.error) reject(new Error(m.error));
      else resolve(m.text ?? '');
    };
    process.on('message', onMessage);
    process.send!({ type: 'acpack:metrics', id });
  });
}

/** In the primary: answers workers' metrics requests with every worker's numbers. */
export function serveClusterMetrics(): void {
  const aggregator = new client.AggregatorRegistry();
  cluster.on('message', (worker, m: { type?: string; id?: string }) => {
    if (m?.type !== 'acpack:metrics') return;
    aggregator.clusterMetrics().then(
      (text) => worker.send({ type: 'acpack:metrics-reply', id: m.id, text }),
      (err: Error) => worker.send({ type: 'acpack:metrics-reply', id: m.id, error: err.message }),
    );
  });
}
