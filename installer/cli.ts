import cluster from 'node:cluster';
import { availableParallelism } from 'node:os';
import { Command } from 'commander';
import { AcpackError, formatBytes, plural } from '../oci/errors.js';
import { existsSync } from 'node:fs';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { readDescriptor, readHead } from '../oci/bundle-reader.js';
import { sha256 } from '../oci/digest.js';
import { isMaster, loadClusterFile, parseIpList, parsePort, specFromFlags, type HostSpec } from './cluster-spec.js';
import { textTable } from '../oci/text-table.js';
import { bundleArches, parseIgnoreList, preflightError, SKIPPABLE } from './preflight.js';
import type { NodeOutcome } from './from.js';
import { loadClusterState, saveClusterState, withNodes } from './cluster-state.js';
import { Journal } from './journal.js';
import { createInstallProgress } from './progress-board.js';
import { createInterface } from 'node:readline/promises';
import { ContentStore } from '../oci/store.js';
import { createReporter, reporterMode } from '../ui/progress.js';
import { runProgram } from '../ui/program.js';
import { SEED_SLOTS } from '../registry/seed-queue.js';
import { loadTrustKeys, trustDir, type TrustPolicy } from '../oci/bundle-signature.js';
import type { IndexDb } from '../registry/index-db.js';

const DEFAULT_STORE = '/var/lib/acpack';

/**
 * The heavy parts, loaded by the commands that use them: the registry (express, x509), SSH (ssh2)
 * and HTTP (undici) cost most of a second of start-up that --version, --help and status do not need.
 */
const load = {
  registry: () => import('../registry/index.js'),
  /** import, without the registry's server and TLS: ~150 ms of every `acinstall import`. */
  importer: () => import('../registry/import.js'),
  from: () => import('./from.js'),
  preflight: () => import('./run-preflight.js'),
  service: () => import('./registry-service.js'),
  reset: () => import('./reset.js'),
  agent: () => import('../p2p/agent-main.js'),
};

export function buildProgram(): Command {
  const program = new Command('acinstall')
    .description('Install an acpack bundle on an air-gapped site: import it, serve it as an OCI registry, lay the cluster down over SSH.')
    .option('--debug', 'print stack traces on errors')
    .showHelpAfterError();

  program
    .command('import')
    .description('Stream a bundle, or the volumes of one in any order, into the site content store (one pass, every blob hashed as it is written)')
    .argument('<bundle...>', 'bundle.tar.zst, the volumes NAME.001.tar.zst … (some or all: the rest may come another day), or - for standard input')
    .option('--store <dir>', 'the content store and its index', DEFAULT_STORE)
    .option('--json', 'print progress and the result as JSON lines')
    .option('--trust <key.pub>', `take bundles signed by this public key (repeatable; with ${trustDir()}/*.pub)`, collect, [])
    .option('--allow-unsigned', 'with trust keys configured, import an unsigned or otherwise signed bundle anyway (with a warning)')
    .addHelpText(
      'after',
      `\nRe-importing is a no-op; a newer bundle adds only the blobs the store lacks. A corrupt, truncated or
hostile bundle is refused and the store is left exactly as it was. Volumes of a set import one by one:
until the last is in, the bundle is pending (its blobs held, gc keeps them) and no image is served.
${TRUST_HELP}`,
    )
    .action(async (files: string[], o) => {
      const { importBundle } = await load.importer();
      const trust = await trustPolicy(o);
      if (files.includes('-') && files.length > 1) throw new AcpackError('BAD_ARGUMENT', 'standard input (-) is one bundle: give it alone');
      if (files.length > 1) await sameBundle(files);
      let last: Awaited<ReturnType<typeof importBundle>> | undefined;
      for (const file of files) {
        const reporter = createReporter(reporterMode(!!o.json));
        reporter.phase(files.length > 1 ? `import ${file}` : 'import', 0);
        const input = file === '-' ? process.stdin : file;
        const r = (last = await importBundle(input, o.store, (n) => reporter.bytes(n), file === '-' ? 'standard input' : file, trust));
        reporter.end();
        if (r.warning) process.stderr.write(`warning: ${r.warning}\n`);
        const origin = r.origin.signed ? { keyId: r.origin.keyId, ...(r.origin.by ? { trusted: r.origin.by.from, valid: r.origin.valid } : {}) } : undefined;
        if (o.json) process.stdout.write(`${JSON.stringify({ event: 'imported', ...r, origin })}\n`);
        else {
          const signed = r.origin.signed && r.origin.by ? `; signed by trusted key ${r.origin.keyId} (${r.origin.by.from})` : '';
          const what = r.volume ? `volume ${r.volume} of ${r.name} ${r.version}` : `${r.name} ${r.version}`;
          const refs = r.pending ? '' : `${plural(r.refs, 'reference')}, `;
          process.stdout.write(`imported ${what}: ${refs}${plural(r.blobs, 'blob')} (${r.added} new, ${formatBytes(r.addedBytes)})${signed}\n`);
        }
      }
      if (last?.pending && !o.json) {
        const p = last.pending;
        process.stdout.write(`${last.name} ${last.version} is pending: ${p.volumes - p.missing.length} of ${p.volumes} volumes in, waiting for volume${p.missing.length > 1 ? 's' : ''} ${p.missing.join(', ')} (its blobs are held until then; nothing of it is served yet)\n`);
      }
    });

  program
    .command('push')
    .description('Copy what the store holds into an existing registry (Harbor, distribution, zot), digests preserved')
    .requiredOption('--to <registry>', 'host[:port] of the registry')
    .option('--prefix <path>', 'push under this path: REGISTRY/PREFIX/pause:3.5 (a Harbor project, say)')
    .option('--store <dir>', 'the content store and its index', DEFAULT_STORE)
    .option('--insecure', 'reach the registry over plain HTTP, or HTTPS without checking its certificate')
    .addHelpText(
      'after',
      `
Images go under their path without the upstream host (registry.k8s.io/pause:3.5 → REGISTRY/pause:3.5),
binaries and charts as OCI artifacts under binaries/NAME and charts/NAME. Credentials come from
REGISTRY_AUTH_FILE, else docker's config.json (docker login / podman login). What the registry has is
skipped, so a cut run resumes where it stopped. An index of which the bundle holds only some platforms
(a registry refuses an index whose children it lacks) is pushed narrowed to those: its tag gets a new
digest, which the summary names; each platform's manifest keeps its own.`,
    )
    .action(async (o) => {
      if (!existsSync(join(o.store, 'index.db'))) throw new AcpackError('NOT_FOUND', `no store at ${o.store} (it has no index.db): give the --store that import used`);
      const { formatPushSummary, pushStore } = await import('./push-store.js');
      const s = await pushStore({ store: o.store, to: o.to, prefix: o.prefix, insecure: !!o.insecure, log: (l) => process.stderr.write(`${l}\n`) });
      process.stdout.write(`${formatPushSummary(s, o.to)}\n`);
    });

  program
    .command('inventory')
    .description('Write what the store holds (bundles, images, binaries, charts, blob digests), for acpack bundle --base to leave out')
    .option('--store <dir>', 'the content store and its index', DEFAULT_STORE)
    .requiredOption('-o, --output <file>', 'where to write it (site.json), to carry back on the medium')
    .addHelpText('after', '\nOnly blobs that an imported manifest reaches are listed (what gc may take is not). On the build side:\n  acpack bundle -f M.yaml --base site.json -o delta.tar.zst   # carries only what the site lacks')
    .action(async (o) => {
      if (!existsSync(join(o.store, 'index.db'))) throw new AcpackError('NOT_FOUND', `no store at ${o.store} (it has no index.db): give the --store that import used`);
      const { siteInventory } = await import('./inventory.js');
      const inv = await siteInventory(o.store);
      await writeFile(o.output, `${JSON.stringify(inv, null, 2)}\n`).catch((err: NodeJS.ErrnoException) => {
        throw new AcpackError('BAD_OUTPUT', `-o ${o.output} cannot be written (${err.code}): give a file in a directory that exists`, { cause: err });
      });
      process.stdout.write(`wrote ${o.output}: ${plural(inv.bundles.length, 'bundle')}, ${plural(inv.images.length, 'image')}, ${plural(inv.binaries.length, 'binary', 'binaries')}, ${plural(inv.charts.length, 'chart')}, ${plural(inv.blobs.length, 'blob')}\n`);
    });

  program
    .command('serve')
    .description('Serve the store as an OCI distribution registry, under the images\' original names')
    .option('--store <dir>', 'the content store and its index', DEFAULT_STORE)
    .option('--listen <addr>', 'host:port to listen on', '0.0.0.0:5000')
    .option('--htpasswd <file>', 'bcrypt htpasswd users who may push (without it the registry is read-only)')
    .option('--read-only', 'refuse pushes even with users')
    .option('--authenticated-pull', 'require a user for pulls too (default: anonymous pull)')
    .option('--tls <mode>', '"auto": a site CA and a server certificate kept in the store (see acinstall ca)')
    .option('--tls-cert <file>', 'serve TLS with this certificate (PEM, chain included)')
    .option('--tls-key <file>', 'and this key (PEM)')
    .option('--hostname <name>', 'a DNS name nodes use for this registry (repeatable): in its certificate with --tls auto, and images named under it (sea.hub:5000/x/y) are found as x/y', collect, [])
    .option('--ip <address>', 'an IP address nodes use for this registry, for --tls auto (repeatable)', collect, [])
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
      const { Htpasswd, startRegistry } = await load.registry();
      if (o.htpasswd && cluster.isPrimary) new Htpasswd(o.htpasswd); // a bad file fails here, not in a worker loop
      await checkServedStore(o.store, !!o.htpasswd && !o.readOnly);
      const tls = await tlsFrom(o);
      if (cluster.isPrimary) keepSweepingUploads(o.store);
      if (workers > 1 && cluster.isPrimary) return superviseWorkers(workers, o.store, o.listen, tls ? 'https' : 'http');
      const reg = await startRegistry({
        tls,
        storeRoot: o.store,
        listen: o.listen,
        htpasswd: o.htpasswd,
        readOnly: !!o.readOnly,
        authenticatedPull: !!o.authenticatedPull,
        siteNames: o.hostname,
        seedSlots: Math.ceil(SEED_SLOTS / workers),
        log: o.quiet ? undefined : (l) => process.stdout.write(`${JSON.stringify(l)}\n`),
      });
      if (cluster.isPrimary) process.stderr.write(`acinstall: serving ${o.store} on ${reg.url}\n`);
      const stop = () => void reg.close().then(() => process.exit(0));
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
    });

  program
    .command('ca')
    .description('Print the site CA certificate made by `serve --tls auto` (nodes trust it for the registry)')
    .option('--store <dir>', 'the content store', DEFAULT_STORE)
    .action(async (o) => {
      const { tlsDir } = await load.registry();
      const pem = await readFile(join(tlsDir(o.store), 'ca.crt'), 'utf8').catch(() => {
        throw new AcpackError('NOT_FOUND', `no site CA in ${o.store}: start the registry once with --tls auto`);
      });
      process.stdout.write(pem);
    });

  program
    .command('gc')
    .description('Reclaim space: blobs no manifest reaches any more (after manifest deletes), and abandoned uploads')
    .option('--store <dir>', 'the content store and its index', DEFAULT_STORE)
    .option('--dry-run', 'only tell what would go')
    .option('--grace <minutes>', 'spare what was used this recently (shorter only while nothing pushes or imports)', '60')
    .option('--abandon <bundle>', 'give up a volume set imported in part (NAME, NAME:VERSION, or sha256:HEX of its bundle.json when two share a name and version; as gc and status list it): what only it holds goes in this run')
    .option('--json', 'print the result as JSON')
    .addHelpText(
      'after',
      `\nA blob is kept while a live manifest reaches it: one a repository holds, except an index's untagged
child once no index of that repository names it (what a deleted index leaves goes too). Anything
written, found (HEAD), mounted or linked within the grace period is spared (a push may be about to
name it). Uploads untouched for a day are abandoned. Safe while the registry serves and while an
import runs: each deletion re-checks under the store lock.`,
    )
    .action(async (o) => {
      const grace = Number(o.grace);
      if (o.grace === '' || !(grace >= 0)) throw new AcpackError('BAD_ARGUMENT', `--grace must be a number of minutes, not "${o.grace}"`);
      const { collectGarbage, IndexDb } = await load.registry();
      const store = await ContentStore.open(o.store);
      const db = new IndexDb(o.store);
      try {
        const abandoned = o.abandon === undefined ? undefined : pendingNamed(db.pendingBundles(), o.abandon);
        // Its leases go first, so that each deletion's re-check under the lock no longer finds them.
        if (abandoned && !o.dryRun) db.endPending(abandoned.key);
        const r = await collectGarbage(store, db, { dryRun: !!o.dryRun, minAgeMs: grace * 60_000, abandoned: abandoned && [abandoned.key] });
        const n = (count: number, what: string) => `${count} ${what}${count === 1 ? '' : 's'}`;
        const verb = o.dryRun ? 'would remove' : 'removed';
        if (o.json) process.stdout.write(`${JSON.stringify({ event: 'gc', dryRun: !!o.dryRun, graceMinutes: grace, ...(abandoned ? { abandoned: { name: abandoned.name, version: abandoned.version } } : {}), ...r })}\n`);
        else {
          if (abandoned) process.stdout.write(`${o.dryRun ? 'would abandon' : 'abandoned'} ${abandoned.name} ${abandoned.version} (volumes ${abandoned.imported.join(', ')} of ${abandoned.volumes} were in): its blobs are held no longer\n`);
          process.stdout.write(`${verb} ${n(r.blobs, 'blob')} (${formatBytes(r.bytes)}) and ${n(r.uploads, 'abandoned upload')}\n`);
          if (r.manifests) process.stdout.write(`${verb} ${n(r.manifests, 'manifest')} from repositories: untagged children of deleted indexes\n`);
          process.stdout.write(`spared ${n(r.spared, 'blob')} nothing needs, used within the last ${n(grace, 'minute')}\n`);
          // What a volume set imported in part holds, which gc keeps until its last volume comes.
          const pending = db.pendingBundles();
          for (const p of pending) {
            if (p.key === abandoned?.key) continue;
            process.stdout.write(`kept for ${describePending(p)}: import the rest to complete it, or give it up with --abandon ${abandonName(p, pending)}\n`);
          }
        }
      } finally {
        db.close();
      }
    });

  program
    .command('verify')
    .description('Scrub the store: re-hash every blob, check every manifest\'s references and the index against the files')
    .option('--store <dir>', 'the content store and its index', DEFAULT_STORE)
    .option('--repair', 'quarantine corrupt and stray files (under <store>/quarantine) and drop links to blobs that are gone')
    .option('--rate <MB/s>', 'hash at most this many MB per second (to run beside a serving registry)')
    .option('--json', 'print the report as JSON')
    .addHelpText('after', `\nExits 1 when something is wrong (after --repair: when something could not be repaired). What a\nrepair quarantines is gone from the registry: re-import the bundle that carries it.`)
    .action(async (o) => {
      const rate = o.rate === undefined ? undefined : Number(o.rate) * 1e6;
      if (rate !== undefined && !(rate > 0)) throw new AcpackError('BAD_ARGUMENT', `--rate must be a positive number of MB/s, not "${o.rate}"`);
      const { scrubStore, IndexDb } = await load.registry();
      const store = await ContentStore.open(o.store);
      const db = new IndexDb(o.store);
      try {
        const r = await scrubStore(store, db, { repair: !!o.repair, rate });
        if (o.json) process.stdout.write(`${JSON.stringify(r)}\n`);
        else {
          for (const p of r.problems) process.stdout.write(`${p.kind}${p.repaired ? ' (repaired)' : ''}: ${p.what}\n`);
          process.stdout.write(`checked ${plural(r.blobs, 'blob')} (${formatBytes(r.bytes)}): ${r.problems.length ? plural(r.problems.length, 'problem') : 'all good'}\n`);
        }
        if (r.problems.some((p) => !p.repaired)) process.exitCode = 1;
      } finally {
        db.close();
      }
    });

  withNodeOptions(program.command('preflight'))
    .description('Check every node before installing: arch, OS, kernel, CPU, memory, disk, swap, ports, clock, hostnames, br_netfilter, ip_forward')
    .option('--bundle <file>', 'the bundle to install (its arches are checked against the nodes)')
    .option('--arch <list>', 'the arches to accept when no bundle is given', 'amd64,arm64')
    .action(async (o) => {
      const spec = await specFrom(o);
      const arches = o.bundle ? bundleArches(await readDescriptor(o.bundle)) : { arches: String(o.arch).split(',') };
      const { runPreflight } = await load.preflight();
      const { failures } = await runPreflight({ spec, ...arches, stateDir: o.store, ignore: o.ignorePreflight });
      if (failures.length) throw preflightError(failures);
      process.stdout.write(`preflight passed on ${plural(spec.hosts.length, 'node')}\n`);
    });

  withNodeOptions(program.command('from'))
    .description('Import a bundle, serve it, check every node, give each its binaries and containerd configuration, kubeadm init and join, install the charts')
    .argument('<bundle>', 'bundle.tar.zst')
    .option('--max-unavailable <n>', 'workers upgraded at once by a newer bundle (each is out while its kubelet restarts)', '1')
    .option('--allow-downgrade', 'install an older release of the bundle the cluster runs (the same Kubernetes version: it is never downgraded)')
    .option('--trust <key.pub>', `take bundles signed by this public key (repeatable; with ${trustDir()}/*.pub)`, collect, [])
    .option('--allow-unsigned', 'with trust keys configured, install an unsigned or otherwise signed bundle anyway (with a warning)')
    .addHelpText(
      'after',
      `
Steps: import, the registry (a systemd unit where systemd runs), preflight, each node's binaries and
containerd configuration, kubeadm init and joins (masters one at a time, workers in parallel). Nodes
reach the API servers as apiserver.cluster.local: the first master, or with several masters, workers
go through a virtual IP (network.apiServerVIP, default 10.103.97.2) kept by lvscare. Re-runs skip what
the journal records as done. A newer bundle on an installed cluster upgrades Kubernetes (kubeadm
upgrade, control plane first, then the workers --max-unavailable at a time, each kubelet swapped in
after its node's upgrade). Then the bundle's charts with helm on the first
master, from the site registry over oci://: the CNI (network.cni) first, then the manifest's order.
Last, with the bundle's kubectl, the post-check: every node Ready, every kube-system pod running.
${TRUST_HELP}`,
    )
    .action(async (bundle: string, o) => {
      const maxUnavailable = Number(o.maxUnavailable);
      if (!Number.isInteger(maxUnavailable) || maxUnavailable < 1) throw new AcpackError('BAD_ARGUMENT', `--max-unavailable must be a whole number of workers, 1 or more, not "${o.maxUnavailable}"`);
      const spec = await specFrom(o);
      const { checkRerun, installFrom } = await load.from();
      await checkRerun(o.store, spec, bundle, !!o.allowDowngrade);
      const trust = await trustPolicy(o);
      const progress = createInstallProgress();
      const outcomes = await installFrom({ bundle, spec, store: o.store, ignore: o.ignorePreflight, progress, maxUnavailable, trust }).finally(() => progress.end());
      reportOutcomes(outcomes);
      process.stdout.write(installSummary(o.store, spec.hosts));
    });

  program
    .command('join')
    .description('Add workers to the installed cluster: the same steps as from, for the new nodes only')
    .requiredOption('-n, --nodes <ips>', 'worker IPs to add, comma-separated')
    .option('-p, --password <password>', 'SSH password for the new nodes (default: the first master\'s key)')
    .option('-i, --key <file>', 'SSH private key for the new nodes')
    .option('--user <user>', 'SSH user for the new nodes (default: the first master\'s)')
    .option('--port <port>', 'SSH port for the new nodes (default: the first master\'s)')
    .option('--cluster-password <password>', 'SSH password of the hosts already in the cluster that logged in with one at install (or ACINSTALL_SSH_PASSWORD)')
    .option('--ignore-preflight <checks>', `checks to skip, comma-separated, of: ${SKIPPABLE.join(', ')}`, addIgnored, [])
    .option('--store <dir>', 'acinstall\'s state on this master', DEFAULT_STORE)
    .addHelpText('after', '\nEach host keeps its own login: the new nodes use -p/-i/--user/--port, the hosts already in the cluster\nthe key recorded at install, or --cluster-password where they logged in with a password.')
    .action(async (o) => {
      const state = await loadClusterState(o.store);
      const ips = parseIpList(o.nodes, '-n/--nodes');
      const login = { password: o.password, keyFile: o.key, user: o.user, port: o.port ? parsePort(o.port) : undefined };
      const spec = withNodes(state, ips, login, o.clusterPassword ?? process.env.ACINSTALL_SSH_PASSWORD);
      const { installFrom } = await load.from();
      const progress = createInstallProgress();
      // The content is in the store already: the bundle's medium need not be there any more.
      const bundle = state.descriptor ? { file: state.bundle, descriptor: state.descriptor } : state.bundle;
      const outcomes = await installFrom({ bundle, spec, store: o.store, ignore: o.ignorePreflight, progress }).finally(() => progress.end());
      reportOutcomes(outcomes);
      process.stdout.write(`joined ${ips.join(', ')}\n`);
    });

  program
    .command('delete')
    .description('Remove nodes from the installed cluster (kubeadm reset and clean-up on each)')
    .requiredOption('-n, --nodes <ips>', 'node IPs to remove, comma-separated')
    .option('-p, --password <password>', 'SSH password of the hosts that logged in with one at install (or ACINSTALL_SSH_PASSWORD); the others use the key recorded at install')
    .option('--yes', 'do not ask for confirmation (for scripts)')
    .option('--force', 'a node that cannot be reached is forgotten anyway (journal and cluster record), untouched')
    .option('--store <dir>', 'acinstall\'s state on this master', DEFAULT_STORE)
    .action(async (o) => {
      const state = await loadClusterState(o.store);
      const spec = withNodes(state, [], {}, o.password ?? process.env.ACINSTALL_SSH_PASSWORD);
      const ips = parseIpList(o.nodes, '-n/--nodes');
      const { checkDeletable, deleteNodes } = await load.from();
      checkDeletable(spec, ips);
      await confirm(o.yes, `This runs kubeadm reset on ${ips.join(', ')} and removes ${ips.length === 1 ? 'it' : 'them'} from the cluster.`);
      const removed = (rest: typeof spec) => saveClusterState(o.store, state.bundle, state.descriptor, rest);
      await deleteNodes(o.store, spec, ips, { descriptor: state.descriptor, previous: state.previous, force: !!o.force, removed, log: (l) => process.stderr.write(`${l}\n`) });
      process.stdout.write(`removed ${ips.join(', ')}\n`);
    });

  program
    .command('reset')
    .description('Take the whole cluster down: kubeadm reset and acinstall\'s files removed on every node, the registry stopped')
    .option('--yes', 'do not ask for confirmation (for scripts)')
    .option('--purge-store', 'remove the store too: the imported content, the site CA and the logs (kept by default)')
    .option('-p, --password <password>', 'SSH password of the hosts that logged in with one at install (or ACINSTALL_SSH_PASSWORD); the others use the key recorded at install')
    .option('--store <dir>', 'acinstall\'s state on this master', DEFAULT_STORE)
    .addHelpText('after', '\nWorkers first, the first master last. On each node: kubeadm reset, the kubelet stopped and its unit\nremoved, containerd\'s configuration and the site CA removed (containerd runs on its defaults again),\nthe bundle\'s binaries removed where they are still the bundle\'s bytes. A node that cannot be reached\nfails the reset and stays recorded: run it again once the node answers.')
    .action(async (o) => {
      const state = await loadClusterState(o.store);
      const spec = withNodes(state, [], {}, o.password ?? process.env.ACINSTALL_SSH_PASSWORD);
      const ips = spec.hosts.map((h) => h.ip).join(', ');
      await confirm(o.yes, `This removes Kubernetes from ${ips} and stops the site registry${o.purgeStore ? `, and deletes ${o.store}` : ''}.`);
      const left = (rest: typeof spec) => saveClusterState(o.store, state.bundle, state.descriptor, rest);
      const { resetCluster } = await load.reset();
      await resetCluster(o.store, spec, state.descriptor, { previous: state.previous, purgeStore: !!o.purgeStore, left, log: (l) => process.stderr.write(`${l}\n`) });
      process.stdout.write(`reset ${ips}${o.purgeStore ? `; ${o.store} removed` : `; the store ${o.store} keeps the content (acinstall from installs again, --purge-store removes it)`}\n`);
    });

  const registry = program.command('registry').description('The site registry of the installed cluster: status, start, stop');
  const siteOf = async (store: string) => (await load.service()).siteRegistry(store, (await loadClusterState(store)).spec);
  registry
    .command('status')
    .description('Whether the registry answers, and what runs it (exit 3 when it does not answer)')
    .option('--store <dir>', 'acinstall\'s state on this master', DEFAULT_STORE)
    .action(async (o) => {
      const site = await siteOf(o.store);
      const s = await (await load.service()).registryStatus(site);
      process.stdout.write(`${s.running ? 'running' : 'stopped'}: ${site.url} (${s.how})\n`);
      if (!s.running) process.exitCode = 3;
    });
  registry
    .command('start')
    .description('Start the registry as from does (a systemd unit where systemd runs, else a background process)')
    .option('--store <dir>', 'acinstall\'s state on this master', DEFAULT_STORE)
    .action(async (o) => {
      const site = await siteOf(o.store);
      process.stdout.write(`running: ${site.url} (${await (await load.service()).ensureRegistry(site)})\n`);
    });
  registry
    .command('stop')
    .description('Stop the registry (its unit is disabled too): nodes cannot pull until it starts again')
    .option('--store <dir>', 'acinstall\'s state on this master', DEFAULT_STORE)
    .action(async (o) => {
      const { stopRegistry } = await load.service();
      process.stdout.write(`${await stopRegistry((await siteOf(o.store)).store)}\n`);
    });

  program
    .command('agent')
    .description("The peer cache on a node (acinstall from runs it on every node): a pull-only registry for the node's containerd whose blobs come piece by piece from the other nodes, and from the site registry what none of them has")
    .requiredOption('--registry <url>', 'the site registry, e.g. https://10.0.0.1:5000 (manifests, piece hashes and the tracker come from it)')
    .option('--ca <file>', "the registry's CA certificate (PEM)")
    .option('--listen <addr>', "host:port for the node's own containerd", '127.0.0.1:5001')
    .requiredOption('--peer-listen <addr>', "host:port on the node's cluster address, where peers fetch pieces (announced to the tracker)")
    .option('--dir <dir>', 'where pieces and fetched blobs are kept', '/var/lib/acpack-agent')
    .option('--max-cache <bytes>', 'whole blobs kept for peers, in bytes (K, M, G suffixes: powers of 1024)', '20G')
    .action(async (o) => {
      const { runAgent } = await load.agent();
      await runAgent({ registry: o.registry, ca: o.ca, listen: o.listen, peerListen: o.peerListen, dir: o.dir, maxCache: o.maxCache });
    });

  program
    .command('status')
    .description('Show the install journal (every step on every node), volume sets imported in part, and the peer cache\'s traffic')
    .option('--store <dir>', 'where acinstall keeps its state', DEFAULT_STORE)
    .action(async (o) => {
      // Opening a journal creates it: look first, so that a wrong --store stays untouched.
      if (!existsSync(o.store)) throw new AcpackError('NOT_INSTALLED', `no store at ${o.store} (it does not exist): acinstall keeps its state in the store on the first master; run status there, with the --store that from used`);
      const j = existsSync(join(o.store, 'journal.db')) ? new Journal(o.store) : undefined;
      const rows = j?.entries() ?? [];
      j?.close();
      const pending = existsSync(join(o.store, 'index.db')) ? await pendingSets(o.store) : [];
      if (rows.length === 0 && pending.length === 0) throw new AcpackError('NOT_INSTALLED', `no install has run with the store ${o.store}: install with acinstall from <bundle> -m <masters> --store ${o.store}`);
      if (rows.length > 0) {
        // One line each: a long detail (an error) keeps its first line; the per-node log has the rest.
        const table = rows.map((r) => [r.node, r.step, r.status, r.at.replace('T', ' ').slice(0, 19), r.detail.split('\n')[0]]);
        process.stdout.write(`${textTable([['NODE', 'STEP', 'STATUS', 'AT (UTC)', 'DETAIL'], ...table])}\n`);
      }
      for (const p of pending) process.stdout.write(`pending: ${describePending(p)}; its blobs are held until the rest is imported (or acinstall gc --abandon ${abandonName(p, pending)})\n`);
      if (existsSync(join(o.store, 'cluster.json'))) process.stdout.write(await peerCacheTable(o.store));
    });

  return program;
}

type Pending = ReturnType<IndexDb['pendingBundles']>[number];

async function pendingSets(store: string): Promise<Pending[]> {
  const db = new (await load.registry()).IndexDb(store);
  try {
    return db.pendingBundles();
  } finally {
    db.close();
  }
}

function describePending(p: Pending): string {
  const since = new Date(p.sinceMs).toISOString().replace('T', ' ').slice(0, 16);
  return `${p.name} ${p.version}, a volume set imported in part (volumes ${p.imported.join(', ')} of ${p.volumes}, since ${since} UTC)`;
}

/** How `--abandon` names a pending set: NAME:VERSION, or its bundle.json's digest when another set has the same. */
function abandonName(p: Pending, pending: Pending[]): string {
  const same = pending.filter((o) => o.name === p.name && o.version === p.version);
  return same.length > 1 ? p.key.slice(0, 'sha256:'.length + 12) : `${p.name}:${p.version}`;
}

/**
 * The pending bundle `NAME`, `NAME:VERSION` or `sha256:HEX` (the start of its bundle.json's digest,
 * for two sets of one name and version) names; an error that lists them when it names none, or several.
 */
function pendingNamed(pending: Pending[], named: string): Pending {
  const at = named.lastIndexOf(':');
  const [name, version] = at > 0 ? [named.slice(0, at), named.slice(at + 1)] : [named, undefined];
  const byDigest = name === 'sha256' && /^[0-9a-f]{12,64}$/.test(version ?? '');
  const found = pending.filter((p) => (byDigest ? p.key.startsWith(named) : p.name === name && (version === undefined || p.version === version)));
  const listed = pending.map((p) => abandonName(p, pending)).join(', ');
  if (found.length === 1) return found[0];
  if (found.length > 1) {
    throw new AcpackError('BAD_ARGUMENT', `--abandon ${named} names ${found.length} volume sets imported in part (${found.map((p) => `${p.name}:${p.version} as ${abandonName(p, pending)}`).join(', ')}): give one of those; nothing was removed`);
  }
  throw new AcpackError('NOT_FOUND', `no volume set imported in part is ${named}${listed ? ` (there are: ${listed})` : ' (there are none)'}; nothing was removed`);
}

/** The peer cache's traffic per node, from the tracker in the site registry (empty when it does not answer). */
async function peerCacheTable(store: string): Promise<string> {
  const service = await load.service();
  const nodes = await service.peerCacheNodes(await service.siteRegistry(store, (await loadClusterState(store)).spec));
  if (!nodes?.length) return '';
  const now = Date.now();
  const rows = nodes
    .sort((a, b) => a.addr.localeCompare(b.addr, undefined, { numeric: true }))
    .map((n) => [n.addr.replace(/:\d+$/, ''), ...(n.bytes ? [n.bytes.fromSeed, n.bytes.fromPeers, n.bytes.served].map(formatBytes) : ['-', '-', '-']), `${Math.round((now - n.seenAt) / 1000)} s ago`]);
  const { fromSeed, fromPeers } = service.peerCacheTotals(nodes);
  return `\nPEER CACHE (each node's agent, since it started; the registry sent ${formatBytes(fromSeed)} to agents, peers ${formatBytes(fromPeers)})\n${textTable([['NODE', 'FROM REGISTRY', 'FROM PEERS', 'SERVED', 'ANNOUNCED'], ...rows])}\n`;
}

/**
 * Asks before something that cannot be undone. Without a terminal to ask on (a script, a pipe) it
 * is refused unless --yes says so up front: a prompt nobody sees would hang, or a stray "y" in a
 * pipe would answer it.
 */
async function confirm(yes: boolean | undefined, what: string): Promise<void> {
  if (yes) return;
  if (!process.stdin.isTTY) throw new AcpackError('NOT_CONFIRMED', `${what}\nNo terminal to ask on: add --yes to go ahead.`);
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  const answer = await rl.question(`${what}\nType yes to go ahead: `).finally(() => rl.close());
  if (answer.trim() !== 'yes') throw new AcpackError('NOT_CONFIRMED', 'not confirmed: nothing was changed');
}

/**
 * Several processes share the listening socket (node:cluster), so serving uses every core: blob
 * copies and TLS are CPU work. A worker that dies is replaced; when workers keep dying (more than
 * three per worker within a minute) the primary cannot keep the registry up: it stops the rest and
 * exits 1, so that its service manager (the unit's Restart=always) starts the registry afresh
 * instead of leaving a primary that serves nothing. The primary keeps what must be one for all
 * workers: the metrics, the failed-login count per address and the peer cache's tracker.
 */
async function superviseWorkers(n: number, store: string, listen: string, scheme: string): Promise<void> {
  const { serveClusterMetrics, serveLoginThrottle, serveTracker } = await load.registry();
  serveClusterMetrics();
  serveLoginThrottle();
  serveTracker();
  const deaths: number[] = [];
  let announced = false;
  for (let i = 0; i < n; i++) cluster.fork();
  cluster.on('listening', (_w, address) => {
    if (announced) return;
    announced = true;
    process.stderr.write(`acinstall: serving ${store} on ${scheme}://${listen.replace(/:\d+$/, '')}:${address.port} with ${n} workers\n`);
  });
  let stopping = false;
  cluster.on('exit', (w, code, signal) => {
    if (stopping) return;
    process.stderr.write(`acinstall: worker ${w.process.pid} exited (${signal ?? code})\n`);
    // Before any worker listened it is a start-up failure (port taken, bad store): restarting won't help.
    if (!announced) {
      stopping = true;
      for (const other of Object.values(cluster.workers ?? {})) other?.kill('SIGTERM');
      process.exitCode = 1;
      return;
    }
    const now = Date.now();
    deaths.push(now);
    while (deaths[0] < now - 60_000) deaths.shift();
    if (deaths.length <= 3 * n) return void cluster.fork();
    process.stderr.write(`acinstall: ${deaths.length} workers died within a minute: the registry cannot be kept up; exiting so that it is started afresh\n`);
    stopping = true;
    for (const other of Object.values(cluster.workers ?? {})) other?.kill('SIGTERM');
    process.exitCode = 1;
    setTimeout(() => process.exit(1), 2000).unref();
  });
  const stop = () => {
    stopping = true;
    for (const w of Object.values(cluster.workers ?? {})) w?.kill('SIGTERM');
    setTimeout(() => process.exit(0), 200).unref();
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

/**
 * A store to serve must exist unless pushes can fill it: a mistyped --store would otherwise be
 * created empty and answer every pull with a 404.
 */
async function checkServedStore(store: string, takesPushes: boolean): Promise<void> {
  const found = await stat(store).catch(() => undefined);
  if (found && !found.isDirectory()) throw new AcpackError('BAD_ARGUMENT', `--store ${store} is not a directory: it names the content store that acinstall import fills`);
  if (!found && !takesPushes) {
    throw new AcpackError('NOT_FOUND', `no store at ${store} (it does not exist), so there is nothing to serve: import a bundle into it first (acinstall import <bundle> --store ${store}) or check --store; to start an empty registry to push into, give --htpasswd`);
  }
}

/** Abandoned uploads go at start and then hourly; one process of a registry does it. */
function keepSweepingUploads(storeRoot: string): void {
  const sweep = () =>
    Promise.all([ContentStore.open(storeRoot), load.registry()])
      .then(([store, { sweepUploads }]) => sweepUploads(store))
      .catch((err) => process.stderr.write(`acinstall: sweeping abandoned uploads failed: ${(err as Error).message}\n`));
  void sweep();
  setInterval(sweep, 3600_000).unref();
}

/** The sealer-style node flags shared by preflight and from. */
function withNodeOptions(cmd: Command): Command {
  return cmd
    .option('-m, --masters <ips>', 'master IPs, comma-separated (the first is this machine)')
    .option('-n, --nodes <ips>', 'worker IPs, comma-separated')
    .option('-p, --password <password>', 'SSH password (or give -i; ACINSTALL_SSH_PASSWORD keeps it out of the process list)')
    .option('-i, --key <file>', 'SSH private key')
    .option('--user <user>', 'SSH user', 'root')
    .option('--port <port>', 'SSH port', '22')
    .option('--cluster <file>', 'a cluster spec (kind: Cluster) instead of the flags')
    .option('--ignore-preflight <checks>', `checks to skip, comma-separated, of: ${SKIPPABLE.join(', ')}`, addIgnored, [])
    .option('--store <dir>', 'the content store and acinstall\'s state (journal, recorded host keys)', DEFAULT_STORE);
}

function specFrom(o: { cluster?: string; masters?: string; nodes?: string; password?: string; key?: string; user?: string; port?: string }) {
  const password = o.password ?? process.env.ACINSTALL_SSH_PASSWORD;
  return o.cluster ? loadClusterFile(o.cluster) : Promise.resolve(specFromFlags({ ...o, password }));
}

/** What a finished install looks like, from the journal: each node's part, and where to look next. */
function installSummary(store: string, hosts: HostSpec[]): string {
  const journal = new Journal(store);
  try {
    const first = hosts.find(isMaster)!;
    const rows = hosts.map((h) => [
      h.ip,
      h === first ? 'first master' : isMaster(h) ? 'master' : 'worker',
      h === first ? `init (Kubernetes ${journal.doneDetail(h.ip, 'kubernetes') ?? '?'})` : (journal.doneDetail(h.ip, 'kubeadm-join') ? 'joined' : '-'),
      journal.doneDetail(h.ip, 'api-endpoint') ?? '-',
    ]);
    return [
      textTable([['NODE', 'ROLE', 'KUBEADM', 'API SERVER'], ...rows]),
      `registry: ${journal.doneDetail(first.ip, 'registry') ?? '-'}`,
      `per-node logs: ${join(store, 'logs')}/<ip>.log; every step: acinstall status --store ${store}`,
      `post-check: ${journal.doneDetail(first.ip, 'post-check') ?? 'not run (the bundle carries no kubectl)'}`,
      '',
    ].join('\n');
  } finally {
    journal.close();
  }
}

/** Per-node failures end the command non-zero, after every other node has finished. */
function reportOutcomes(outcomes: NodeOutcome[]): void {
  const failed = outcomes.filter((x) => !x.ok);
  if (failed.length) {
    throw new AcpackError(
      'NODES_FAILED',
      `${failed.length} of ${outcomes.length} nodes failed:\n${failed.map((f) => `  ${f.node}: ${f.detail.replace(`${f.node}: `, '')}`).join('\n')}\nfix them and run the same command again: finished steps are skipped; a node that will not come back: acinstall delete -n IP --force`,
    );
  }
}

/** Checked as the command line is parsed, so a wrong name stops the run before any node is reached. */
const addIgnored = (v: string, prev: string[]) => [...prev, ...parseIgnoreList(v)];

const collect = (v: string, prev: string[]) => [...prev, ...v.split(',').filter(Boolean)];

const TRUST_HELP = `Trust: with any trust key (--trust, or *.pub in ${trustDir()}) a bundle must be signed by one of them
(acpack bundle --sign KEY): an unsigned or otherwise signed one is refused unless --allow-unsigned, and one
whose bundle.json or contents changed after signing is always refused. With no trust key, every bundle is
taken with a warning that its origin is unchecked.`;

/** Files given together must be volumes of one bundle: a foreign one is named before anything is imported. */
async function sameBundle(files: string[]): Promise<void> {
  const heads = await Promise.all(files.map(async (file) => ({ file, head: await readHead(file) })));
  const key = (h: (typeof heads)[number]) => sha256(h.head.descriptorBytes);
  const first = heads[0];
  for (const h of heads.slice(1)) {
    if (key(h) === key(first)) continue;
    const what = (x: typeof h) => `${x.head.descriptor.name} ${x.head.descriptor.version}${x.head.volume ? ` (volume ${x.head.volume} of ${x.head.descriptor.volumes})` : ''}`;
    throw new AcpackError('FOREIGN_VOLUME', `${h.file} is ${what(h)}, not a volume of the bundle ${first.file} is from (${what(first)}): import each bundle on its own; nothing was imported`);
  }
}

/** The site's trust keys: --trust and the trust directory's. */
async function trustPolicy(o: { trust: string[]; allowUnsigned?: boolean }): Promise<TrustPolicy> {
  return { keys: await loadTrustKeys(o.trust), allowUnsigned: !!o.allowUnsigned };
}

async function tlsFrom(o: { tls?: string; tlsCert?: string; tlsKey?: string; store: string; hostname: string[]; ip: string[] }) {
  if (o.tls !== undefined && o.tls !== 'auto') throw new AcpackError('BAD_ARGUMENT', `--tls takes "auto", not "${o.tls}"`);
  if (o.tls && (o.tlsCert || o.tlsKey)) throw new AcpackError('BAD_ARGUMENT', 'give --tls auto or --tls-cert/--tls-key, not both');
  if (!!o.tlsCert !== !!o.tlsKey) throw new AcpackError('BAD_ARGUMENT', '--tls-cert and --tls-key go together');
  if (o.tlsCert && o.tlsKey) {
    const read = (f: string) =>
      readFile(f, 'utf8').catch((err) => {
        throw new AcpackError('BAD_ARGUMENT', `cannot read ${f}: ${(err as NodeJS.ErrnoException).code}`);
      });
    return { cert: await read(o.tlsCert), key: await read(o.tlsKey) };
  }
  if (!o.tls) return undefined;
  // Made once by the primary; workers find it in the store and reuse it.
  const { ensureTls } = await load.registry();
  return ensureTls(o.store, { hostnames: o.hostname, ips: o.ip });
}

export function main(argv: string[]): Promise<number> {
  return runProgram(buildProgram(), argv);
}
