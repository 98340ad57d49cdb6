import type { BundleDescriptor } from '../oci/bundle-format.js';
import { AcpackError } from '../oci/errors.js';
import { HELD_DURING_UPGRADE, shq, STAGED } from './node-setup.js';
import type { SshHost } from './ssh.js';
import { failedRun } from './failed-run.js';

/**
 * Upgrading Kubernetes with a newer bundle, the way kubeadm documents it: the first master runs
 * `kubeadm upgrade apply`, then every other master and then every worker runs `kubeadm upgrade node`,
 * and only after its own upgrade does a node's kubelet get its new binary and a restart. Nodes are
 * not drained (that needs the API server; kubelet restarts keep pods running).
 */
export interface Upgrade {
  from: string;
  to: string;
}

const VERSION_RE = /^v(\d+)\.(\d+)\.(\d+)$/;

/**
 * The upgrade from `installed` (the cluster's version, from the journal) to what the bundle carries,
 * or undefined when they are the same. Refused like kubeadm would: no downgrade, one minor at a time.
 */
export function planUpgrade(installed: string | undefined, wanted: string, bundle: string): Upgrade | undefined {
  if (installed === undefined || installed === wanted) return undefined;
  const a = VERSION_RE.exec(installed);
  const b = VERSION_RE.exec(wanted);
  const refuse = (why: string) =>
    new AcpackError('UPGRADE_REFUSED', `this cluster runs Kubernetes ${installed} and ${bundle} carries ${wanted}: ${why}; nothing was changed on the nodes`);
  if (!a || !b) throw refuse('only versions like v1.22.15 can be compared');
  const [ma, mi, pa] = a.slice(1).map(Number);
  const [mb, mj, pb] = b.slice(1).map(Number);
  if (mb !== ma || mj < mi || (mj === mi && pb < pa)) throw refuse('Kubernetes is never downgraded');
  if (mj > mi + 1) throw refuse(`kubeadm upgrades one minor version at a time: install a v${ma}.${mi + 1} bundle first`);
  return { from: installed, to: wanted };
}

/** Which binaries a node gets staged rather than swapped in: all of them are current unless it upgrades. */
export function heldBinaries(nodeVersion: string | undefined, wanted: string): Set<string> {
  return nodeVersion !== undefined && nodeVersion !== wanted ? HELD_DURING_UPGRADE : new Set();
}


const UPGRADE_TIMEOUT = 900_000;

/**
 * `kubeadm upgrade apply` (the first master) or `kubeadm upgrade node` (the others), detached from
 * the SSH session (SshHost.runDetached): a dropped connection or a killed acinstall does not cut it
 * off with the control plane's manifests half rewritten. One run per node and target version: a
 * re-run waits for one still going and takes one that finished well as done (`resumed`); one that
 * failed or died with its node is run again, which is how kubeadm's documentation recovers from a
 * failed upgrade. (`acinstall reset` and `delete` remove the runs with the node's state, so a run
 * found here belongs to this cluster.)
 */
export async function kubeadmUpgrade(host: SshHost, to: string, first: boolean): Promise<{ resumed: boolean }> {
  const what = first ? `kubeadm upgrade apply ${to}` : 'kubeadm upgrade node';
  const id = `kubeadm-upgrade-${to.toLowerCase().replace(/[^a-z0-9.-]/g, '-')}`;
  const earlier = await host.detachedRun(id, UPGRADE_TIMEOUT);
  if (earlier.state === 'running') throw new AcpackError('NODE_STEP', `${host.spec.ip}: the ${what} of an earlier run is still going after ${UPGRADE_TIMEOUT / 60_000} minutes: run again later`);
  if (earlier.state === 'finished' && earlier.code === 0) return { resumed: true };
  const run = await host.runDetached(id, first ? `kubeadm upgrade apply ${shq(to)} -y` : 'kubeadm upgrade node', UPGRADE_TIMEOUT);
  if (run.state === 'finished' && run.code === 0) return { resumed: false };
  throw failedRun(host.spec.ip, what, run);
}

/** Swaps in the staged kubelet (and any other held binary) and restarts kubelet. */
export async function releaseHeldBinaries(host: SshHost, d: BundleDescriptor, arch: string): Promise<void> {
  const held = d.binaries.filter((b) => b.arch === arch && b.install && HELD_DURING_UPGRADE.has(b.name));
  if (held.length === 0) return;
  const swaps = held.map((b) => `if [ -f ${shq(`${b.install}${STAGED}`)} ]; then mv -f -T ${shq(`${b.install}${STAGED}`)} ${shq(b.install!)}; fi`);
  await host.check(['set -e', ...swaps, 'systemctl daemon-reload', 'systemctl restart kubelet'].join('\n'), 'swapping in the new kubelet');
}

/**
 * Release order of two version strings: runs of digits compare as numbers, the rest as text, so
 * that v1.22.15-aliyun.10 comes after -aliyun.9; a version that extends another (v1.22.15-aliyun.1
 * over v1.22.15, ACK Distro's rebuilds) comes after it.
 */
export function compareVersions(a: string, b: string): number {
  const pa = a.match(/\d+|\D+/g) ?? [];
  const pb = b.match(/\d+|\D+/g) ?? [];
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    if (pa[i] === undefined) return -1;
    if (pb[i] === undefined) return 1;
    const numbers = /^\d/.test(pa[i]) && /^\d/.test(pb[i]);
    const c = numbers ? Number(pa[i]) - Number(pb[i]) : pa[i] < pb[i] ? -1 : pa[i] > pb[i] ? 1 : 0;
    if (c !== 0) return Math.sign(c);
  }
  return 0;
}

/**
 * An older release of the installed bundle over it is refused unless `allowDowngrade`: its binaries
 * and images would replace newer ones on every node. The Kubernetes version comes first: a bundle
 * of another Kubernetes version is an upgrade or a refused downgrade (planUpgrade), whatever its
 * own version says.
 */
export function checkBundleOrder(installed: { name: string; version: string; kubernetes: string }, next: { name: string; version: string; kubernetes: string }, allowDowngrade: boolean): void {
  if (allowDowngrade || installed.name !== next.name || installed.kubernetes !== next.kubernetes) return;
  if (compareVersions(next.version, installed.version) >= 0) return;
  throw new AcpackError('DOWNGRADE', `${next.name} ${next.version} is older than ${installed.name} ${installed.version}, which this cluster runs: add --allow-downgrade to install it anyway (Kubernetes itself is never downgraded); nothing was changed`);
}
