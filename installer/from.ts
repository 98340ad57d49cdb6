import { mkdir } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import pLimit from 'p-limit';
import { archFromUname, nodeArch } from '../arch/platform.js';
import { AcpackError, formatBytes, plural } from '../oci/errors.js';
import { readDescriptor, readHead, type BundleHead } from '../oci/bundle-reader.js';
import { ContentStore } from '../oci/store.js';
import { judgeOrigin, originOf, type TrustPolicy } from '../oci/bundle-signature.js';
import { importBundle, missingVolumes } from '../registry/index.js';
import { firstMaster, isMaster, type ClusterSpec, type HostSpec } from './cluster-spec.js';
import { Journal } from './journal.js';
import { hostListChanges, loadClusterState, saveClusterState } from './cluster-state.js';
import type { InstallProgress } from './progress-board.js';
import { KnownHosts, SshHost } from './ssh.js';
import { ensureRegistry, peerCacheNodes, peerCacheTotals, siteRegistry, type SiteRegistry } from './registry-service.js';
import { checkBundleOrder, heldBinaries } from './upgrade.js';
import { withStoreLock } from './store-lock.js';
import { resetScript } from './reset.js';
import { chartOrder, helmCommand } from './charts.js';
import { chartImages } from './chart-images.js';
import { kubectlCommand } from './post-check.js';
import { lvscareImage } from './control-plane.js';
import { chartSteps, checkCluster, clusterSteps, isInstalled, nodeVersions } from './cluster-steps.js';
import { bundleArches, preflightError, runtimeLacking, type Facts } from './preflight.js';
import { runPreflight } from './run-preflight.js';
import { AGENT_PORT, containerdFiles, installBinaries, keptWarnings, serviceFiles, startServices, writeFiles } from './node-setup.js';
import { startPeerCache, type PeerCacheResult } from './peer-cache.js';
import { RuntimeSources } from './runtime-sources.js';
import { prepullImages, prepullState, startPrepull } from './prepull.js';
import { bundleIdentity, laysClusterDown, type BundleDescriptor } from '../oci/bundle-format.js';
import { kubernetesVersion } from '../kube/index.js';

export interface FromOptions {
  /** A bundle file to import, or the descriptor of one already imported (join, from the cluster state). */
  bundle: string | { file: string; descriptor: BundleDescriptor };
  spec: ClusterSpec;
  store: string;
  ignore: string[];
  progress: InstallProgress;
  /** Workers upgraded at once (each is out while its kubelet restarts); 1 by default. */
  maxUnavailable?: number;
  /** The site's trust keys (--trust, /etc/acpack/trust/) and --allow-unsigned; none: every bundle is taken with a warning. */
  trust?: TrustPolicy;
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
 * in the journal; a re-run skips what is done. Then kubeadm: init, upgrades (a newer bundle on an
 * installed cluster) and joins; then the charts and the post-check on the first master.
 */
export async function installFrom(o: FromOptions): Promise<NodeOutcome[]> {
  assertOnFirstMaster(firstMaster(o.spec).ip);
  const file = typeof o.bundle === 'string' ? o.bundle : o.bundle.file;
  let d: BundleDescriptor;
  let warning: string | undefined;
  if (typeof o.bundle === 'string') {
    // Whose bundle it is, before anything is touched (the import checks it again as it reads).
    const head = await readHead(o.bundle);
    warning = judgeOrigin(originOf(head.descriptorBytes, head.signature, o.trust?.keys ?? []), o.trust ?? { keys: [] }, file);
    d = head.descriptor;
    await requireOtherVolumes(file, head, o.store);
  } else d = o.bundle.descriptor;
  // This machine is the first master: a bundle without its runtime is named before anything is
  // touched. The other nodes' arches are known once preflight has asked them (runtimeLacking there).
  const lacking = runtimeLacking(bundleArches(d), nodeArch());
  if (lacking) throw new AcpackError('NO_RUNTIME', `${file} (${d.name} ${d.version}): ${lacking}. This machine, the first master, is ${nodeArch()}: nothing was imported or touched`);
  if (warning) o.progress.master(`warning: ${warning}`);
  await mkdir(o.store, { recursive: true });
  return withStoreLock(o.store, `installing ${file}`, () => install(o, d));
}

/**
 * `from` again on a cluster installed from this store, checked before any node is touched: the same
 * nodes in the same roles (hostListChanges: join and delete change them), and not an older release
 * of its bundle unless `allowDowngrade` (checkBundleOrder).
 */
export async function checkRerun(store: string, spec: ClusterSpec, bundle: string, allowDowngrade: boolean): Promise<void> {
  if (!existsSync(join(store, 'cluster.json'))) return;
  const state = await loadClusterState(store);
  // No journal: no node was installed (and opening one would create it).
  if (existsSync(join(store, 'journal.db'))) {
    const journal = new Journal(store);
    try {
      const changes = hostListChanges(state, spec, (h) => isInstalled(journal, state.spec, h), store);
      if (changes.length) throw new AcpackError('HOSTS_CHANGED', `the cluster installed from ${store} has other nodes than this command names; nothing was changed:\n  ${changes.join('\n  ')}`);
    } finally {
      journal.close();
    }
  }
  if (!state.descriptor) return;
  const release = (d: BundleDescriptor) => ({ name: d.name, version: d.version, kubernetes: laysClusterDown(d) ? kubernetesVersion(d) : '' });
  checkBundleOrder(release(state.descriptor), release(await readDescriptor(bundle)), allowDowngrade);
}

/** `from` with a file of a volume set: the other volumes must be in the store already (acinstall import). */
async function requireOtherVolumes(file: string, head: BundleHead, store: string): Promise<void> {
  const d = head.descriptor;
  if ((d.volumes ?? 1) <= 1) return;
  const all = Array.from({ length: d.volumes! }, (_, i) => i + 1);
  const missing = existsSync(join(store, 'blobs')) ? await missingVolumes(await ContentStore.open(store), d) : all;
  const others = missing.filter((v) => v !== head.volume);
  if (others.length === 0) return;
  throw new AcpackError(
    'INCOMPLETE_BUNDLE',
    `${file} is volume ${head.volume} of ${d.volumes} of ${d.name} ${d.version}, and the store (${store}) lacks volume${others.length > 1 ? 's' : ''} ${others.join(', ')}: import them first (acinstall import NAME.*.tar.zst, in any order, on any day), then run from with any volume. Nothing was touched`,
  );
}

/** The registry runs here and nodes fetch from the first master's address: they must be one machine. */
function assertOnFirstMaster(ip: string): void {
  const mine = Object.values(networkInterfaces()).flatMap((list) => list ?? []);
  if (mine.some((a) => a.address === ip)) return;
  const shown = mine.filter((a) => !a.internal && !a.address.startsWith('fe80:')).map((a) => a.address).join(', ') || 'only loopback';
  throw new AcpackError('NOT_FIRST_MASTER', `acinstall runs on the first master (${ip}, the first of the masters), and this machine is not it (its addresses: ${shown}): run it on ${ip}`);
}

async function install(o: FromOptions, d: BundleDescriptor): Promise<NodeOutcome[]> {
  const journal = new Journal(o.store);
  try {
    const lvscare = lvscareImage(o.spec, d);
    const helm = helmCommand(d, o.spec.network.cni);
    const versions = nodeVersions(journal, o.spec, d);
    // Steps that depend on the bundle's content are redone when a different bundle is installed
    // (its platforms included: the same manifest bundled for other arches is another bundle).
    const bundleId = bundleIdentity(d);
    const master = firstMaster(o.spec);
    // The registry speaks TLS with the site CA (made once, kept in the store); nodes get the CA.
    const site = await siteRegistry(o.store, o.spec);
    const { url: registry, ca } = site;

    // Importing, starting the registry and checking the nodes overlap: none needs another's result.
    const importing = async () => {
      if (typeof o.bundle !== 'string') return;
      o.progress.master(`importing ${d.name} ${d.version}`);
      const imported = await importBundle(o.bundle, o.store, undefined, undefined, o.trust);
      journal.record(master.ip, 'import', 'done', `${d.name} ${d.version}: ${imported.added} new blobs`);
    };
    const serving = async () => {
      const how = await ensureRegistry(site);
      journal.record(master.ip, 'registry', 'done', `${registry}, ${how}`);
      o.progress.master(`registry serving on ${registry} (${how})`);
    };
    // Nodes already in the cluster are not checked again: their own kubelet and API server hold
    // the very ports a fresh node must have free.
    const installed = (h: HostSpec) => isInstalled(journal, o.spec, h);
    const toCheck = o.spec.hosts.filter((h) => !installed(h));
    const known = await KnownHosts.inStore(o.store);
    let facts = new Map<HostSpec, Facts>();
    const checking = async () => {
      if (toCheck.length) {
        // The registry's port is not checked: it is ours, starting at the same time.
        const r = await runPreflight({ spec: { ...o.spec, hosts: toCheck }, ...bundleArches(d), stateDir: o.store, known, ignore: o.ignore, registryRunning: true });
        if (r.failures.length) throw preflightError(r.failures);
        facts = r.facts;
      }
      o.progress.master(`preflight passed on ${toCheck.length} node${toCheck.length === 1 ? '' : 's'}${toCheck.length < o.spec.hosts.length ? ` (${o.spec.hosts.length - toCheck.length} already installed)` : ''}`);
    };
    const settled = await Promise.allSettled([importing(), serving(), checking()]);
    // The bundle's own error first: a failed check matters only for a bundle that imports.
    for (const r of settled) if (r.status === 'rejected') throw r.reason;
    const { previous } = await saveClusterState(o.store, typeof o.bundle === 'string' ? o.bundle : o.bundle.file, d, o.spec);

    // Rendered while the nodes are set up; each node's pull ahead waits for it. A chart that does
    // not render costs its images being pulled ahead, not the install (helm install says why).
    const charts = helm ? chartOrder(d, o.spec.network.cni) : [];
    const chartRefs = chartImages(o.store, d, charts).catch((err: Error) => {
      o.progress.master(`warning: the charts' images are not pulled ahead: ${err.message}`);
      return [] as string[];
    });
    const limit = pLimit(16);
    const runtimeSources = new RuntimeSources();
    const runtimeFrom = { peer: 0, registry: 0 };
    const outcomes = await Promise.all(
      o.spec.hosts.map((h) =>
        limit(async (): Promise<NodeOutcome> => {
          let host: SshHost | undefined;
          try {
            if (installed(h) && ['binaries', 'containerd-config', 'peer-cache', 'services'].every((step) => journal.isDone(h.ip, step, bundleId))) {
              return { node: h.ip, ok: true, detail: 'already installed' };
            }
            host = await SshHost.connect(h, known, { logDir: join(o.store, 'logs') });
            // Nodes already installed were not preflighted: ask them their arch directly.
            const arch = archFromUname(facts.get(h)?.arch ?? (await host.exec('uname -m')).stdout);
            // The registry's CA comes with containerd's configuration, and the binaries' downloads need it.
            if (!journal.isDone(h.ip, 'containerd-config', bundleId)) {
              o.progress.node(h.ip, 'containerd-config', 'running');
              await writeFiles(host, containerdFiles(d, registry, ca, `${o.spec.registry.domain}:${o.spec.registry.port}`));
              journal.record(h.ip, 'containerd-config', 'done', 'config.toml and hosts.toml', bundleId);
            }
            // The runtime and the agent before the binaries, which come through the agent.
            if (!journal.isDone(h.ip, 'peer-cache', bundleId)) {
              o.progress.node(h.ip, 'peer-cache', 'running');
              // The first master takes it from its own registry, off the link; the others where runtimeSources says.
              const lease = h === master ? undefined : await runtimeSources.take(arch);
              let result: PeerCacheResult | undefined;
              try {
                result = await startPeerCache(host, d, arch, registry, lease?.peer);
              } finally {
                lease?.done(result && { serves: result.servesRuntime, peerAddr: `${h.ip}:${AGENT_PORT}`, peerFailed: result.runtimeFrom === 'registry' });
              }
              if (result.runtimeFrom) runtimeFrom[result.runtimeFrom]++;
              if (result.down) {
                // Not the node's failure: its pulls go to the registry. The next run tries again.
                journal.record(h.ip, 'peer-cache', 'failed', result.down);
                o.progress.master(`warning: ${h.ip}: ${result.down}`);
              } else {
                const runtime = d.runtime?.find((r) => r.arch === arch);
                const via = result.runtimeFrom === 'peer' ? ` (from ${lease?.peer})` : '';
                journal.record(h.ip, 'peer-cache', 'done', `agent on ${h.ip}:${AGENT_PORT}${runtime ? `, acinstall ${runtime.version} for ${arch}${via}` : ''}`, bundleId);
              }
            }
            if (!journal.isDone(h.ip, 'binaries', bundleId)) {
              o.progress.node(h.ip, 'binaries', 'running', arch);
              // The journal knows which bundle's binaries the node holds: when it is the one this bundle
              // replaced, the files only that one installed go. Of an older bundle nothing is known any more.
              const replaced = previous && journal.isDone(h.ip, 'binaries', bundleIdentity(previous)) ? previous : undefined;
              const { installed, warnings } = await installBinaries(host, d, arch, registry, heldBinaries(versions.of(h), versions.wanted), replaced);
              warnings.forEach((w) => o.progress.master(w));
              journal.record(h.ip, 'binaries', 'done', installed, bundleId);
            }
            if (!journal.isDone(h.ip, 'services', bundleId)) {
              o.progress.node(h.ip, 'services', 'running');
              await writeFiles(host, serviceFiles());
              await startServices(host);
              journal.record(h.ip, 'services', 'done', 'containerd started, kubelet enabled', bundleId);
            }
            if (!journal.isDone(h.ip, 'prepull', bundleId)) {
              const refs = prepullImages(d, arch, isMaster(h), lvscare, await chartRefs);
              await startPrepull(host, refs, arch);
              journal.record(h.ip, 'prepull', 'done', `${refs.length} images pulling in the background`, bundleId);
            }
            o.progress.node(h.ip, 'runtime', 'done', 'binaries and containerd configuration in place');
            return { node: h.ip, ok: true, detail: 'binaries, containerd configuration' };
          } catch (err) {
            if (!(err instanceof AcpackError)) throw err;
            journal.record(h.ip, 'node', 'failed', err.message);
            o.progress.node(h.ip, 'runtime', 'failed', err.message);
            return { node: h.ip, ok: false, detail: err.message };
          } finally {
            host?.close();
          }
        }),
      ),
    );
    await known.save();
    if (runtimeFrom.peer + runtimeFrom.registry > 0) {
      o.progress.master(`acinstall's runtime: ${runtimeFrom.registry} node(s) took it from the registry, ${runtimeFrom.peer} from peers`);
    }
    await clusterSteps(o, d, journal, known, outcomes, lvscare, versions);
    if (helm) await chartSteps(o, d, journal, known, outcomes, helm, `${master.ip}:${o.spec.registry.port}`, bundleId);
    const kubectl = kubectlCommand(d);
    if (kubectl) await checkCluster(o, journal, known, outcomes, kubectl);
    await reportPrepull(o, known, outcomes);
    await reportPeerCache(o, site);
    await known.save();
    return outcomes;
  } finally {
    journal.close();
  }
}

/**
 * What the master sent against what the nodes took from each other, as their agents last announced
 * (every 2 s while they fetch): the peer cache working shows as the registry sending about one node's worth.
 */
async function reportPeerCache(o: FromOptions, site: SiteRegistry): Promise<void> {
  const nodes = (await peerCacheNodes(site))?.filter((n) => n.bytes);
  if (!nodes?.length) return;
  const { fromSeed: sent, fromPeers, busiest: most } = peerCacheTotals(nodes);
  const ratio = most > 0 ? ` (${(sent / most).toFixed(2)}× the ${formatBytes(most)} the busiest node took)` : '';
  o.progress.master(`peer cache: the registry sent ${formatBytes(sent)} to the nodes' agents${ratio}; they took ${formatBytes(fromPeers)} from each other (acinstall status shows each node)`);
}

/** Where each node's images pulled ahead stand, once the cluster is laid down: a line, and a warning per failure. */
async function reportPrepull(o: FromOptions, known: KnownHosts, outcomes: NodeOutcome[]): Promise<void> {
  const states = await Promise.all(
    o.spec.hosts
      .filter((h) => outcomes.find((x) => x.node === h.ip)?.ok)
      .map(async (h) => {
        const host = await SshHost.connect(h, known, { logDir: join(o.store, 'logs') }).catch(() => undefined);
        try {
          return { ip: h.ip, state: host ? await prepullState(host).catch((err: Error) => err.message) : 'not reached' };
        } finally {
          host?.close();
        }
      }),
  );
  const count = (s: string) => states.filter((x) => x.state === s).length;
  o.progress.master(`images pulled ahead: done on ${count('done')} node(s), still pulling on ${count('running')} (the kubelet waits for what is missing)`);
  for (const x of states) if (!['done', 'running', 'none'].includes(x.state)) o.progress.master(`warning: ${x.ip}: pulling images ahead: ${x.state} (the kubelet pulls them itself, through the peer cache)`);
}

/**
 * `acinstall delete -n IP,…`: every IP is checked before any node is touched (each a node of the
 * cluster, and never the first master), then each node in turn is taken back to before acinstall
 * (resetScript, as reset does for every node) and forgotten by the journal; `removed` hears the
 * cluster after each one, so an interruption loses nothing. Removing the Node object needs the API
 * server: the kubectl command is named instead.
 */
/** Every IP is a node of the cluster, and none is the first master: checked before anything is asked or touched. */
export function checkDeletable(spec: ClusterSpec, ips: string[]): void {
  const first = firstMaster(spec);
  for (const ip of ips) {
    if (!spec.hosts.some((h) => h.ip === ip)) throw new AcpackError('BAD_CLUSTER', `${ip} is not a node of this cluster`);
    if (ip === first.ip) throw new AcpackError('BAD_CLUSTER', `${ip} is the first master (it runs acinstall and the registry): deleting it deletes the cluster (acinstall reset)`);
  }
}

export async function deleteNodes(store: string, spec: ClusterSpec, ips: string[], o: { descriptor?: BundleDescriptor; previous?: BundleDescriptor; force: boolean; removed: (rest: ClusterSpec) => Promise<unknown>; log: (line: string) => void }): Promise<void> {
  checkDeletable(spec, ips);
  await withStoreLock(store, `deleting ${ips.join(', ')}`, async () => {
    const known = await KnownHosts.inStore(store);
    let rest = spec;
    try {
      for (const ip of ips) {
        const h = rest.hosts.find((x) => x.ip === ip);
        if (!h) continue; // listed twice
        try {
          const host = await SshHost.connect(h, known, { logDir: join(store, 'logs') });
          try {
            // kubelet registers the node under its hostname, lowercased; kubeadm reset leaves the Node object.
            const name = (await host.check('hostname', 'hostname')).trim().toLowerCase();
            keptWarnings(ip, await host.check(resetScript(o.descriptor, o.previous), 'kubeadm reset', 300_000)).forEach(o.log);
            o.log(`${ip}: reset and removed; its Node object stays in the API server until: kubectl delete node ${name}`);
          } finally {
            host.close();
          }
        } catch (err) {
          if (!o.force) throw new AcpackError('NODE_STEP', `${(err as Error).message}\n${ip} was not removed; if it will not come back, acinstall delete -n ${ip} --force forgets it without reaching it`);
          o.log(`${ip}: not reached (${(err as Error).message.split('\n')[0]}); forgotten by acinstall only. If it comes back, it still runs a kubelet of this cluster: run kubeadm reset -f on it. Remove it from the API server with kubectl delete node <its name>`);
        }
        const journal = new Journal(store);
        journal.forget(ip);
        journal.close();
        rest = { ...rest, hosts: rest.hosts.filter((x) => x !== h) };
        await o.removed(rest);
      }
    } finally {
      await known.save();
    }
  });
}
