import cluster from 'node:cluster';
import { availableParallelism } from 'node:os';
import { Command } from 'commander';
import { AcpackError, formatBytes } from '../oci/errors.js';
import { Htpasswd, importBundle, startRegistry } from '../registry/index.js';
import { createReporter, reporterMode, runProgram } from '../packer/index.js';

const DEFAULT_STORE = '/var/lib/acpack';

export function buildProgram(): Command {
  const program = new Command('acinstall')
    .description('Install an acpack bundle on an air-gapped site: import it, serve it as an OCI registry, lay the cluster down over SSH.')
    .option('--debug', 'print stack traces on errors')
    .showHelpAfterError();

  program
    .command('import')
    .description('Stream a bundle into the site content store (one pass, every blob hashed as it is written)')
    .argument('<bundle>', 'bundle.tar.zst, or - for standard input')
    .option('--store <dir>', 'the content store and its index', DEFAULT_STORE)
    .option('--json', 'print progress and the result as JSON lines')
    .addHelpText('after', '\nRe-importing is a no-op; a newer bundle adds only the blobs the store lacks. A corrupt, truncated or\nhostile bundle is refused and the store is left exactly as it was.')
    .action(async (file: string, o) => {
      const reporter = createReporter(reporterMode(!!o.json));
      reporter.phase('import', 0);
      const input = file === '-' ? process.stdin : file;
      const r = await importBundle(input, o.store, (n) => reporter.bytes(n), file === '-' ? 'standard input' : file);
      reporter.end();
      if (o.json) process.stdout.write(`${JSON.stringify({ event: 'imported', ...r })}\n`);
      else process.stdout.write(`imported ${r.name} ${r.version}: ${r.refs} references, ${r.blobs} blobs (${r.added} new, ${formatBytes(r.addedBytes)})\n`);
    });

  program
    .command('serve')
    .description('Serve the store as an OCI distribution registry, under the images\' original names')
    .option('--store <dir>', 'the content store and its index', DEFAULT_STORE)
    .option('--listen <addr>', 'host:port to listen on', '0.0.0.0:5000')
    .option('--htpasswd <file>', 'bcrypt htpasswd users who may push (without it the registry is read-only)')
    .option('--read-only', 'refuse pushes even with users')
    .option('--authenticated-pull', 'require a user for pulls too (default: anonymous pull)')
    .option('--quiet', 'no access log')
    .option('--workers <n>', 'processes serving the same port (default: one per core, at most 4)', String(Math.min(4, availableParallelism())))
    .addHelpText(
      'after',
      `
Names answered for an image bundled as registry.k8s.io/pause:3.5:
  /v2/pause/manifests/3.5?ns=registry.k8s.io   containerd mirror mode (hosts.toml)
  /v2/registry.k8s.io/pause/manifests/3.5      host-prefixed (a port is written host_5000)
  /v2/pause/manifests/3.5                      re-rooted, when only one upstream has that path`,
    )
    .action(async (o) => {
      const workers = Number(o.workers);
      if (!Number.isInteger(workers) || workers < 1) throw new AcpackError('BAD_ARGUMENT', `--workers must be a positive number, not "${o.workers}"`);
      if (o.authenticatedPull && !o.htpasswd) throw new AcpackError('BAD_ARGUMENT', '--authenticated-pull needs --htpasswd');
      if (o.htpasswd && cluster.isPrimary) new Htpasswd(o.htpasswd); // a bad file fails here, not in a worker loop
      if (workers > 1 && cluster.isPrimary) return superviseWorkers(workers, o.store, o.listen);
      const reg = await startRegistry({
        storeRoot: o.store,
        listen: o.listen,
        htpasswd: o.htpasswd,
        readOnly: !!o.readOnly,
        authenticatedPull: !!o.authenticatedPull,
        log: o.quiet ? undefined : (l) => process.stdout.write(`${JSON.stringify(l)}\n`),
      });
      if (cluster.isPrimary) process.stderr.write(`acinstall: serving ${o.store} on ${reg.url}\n`);
      const stop = () => void reg.close().then(() => process.exit(0));
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
    });

  program
    .command('from')
    .description('Import a bundle, serve it, and lay the cluster down over SSH (not built yet)')
    .argument('<bundle>')
    .allowUnknownOption()
    .action(() => {
      throw new AcpackError('NOT_IMPLEMENTED', '`acinstall from` is not built yet; today: acinstall import + acinstall serve');
    });

  return program;
}

/**
 * Several processes share the listening socket (node:cluster), so serving uses every core: blob
 * copies and TLS are CPU work. A worker that dies is replaced, a bounded number of times.
 */
function superviseWorkers(n: number, store: string, listen: string): void {
  let restarts = 0;
  let announced = false;
  for (let i = 0; i < n; i++) cluster.fork();
  cluster.on('listening', (_w, address) => {
    if (announced) return;
    announced = true;
    process.stderr.write(`acinstall: serving ${store} on http://${listen.replace(/:\d+$/, '')}:${address.port} with ${n} workers\n`);
  });
  let stopping = false;
  cluster.on('exit', (w, code, signal) => {
    if (stopping) return;
    process.stderr.write(`acinstall: worker ${w.process.pid} exited (${signal ?? code})\n`);
    if (restarts++ < 10 * n) cluster.fork();
  });
  const stop = () => {
    stopping = true;
    for (const w of Object.values(cluster.workers ?? {})) w?.kill('SIGTERM');
    setTimeout(() => process.exit(0), 200).unref();
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

export function main(argv: string[]): Promise<number> {
  return runProgram(buildProgram(), argv);
}
