import pLimit from 'p-limit';
import { join } from 'node:path';
import { archFromUname } from '../arch/platform.js';
import type { BundleDescriptor } from '../oci/bundle-format.js';
import { AcpackError, plural } from '../oci/errors.js';
import { firstMaster, isMaster, type ClusterSpec, type HostSpec } from './cluster-spec.js';
import type { FromOptions, NodeOutcome } from './from.js';
import type { Journal } from './journal.js';
import { KnownHosts, SshHost } from './ssh.js';
import { API_SERVER_NAME, apiServerAddress, controlPlaneEndpoint, pointApiServer, settleApiServer } from './control-plane.js';
import { checkKubeadmImages, joinInfoFrom, kubeadmConfig, kubeadmInit, kubeadmJoin, kubernetesVersion, uploadCerts, type JoinInfo } from './kubeadm.js';
import { addonsFromCharts, skippedPhases } from './kubeadm-config.js';
import { kubeadmUpgrade, planUpgrade, releaseHeldBinaries } from './upgrade.js';
import { chartOrder, installChart } from './charts.js';
import { postCheck } from './post-check.js';

// The cluster-wide steps of `acinstall from`, after every node has its runtime: kubeadm (init,
// upgrades, joins), then the charts and the post-check on the first master.

/** In the cluster already: kubeadm init (the first master) or join done. */
export function isInstalled(journal: Journal, spec: ClusterSpec, h: HostSpec): boolean {
  return journal.isDone(h.ip, h === firstMaster(spec) ? 'kubeadm-init' : 'kubeadm-join');
}

export interface Versions {
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
export function nodeVersions(journal: Journal, spec: ClusterSpec, d: BundleDescriptor): Versions {
  const wanted = kubernetesVersion(d);
  const cluster = journal.doneDetail(firstMaster(spec).ip, 'kubernetes');
  const installed = (h: HostSpec) => isInstalled(journal, spec, h);
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
export async function clusterSteps(o: FromOptions, d: BundleDescriptor, journal: Journal, known: KnownHosts, outcomes: NodeOutcome[], lvscare: string | undefined, versions: Versions): Promise<void> {
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
  let host: SshHost | undefined;
  const initPending = !journal.isDone(first.ip, 'kubeadm-init');
  const connectFirst = () => SshHost.connect(first, known, { logDir: join(o.store, 'logs') });
  try {
    host = await connectFirst();
    const config = kubeadmConfig(o.spec, d);
    // The bundle's own kubeadm says which images this configuration needs; a bundle without one
    // of them is refused (BAD_BUNDLE, thrown on) before any kubeadm step runs on any node.
    if (initPending || pending.length) await checkKubeadmImages(host, d, config);
    if (!journal.isDone(first.ip, 'api-endpoint')) settled(first, await settleApiServer(host, o.spec, first, lvscare));
    if (initPending) {
      o.progress.node(first.ip, 'kubeadm init', 'running');
      // Addons the bundle's charts install are left to them: helm refuses objects it did not create.
      const init = await kubeadmInit(host, config, skippedPhases(await addonsFromCharts(o.store, d, o.spec.network.cni)));
      joinInfo = init.join;
      const detail = `control plane at ${controlPlaneEndpoint()}${init.resumed ? ' (init had finished unobserved in an earlier run)' : ''}`;
      journal.record(first.ip, 'kubeadm-init', 'done', detail);
      journal.record(first.ip, 'kubernetes', 'done', versions.wanted);
      o.progress.node(first.ip, 'kubeadm init', 'done', detail);
    }
    if (pending.length && !joinInfo) joinInfo = await joinInfoFrom(host);
  } catch (err) {
    if (err instanceof AcpackError && err.code === 'BAD_BUNDLE') throw err;
    fail(first.ip, err);
    for (const h of pending) if (byIp.get(h.ip)!.ok) fail(h.ip, new AcpackError('NODE_STEP', `waiting for the first master ${first.ip}`));
    return;
  } finally {
    host?.close();
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
        const { resumed } = await kubeadmUpgrade(node, versions.wanted, h === first);
        journal.record(h.ip, 'kubeadm-upgrade', 'done', `${from} → ${versions.wanted}${resumed ? ' (the upgrade had finished unobserved in an earlier run)' : ''}`, versions.wanted);
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
  // Workers a few at a time (--max-unavailable, default 1), as a rolling upgrade goes: each is out while
  // its kubelet restarts. After a failure no other worker starts: they wait for the next run.
  const rolling = pLimit(o.maxUnavailable ?? 1);
  let broken: string | undefined;
  await Promise.all(
    workers.map((w) =>
      rolling(async () => {
        if (broken && versions.of(w) !== versions.wanted && byIp.get(w.ip)!.ok) return fail(w.ip, new AcpackError('NODE_STEP', `waiting: the upgrade of worker ${broken} failed`));
        await upgradeOne(w).catch((err) => {
          broken ??= w.ip;
          fail(w.ip, err);
        });
      }),
    ),
  );

  const joinOne = async (h: HostSpec, controlPlane: boolean) => {
    const joined = journal.isDone(h.ip, 'kubeadm-join');
    if ((joined && journal.isDone(h.ip, 'api-endpoint')) || !byIp.get(h.ip)!.ok) return;
    const node = await SshHost.connect(h, known, { logDir: join(o.store, 'logs') });
    try {
      if (!joined) {
        o.progress.node(h.ip, 'kubeadm join', 'running', controlPlane ? 'control plane' : 'worker');
        await pointApiServer(node, apiServerAddress(o.spec, h, false));
        // A master's certificates are uploaded just before it joins (their Secret lives two hours).
        const key = controlPlane ? () => connectFirst().then((f) => uploadCerts(f).finally(() => f.close())) : undefined;
        const r = await kubeadmJoin(node, h, joinInfo!, key);
        const detail = `${controlPlane ? 'control plane' : 'worker'}${r.resumed ? ' (the join had finished unobserved in an earlier run)' : ''}`;
        journal.record(h.ip, 'kubeadm-join', 'done', detail);
        journal.record(h.ip, 'kubernetes', 'done', versions.wanted);
        o.progress.node(h.ip, 'kubeadm join', 'done', detail);
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
export async function chartSteps(o: FromOptions, d: BundleDescriptor, journal: Journal, known: KnownHosts, outcomes: NodeOutcome[], helm: string, registryHost: string, bundleId: string): Promise<void> {
  const first = firstMaster(o.spec);
  const todo = chartOrder(d, o.spec.network.cni).filter((c) => !journal.isDone(first.ip, `chart ${c.name}`, bundleId));
  if (!outcomes.find((x) => x.node === first.ip)!.ok || !journal.isDone(first.ip, 'kubeadm-init') || todo.length === 0) return;
  await onFirstMaster(o, journal, known, outcomes, 'charts', async (host) => {
    for (const chart of todo) {
      o.progress.node(first.ip, 'charts', 'running', `${chart.name} ${chart.version}`);
      await installChart(host, helm, registryHost, chart);
      journal.record(first.ip, `chart ${chart.name}`, 'done', chart.version, bundleId);
    }
    return todo.map((c) => c.name).join(', ');
  });
}

/** Last, on the first master: every node Ready, every kube-system pod running (see post-check.ts). */
export async function checkCluster(o: FromOptions, journal: Journal, known: KnownHosts, outcomes: NodeOutcome[], kubectl: string): Promise<void> {
  if (outcomes.some((x) => !x.ok)) return; // the re-run checks, once every node is in
  await onFirstMaster(o, journal, known, outcomes, 'post-check', async (host) => {
    const r = await postCheck(host, o.spec, kubectl);
    return `${plural(r.nodes, 'node')} Ready, ${plural(r.pods, 'kube-system pod')} running`;
  });
}

/** A cluster-wide step run on the first master: journaled, shown, and a failure is the first master's outcome. */
async function onFirstMaster(o: FromOptions, journal: Journal, known: KnownHosts, outcomes: NodeOutcome[], step: string, work: (host: SshHost) => Promise<string>): Promise<void> {
  const first = firstMaster(o.spec);
  let host: SshHost | undefined;
  try {
    host = await SshHost.connect(first, known, { logDir: join(o.store, 'logs') });
    o.progress.node(first.ip, step, 'running');
    const detail = await work(host);
    journal.record(first.ip, step, 'done', detail);
    o.progress.node(first.ip, step, 'done', detail);
  } catch (err) {
    if (!(err instanceof AcpackError)) throw err;
    journal.record(first.ip, step, 'failed', err.message);
    o.progress.node(first.ip, step, 'failed', err.message);
    Object.assign(outcomes.find((x) => x.node === first.ip)!, { ok: false, detail: err.message });
  } finally {
    host?.close();
  }
}
