import { spawn } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import pLimit from 'p-limit';
import { archFromUname } from '../arch/platform.js';
import { AcpackError } from '../oci/errors.js';
import { readDescriptor } from '../oci/bundle-reader.js';
import { importBundle } from '../registry/index.js';
import { isMaster, type ClusterSpec } from './cluster-spec.js';
import { Journal } from './journal.js';
import { KnownHosts, SshHost } from './ssh.js';
import { preflightError } from './preflight.js';
import { runPreflight } from './run-preflight.js';
import { containerdFiles, installBinaries, writeFiles } from './node-setup.js';

export interface FromOptions {
  bundle: string;
  spec: ClusterSpec;
  store: string;
  ignore: string[];
  log: (line: string) => void;
}

export interface NodeOutcome {
  node: string;
  ok: boolean;
  detail: string;
}

/**
 * `acinstall from`, the steps built so far: import the bundle, start the site registry, preflight
 * every node, then on each node (in parallel) its arch's binaries from the registry, hash-checked,
 * and containerd's configuration pointing every upstream registry at the site. Recorded per node
 * in the journal; a re-run skips what is done. (kubeadm, charts and the post-check come next.)
 */
export async function installFrom(o: FromOptions): Promise<NodeOutcome[]> {
  await mkdir(o.store, { recursive: true });
  const journal = new Journal(o.store);
  try {
    const d = await readDescriptor(o.bundle);
    const master = o.spec.hosts.find(isMaster)!;
    o.log(`importing ${d.name} ${d.version}`);
    const imported = await importBundle(o.bundle, o.store);
    journal.record(master.ip, 'import', 'done', `${d.name} ${d.version}: ${imported.added} new blobs`);

    const registry = `http://${master.ip}:${o.spec.registry.port}`;
    await ensureRegistry(o.store, `0.0.0.0:${o.spec.registry.port}`, registry);
    journal.record(master.ip, 'registry', 'done', registry);
    o.log(`registry serving on ${registry}`);

    const arches = d.platforms.map((p) => p.split('/')[1]);
    const { facts, failures } = await runPreflight({ spec: o.spec, arches, stateDir: o.store, ignore: o.ignore, registryRunning: true });
    if (failures.length) throw preflightError(failures);
    o.log(`preflight passed on ${o.spec.hosts.length} nodes`);

    const known = await KnownHosts.open(join(o.store, 'known_hosts.json'));
    const limit = pLimit(16);
    const outcomes = await Promise.all(
      o.spec.hosts.map((h) =>
        limit(async (): Promise<NodeOutcome> => {
          let host: SshHost | undefined;
          try {
            host = await SshHost.connect(h, known);
            const arch = archFromUname(facts.get(h)!.arch);
            if (!journal.isDone(h.ip, 'binaries')) {
              const n = await installBinaries(host, d, arch, registry);
              journal.record(h.ip, 'binaries', 'done', `${n} binaries for ${arch}`);
            }
            if (!journal.isDone(h.ip, 'containerd-config')) {
              await writeFiles(host, containerdFiles(d, registry));
              journal.record(h.ip, 'containerd-config', 'done', 'config.toml and hosts.toml');
            }
            o.log(`${h.ip}: binaries and containerd configuration in place`);
            return { node: h.ip, ok: true, detail: 'binaries, containerd configuration' };
          } catch (err) {
            if (!(err instanceof AcpackError)) throw err;
            journal.record(h.ip, 'node', 'failed', err.message);
            o.log(`${h.ip}: ${err.message}`);
            return { node: h.ip, ok: false, detail: err.message };
          } finally {
            host?.close();
          }
        }),
      ),
    );
    await known.save();
    return outcomes;
  } finally {
    journal.close();
  }
}

/**
 * Starts `acinstall serve` in the background unless the registry already answers (a re-run).
 * Where systemd runs, a unit would own it; here it is a detached process whose PID is recorded.
 */
async function ensureRegistry(store: string, listen: string, url: string): Promise<void> {
  const answers = async () => (await fetch(`${url}/v2/`).then((r) => r.status, () => 0)) === 200;
  if (await answers()) return;
  const child = spawn(process.execPath, [...process.execArgv, process.argv[1], 'serve', '--store', store, '--listen', listen, '--quiet'], {
    detached: true,
    stdio: 'ignore',
  });
  child.unref();
  await writeFile(join(store, 'registry.pid'), `${child.pid}\n`);
  for (let i = 0; i < 100; i++) {
    if (await answers()) return;
    await sleep(100);
  }
  throw new AcpackError('REGISTRY', `the site registry did not start on ${url}`);
}
