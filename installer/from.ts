import { mkdir } from 'node:fs/promises';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import pLimit from 'p-limit';
import { archFromUname } from '../arch/platform.js';
import { AcpackError } from '../oci/errors.js';
import { readDescriptor } from '../oci/bundle-reader.js';
import { ensureTls, importBundle } from '../registry/index.js';
import { isMaster, type ClusterSpec } from './cluster-spec.js';
import { Journal } from './journal.js';
import { saveClusterState } from './cluster-state.js';
import type { InstallProgress } from './progress-board.js';
import { KnownHosts, SshHost } from './ssh.js';
import { ensureRegistry } from './registry-service.js';
import { heldBinaries, kubeadmUpgrade, planUpgrade, releaseHeldBinaries } from './upgrade.js';
import { withStoreLock } from './store-lock.js';
import { chartOrder, helmCommand, installChart } from './charts.js';
import { kubectlCommand, postCheck } from './post-check.js';
import { API_SERVER_NAME, apiServerAddress, lvscareImage, pointApiServer, settleApiServer } from './control-plane.js';
import { preflightError, type Facts } from './preflight.js';
import { runPreflight } from './run-preflight.js';
import { containerdFiles, installBinaries, serviceFiles, startServices, writeFiles } from './node-setup.js';
import { joinInfoFrom, kubeadmConfig, kubeadmInit, kubeadmJoin, kubernetesVersion, type JoinInfo } from './kubeadm.js';
import type { BundleDescriptor } from '../oci/bundle-format.js';
import type { HostSpec } from './cluster-spec.js';

export interface FromOptions {
  /** A bundle file to import, or the descriptor of one already imported (join, from the cluster state). */
  bundle: string | { file: string; descriptor: BundleDescriptor };
  spec: ClusterSpec;
  store: string;
  ignore: string[];
  progress: InstallProgress;
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
  await mkdir(o.store, { recursive: true });
  const file = typeof o.bundle === 'string' ? o.bundle : o.bundle.file;
  return withStoreLock(o.store, `installing ${file}`, () => install(o));
}

/** The registry runs here and nodes fetch from the first master's address: they must be one machine. */
function assertOnFirstMaster(ip: string): void {
  const mine = Object.values(networkInterfaces()).flatMap((list) => list ?? []);
  if (mine.some((a) => a.address === ip)) return;
  const shown = mine.filter((a) => !a.internal && !a.address.startsWith('fe80:')).map((a) => a.address).join(', ') || 'only loopback';
  throw new AcpackError('NOT_FIRST_MASTER', `acinstall runs on the first master (${ip}, the first of the masters), and this machine is not it (its addresses: ${shown}): run it on ${ip}`);
}

async function install(o: FromOptions): Promise<NodeOutcome[]> {
  assertOnFirstMaster(o.spec.hosts.find(isMaster)!.ip);
  const journal = new Journal(o.store);
  try {
    const d = typeof o.bundle === 'string' ? await readDescriptor(o.bundle) : o.bundle.descriptor;
    const lvscare = lvscareImage(o.spec, d);
    const helm = helmCommand(d, o.spec.network.cni);
    const versions = nodeVersions(journal, o.spec, d);
    // Steps that depend on the bundle's content are redone when a different bundle is installed.
    const bundleId = `${d.name} ${d.version} ${d.source}`;
    const master = o.spec.hosts.find(isMaster)!;
    // The registry speaks TLS with the site CA (made once, kept in the store); nodes get the CA.
    const tls = await ensureTls(o.store, { hostnames: [o.spec.registry.domain], ips: [master.ip] });
    const registry = `https://${master.ip}:${o.spec.registry.port}`;

    // Importing, starting the registry and checking the nodes overlap: none needs another's result.
    const importing = async () => {
      if (typeof o.bundle !== 'string') return;
      o.progress.master(`importing ${d.name} ${d.version}`);
      const imported = await importBundle(o.bundle, o.store);
      journal.record(master.ip, 'import', 'done', `${d.name} ${d.version}: ${imported.added} new blobs`);
    };
    const serving = async () => {
      const tlsArgs = ['--tls', 'auto', '--ip', master.ip, '--hostname', o.spec.registry.domain];
      const how = await ensureRegistry({ store: o.store, listen: `0.0.0.0:${o.spec.registry.port}`, url: registry, ca: tls.ca, tlsArgs });
      journal.record(master.ip, 'registry', 'done', `${registry}, ${how}`);
      o.progress.master(`registry serving on ${registry} (${how})`);
    };
    // Nodes already in the cluster are not checked again: their own kubelet and API server hold
    // the very ports a fresh node must have free.
    const first = master;
    const installed = (h: HostSpec) => journal.isDone(h.ip, h === first ? 'kubeadm-init' : 'kubeadm-join');
    const toCheck = o.spec.hosts.filter((h) => !installed(h));
    const known = await KnownHosts.inStore(o.store);
    let facts = new Map<HostSpec, Facts>();
    const checking = async () => {
      const arches = d.platforms.map((p) => p.split('/')[1]);
      if (toCheck.length) {
        // The registry's port is not checked: it is ours, starting at the same time.
        const r = await runPreflight({ spec: { ...o.spec, hosts: toCheck }, arches, stateDir: o.store, known, ignore: o.ignore, registryRunning: true });
        if (r.failures.length) throw preflightError(r.failures);
        facts = r.facts;
      }
      o.progress.master(`preflight passed on ${toCheck.length} node${toCheck.length === 1 ? '' : 's'}${toCheck.length < o.spec.hosts.length ? ` (${o.spec.hosts.length - toCheck.length} already installed)` : ''}`);
    };
    const settled = await Promise.allSettled([importing(), serving(), checking()]);
    // The bundle's own error first: a failed check matters only for a bundle that imports.
    for (const r of settled) if (r.status === 'rejected') throw r.reason;
    await saveClusterState(o.store, typeof o.bundle === 'string' ? o.bundle : o.bundle.file, d, o.spec);

    const limit = pLimit(16);
    const outcomes = await Promise.all(
      o.spec.hosts.map((h) =>
        limit(async (): Promise<NodeOutcome> => {
          let host: SshHost | undefined;
          try {
            if (installed(h) && ['binaries', 'containerd-config', 'services'].every((step) => journal.isDone(h.ip, step, bundleId))) {
              return { node: h.ip, ok: true, detail: 'already installed' };
            }
            host = await SshHost.connect(h, known, { logDir: join(o.store, 'logs') });
            // Nodes already installed were not preflighted: ask them their arch directly.
            const arch = archFromUname(facts.get(h)?.arch ?? (await host.exec('uname -m')).stdout);
            // The registry's CA comes with containerd's configuration, and the binaries' downloads need it.
            if (!journal.isDone(h.ip, 'containerd-config', bundleId)) {
              o.progress.node(h.ip, 'containerd-config', 'running');
              await writeFiles(host, containerdFiles(d, registry, tls.ca, `${o.spec.registry.domain}:${o.spec.registry.port}`));
              journal.record(h.ip, 'containerd-config', 'done', 'config.toml and hosts.toml', bundleId);
            }
            if (!journal.isDone(h.ip, 'binaries', bundleId)) {
              o.progress.node(h.ip, 'binaries', 'running', arch);
              const n = await installBinaries(host, d, arch, registry, heldBinaries(versions.of(h), versions.wanted));
              journal.record(h.ip, 'binaries', 'done', `${n} binaries for ${arch}`, bundleId);
            }
            if (!journal.isDone(h.ip, 'services', bundleId)) {
              o.progress.node(h.ip, 'services', 'running');
              await writeFiles(host, serviceFiles());
              await startServices(host);
              journal.record(h.ip, 'services', 'done', 'containerd started, kubelet enabled', bundleId);
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
    await clusterSteps(o, d, journal, known, outcomes, lvscare, versions);
    if (helm) await chartSteps(o, d, journal, known, outcomes, helm, `${master.ip}:${o.spec.registry.port}`, bundleId);
    const kubectl = kubectlCommand(d);
    if (kubectl) await checkCluster(o, journal, known, outcomes, kubectl);
    await known.save();
    return outcomes;
  } finally {
    journal.close();
  }
}

interface Versions {
  /** The Kubernetes version the bundle installs. */
  wanted: string;
  /** The version a node runs, undefined when it is not in the cluster yet. */
  of(h: HostSpec): string | undefined;
}

/**
 * Which Kubernetes version each installed node runs (the journal records it at init, join and
 * upgrade), checked against the bundle's before anything changes: an upgrade kubeadm would refuse
 * (a downgrade, a skipped minor) is refused here, with no node touched.
 */
function nodeVersions(journal: Journal, spec: ClusterSpec, d: BundleDescriptor): Versions {
  const wanted = kubernetesVersion(d) ?? 'kubeadm default';
  const first = spec.hosts.find(isMaster)!;
  const cluster = journal.doneDetail(first.ip, 'kubernetes');
  const installed = (h: HostSpec) => journal.isDone(h.ip, h === first ? 'kubeadm-init' : 'kubeadm-join');
  const of = (h: HostSpec) => (installed(h) ? journal.doneDetail(h.ip, 'kubernetes') : undefined);
  for (const h of spec.hosts) {
    // Nodes joined before versions were kept per node run the cluster's.
    if (installed(h) && of(h) === undefined && cluster !== undefined) journal.record(h.ip, 'kubernetes', 'done', cluster);
    planUpgrade(of(h), wanted, `${d.name} ${d.version}`);
  }
  return { wanted, of };
}

/**
 * kubeadm: init on the first master; upgrades of installed nodes (see upgrade.ts); the other masters
 * joined one at a time (etcd grows one member at a time), the workers in parallel. A node whose
 * earlier steps failed is left for the re-run.
 */
async function clusterSteps(o: FromOptions, d: BundleDescriptor, journal: Journal, known: KnownHosts, outcomes: NodeOutcome[], lvscare: string | undefined, versions: Versions): Promise<void> {
  const byIp = new Map(outcomes.map((x) => [x.node, x]));
  const fail = (ip: string, err: unknown) => {
    const message = err instanceof Error ? err.message : String(err);
    journal.record(ip, 'kubeadm', 'failed', message);
    o.progress.node(ip, 'kubeadm', 'failed', message);
    Object.assign(byIp.get(ip)!, { ok: false, detail: message });
  };
  const [first, ...otherMasters] = o.spec.hosts.filter(isMaster);
  const workers = o.spec.hosts.filter((h) => !isMaster(h));
  const pending = o.spec.hosts.filter((h) => h !== first && !journal.isDone(h.ip, 'kubeadm-join'));
  const settled = (h: HostSpec, address: string) => journal.record(h.ip, 'api-endpoint', 'done', `${API_SERVER_NAME} is ${address}`);
  if (!byIp.get(first.ip)!.ok) {
    for (const h of pending) if (byIp.get(h.ip)!.ok) fail(h.ip, new AcpackError('NODE_STEP', `waiting for the first master ${first.ip}`));
    return;
  }
  let joinInfo: JoinInfo | undefined;
  const host = await SshHost.connect(first, known, { logDir: join(o.store, 'logs') });
  try {
    if (!journal.isDone(first.ip, 'api-endpoint')) settled(first, await settleApiServer(host, o.spec, first, lvscare));
    if (!journal.isDone(first.ip, 'kubeadm-init')) {
      o.progress.node(first.ip, 'kubeadm init', 'running');
      joinInfo = await kubeadmInit(host, kubeadmConfig(o.spec, d));
      journal.record(first.ip, 'kubeadm-init', 'done', `control plane at ${joinInfo.endpoint}`);
      journal.record(first.ip, 'kubernetes', 'done', versions.wanted);
      o.progress.node(first.ip, 'kubeadm init', 'done', joinInfo.endpoint);
    }
    if (pending.length && !joinInfo) joinInfo = await joinInfoFrom(host);
  } catch (err) {
    fail(first.ip, err);
    return;
  } finally {
    host.close();
  }
  // Upgrades before joins: a new node joins the upgraded control plane. Masters one at a time, the
  // first with `upgrade apply`; workers only once every master is done (no kubelet ahead of an API server).
  const upgradeOne = async (h: HostSpec) => {
    const from = versions.of(h);
    if (from === undefined || from === versions.wanted || !byIp.get(h.ip)!.ok) return;
    const node = await SshHost.connect(h, known, { logDir: join(o.store, 'logs') });
    try {
      if (!journal.isDone(h.ip, 'kubeadm-upgrade', versions.wanted)) {
        o.progress.node(h.ip, 'kubeadm upgrade', 'running', `${from} → ${versions.wanted}`);
        await kubeadmUpgrade(node, versions.wanted, h === first);
        journal.record(h.ip, 'kubeadm-upgrade', 'done', `${from} → ${versions.wanted}`, versions.wanted);
      }
      await releaseHeldBinaries(node, d, archFromUname((await node.exec('uname -m')).stdout));
      journal.record(h.ip, 'kubernetes', 'done', versions.wanted);
      o.progress.node(h.ip, 'kubeadm upgrade', 'done', versions.wanted);
    } finally {
      node.close();
    }
  };
  for (const m of [first, ...otherMasters]) {
    try {
      await upgradeOne(m);
    } catch (err) {
      fail(m.ip, err);
      // Every node still to upgrade or to join waits for the next run.
      const waiting = o.spec.hosts.filter((h) => h !== m && byIp.get(h.ip)!.ok && versions.of(h) !== versions.wanted);
      for (const h of waiting) fail(h.ip, new AcpackError('NODE_STEP', `waiting for the control plane's upgrade to ${versions.wanted} (${m.ip} failed)`));
      return;
    }
  }
  await Promise.all(workers.map((w) => upgradeOne(w).catch((err) => fail(w.ip, err))));

  const joinOne = async (h: HostSpec, controlPlane: boolean) => {
    const joined = journal.isDone(h.ip, 'kubeadm-join');
    if ((joined && journal.isDone(h.ip, 'api-endpoint')) || !byIp.get(h.ip)!.ok) return;
    const node = await SshHost.connect(h, known, { logDir: join(o.store, 'logs') });
    try {
      if (!joined) {
        o.progress.node(h.ip, 'kubeadm join', 'running', controlPlane ? 'control plane' : 'worker');
        await pointApiServer(node, apiServerAddress(o.spec, h, false));
        await kubeadmJoin(node, joinInfo!, controlPlane);
        journal.record(h.ip, 'kubeadm-join', 'done', controlPlane ? 'control plane' : 'worker');
        journal.record(h.ip, 'kubernetes', 'done', versions.wanted);
        o.progress.node(h.ip, 'kubeadm join', 'done', controlPlane ? 'control plane' : 'worker');
      }
      settled(h, await settleApiServer(node, o.spec, h, lvscare));
    } finally {
      node.close();
    }
  };
  for (const m of otherMasters) {
    try {
      await joinOne(m, true);
    } catch (err) {
      fail(m.ip, err);
      break; // the next master would join a control plane that is not healthy
    }
  }
  await Promise.all(workers.map((w) => joinOne(w, false).catch((err) => fail(w.ip, err))));
}

/**
 * The bundle's charts, on the first master once the cluster is up: the CNI first, then the manifest's
 * order, one at a time (each may need the one before); the first failure stops the rest, which the
 * re-run installs. Charts count as the first master's work in the outcome.
 */
async function chartSteps(o: FromOptions, d: BundleDescriptor, journal: Journal, known: KnownHosts, outcomes: NodeOutcome[], helm: string, registryHost: string, bundleId: string): Promise<void> {
  const first = o.spec.hosts.find(isMaster)!;
  const outcome = outcomes.find((x) => x.node === first.ip)!;
  const todo = chartOrder(d, o.spec.network.cni).filter((c) => !journal.isDone(first.ip, `chart ${c.name}`, bundleId));
  if (!outcome.ok || !journal.isDone(first.ip, 'kubeadm-init') || todo.length === 0) return;
  const host = await SshHost.connect(first, known, { logDir: join(o.store, 'logs') });
  try {
    for (const chart of todo) {
      o.progress.node(first.ip, 'charts', 'running', `${chart.name} ${chart.version}`);
      await installChart(host, helm, registryHost, chart);
      journal.record(first.ip, `chart ${chart.name}`, 'done', chart.version, bundleId);
    }
    o.progress.node(first.ip, 'charts', 'done', todo.map((c) => c.name).join(', '));
  } catch (err) {
    if (!(err instanceof AcpackError)) throw err;
    journal.record(first.ip, 'charts', 'failed', err.message);
    o.progress.node(first.ip, 'charts', 'failed', err.message);
    Object.assign(outcome, { ok: false, detail: err.message });
  } finally {
    host.close();
  }
}

/** Last, on the first master: every node Ready, every kube-system pod running (see post-check.ts). */
async function checkCluster(o: FromOptions, journal: Journal, known: KnownHosts, outcomes: NodeOutcome[], kubectl: string): Promise<void> {
  const first = o.spec.hosts.find(isMaster)!;
  if (outcomes.some((x) => !x.ok)) return; // the re-run checks, once every node is in
  const host = await SshHost.connect(first, known, { logDir: join(o.store, 'logs') });
  try {
    o.progress.node(first.ip, 'post-check', 'running');
    const r = await postCheck(host, o.spec, kubectl);
    const detail = `${r.nodes} nodes Ready, ${r.pods} kube-system pods running`;
    journal.record(first.ip, 'post-check', 'done', detail);
    o.progress.node(first.ip, 'post-check', 'done', detail);
  } catch (err) {
    if (!(err instanceof AcpackError)) throw err;
    journal.record(first.ip, 'post-check', 'failed', err.message);
    o.progress.node(first.ip, 'post-check', 'failed', err.message);
    Object.assign(outcomes.find((x) => x.node === first.ip)!, { ok: false, detail: err.message });
  } finally {
    host.close();
  }
}

/**
 * `acinstall delete -n IP`: kubeadm reset and clean-up on the node, then it is forgotten by the
 * journal and the cluster state. (Removing the Node object needs the API server: next slice.)
 */
export async function deleteNode(store: string, spec: ClusterSpec, ip: string, log: (line: string) => void): Promise<void> {
  return withStoreLock(store, `deleting ${ip}`, () => resetNode(store, spec, ip, log));
}

async function resetNode(store: string, spec: ClusterSpec, ip: string, log: (line: string) => void): Promise<void> {
  const h = spec.hosts.find((x) => x.ip === ip);
  if (!h) throw new AcpackError('BAD_CLUSTER', `${ip} is not a node of this cluster`);
  if (spec.hosts.filter(isMaster).length === 1 && isMaster(h)) throw new AcpackError('BAD_CLUSTER', `${ip} is the only master: deleting it deletes the cluster`);
  const known = await KnownHosts.inStore(store);
  const host = await SshHost.connect(h, known, { logDir: join(store, 'logs') });
  try {
    const r = await host.exec('kubeadm reset -f && rm -rf /etc/kubernetes /etc/containerd/certs.d /var/lib/kubelet /etc/cni/net.d', 300_000);
    if (r.code !== 0) throw new AcpackError('NODE_STEP', `${ip}: kubeadm reset failed: ${r.stderr.trim().slice(-300)}`);
    await pointApiServer(host, undefined);
  } finally {
    host.close();
  }
  const journal = new Journal(store);
  journal.forget(ip);
  journal.close();
  log(`${ip}: reset and removed`);
}
