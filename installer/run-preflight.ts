import { mkdir } from 'node:fs/promises';
import pLimit from 'p-limit';
import { AcpackError } from '../oci/errors.js';
import type { ClusterSpec, HostSpec } from './cluster-spec.js';
import { KnownHosts, SshHost } from './ssh.js';
import { evaluate, gatherFacts, type BundleArches, type Facts, type Failure } from './preflight.js';

export interface PreflightOptions extends BundleArches {
  spec: ClusterSpec;
  stateDir: string;
  /** Host keys: opened from stateDir when not given (a caller going on to install passes its own). */
  known?: KnownHosts;
  ignore: string[];
  /** The site registry already runs on the first master (acinstall from): its port is ours. */
  registryRunning?: boolean;
}

/**
 * Connects to every node in parallel (bounded), gathers facts and checks them. Nodes that cannot be
 * reached or logged in to are failures in the same table as everything else.
 */
export async function runPreflight(opts: PreflightOptions): Promise<{ facts: Map<HostSpec, Facts>; failures: Failure[] }> {
  await mkdir(opts.stateDir, { recursive: true });
  const known = opts.known ?? (await KnownHosts.inStore(opts.stateDir));
  const limit = pLimit(16);
  const facts = new Map<HostSpec, Facts>();
  const failures: Failure[] = [];
  await Promise.all(
    opts.spec.hosts.map((h) =>
      limit(async () => {
        let host: SshHost | undefined;
        try {
          host = await SshHost.connect(h, known);
          facts.set(h, await gatherFacts(host));
        } catch (err) {
          if (!(err instanceof AcpackError)) throw err;
          failures.push({ node: h.ip, check: 'ssh', found: err.message, need: 'a working login' });
        } finally {
          host?.close();
        }
      }),
    ),
  );
  await known.save();
  failures.push(...evaluate(opts.spec, facts, { arches: opts.arches, runtime: opts.runtime, now: Math.floor(Date.now() / 1000), registryPort: opts.registryRunning ? undefined : opts.spec.registry.port, ignore: opts.ignore }));
  const order = new Map(opts.spec.hosts.map((h, i) => [h.ip, i]));
  failures.sort((a, b) => order.get(a.node)! - order.get(b.node)! || a.check.localeCompare(b.check));
  return { facts, failures };
}

