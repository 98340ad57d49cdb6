import { PREPULL_DIR, prepullRunning } from './prepull.js';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { AcpackError, plural } from '../oci/errors.js';
import type { BundleDescriptor } from '../oci/bundle-format.js';
import { firstMaster, isMaster, type ClusterSpec } from './cluster-spec.js';
import { hostsEntryScript } from './control-plane.js';
import { KUBEADM_RESET } from './kubeadm.js';
import { CHART_DIR } from './charts.js';
import { installedFiles, keptWarnings, NODE_CA, NODE_RUNTIME, removeIfOurs, RUNS_DIR, serviceFiles, shq, STAGED } from './node-setup.js';
import { KnownHosts, SshHost } from './ssh.js';
import { AGENT_DIR, AGENT_UNIT } from './peer-cache.js';
import { stopRegistry } from './registry-service.js';
import { withStoreLock } from './store-lock.js';
import { Journal } from './journal.js';

/**
 * The shell that takes a node back to before acinstall (reset, and delete of one node): kubeadm reset (the control plane, etcd's
 * data, the kubelet's state), the kubelet stopped and its unit gone, the files acinstall wrote
 * (containerd's configuration and hosts.toml, the site CA, kernel settings, the runs (the images pulled ahead stopped) and charts on
 * the node, acinstall's runtime and the peer cache agent with its cache, the apiserver.cluster.local line), and the bundle's binaries where they are still the
 * bundle's bytes (a file changed since is someone else's now). containerd is started again on its
 * own defaults where its binary stays (the distribution's), and disabled where it was the bundle's.
 * Never the store: on the first master it lives under /var/lib/acpack too.
 */
export function resetScript(d: BundleDescriptor | undefined, previous?: BundleDescriptor): string {
  return [
    'set -e',
    `if command -v kubeadm >/dev/null; then ${KUBEADM_RESET}; fi`,
    'systemctl disable --now kubelet 2>/dev/null || true',
    'systemctl disable --now acpack-agent 2>/dev/null || true',
    // The images pulled ahead, if still pulling: its session (setsid made its PID the group's).
    `if ${prepullRunning()}; then kill -- -"$(cat ${PREPULL_DIR}/pid)" 2>/dev/null || true; fi`,
    'systemctl stop containerd 2>/dev/null || true',
    `rm -rf /etc/kubernetes /var/lib/kubelet /var/lib/etcd /etc/cni/net.d /etc/containerd/certs.d /etc/containerd/config.toml ${shq(NODE_CA.slice(0, NODE_CA.lastIndexOf('/')))} ${RUNS_DIR} ${CHART_DIR} ${shq(NODE_RUNTIME.slice(0, NODE_RUNTIME.lastIndexOf('/')))} ${AGENT_UNIT} ${AGENT_DIR}`,
    `rm -rf ${Object.keys(serviceFiles()).map(shq).join(' ')}`,
    // Any arch's: the node's own is not asked for.
    ...removeIfOurs(ourFiles(d, previous)),
    'systemctl daemon-reload 2>/dev/null || true',
    'if command -v containerd >/dev/null; then systemctl start containerd; else systemctl disable containerd 2>/dev/null || true; fi',
    hostsEntryScript(undefined),
  ].join('\n');
}

/**
 * What a node may hold of acinstall's binaries, with the sha256 of the bytes each was: every path the
 * installed bundle names, and the one it replaced (an upgrade cut off before every node had the new
 * bundle's binaries leaves some with the old ones, which are no less acinstall's), and a binary
 * staged for an upgrade that did not reach its swap (`STAGED`, the new bundle's bytes).
 */
export function ourFiles(d: BundleDescriptor | undefined, previous: BundleDescriptor | undefined): Map<string, Set<string>> {
  const files = installedFiles(d);
  for (const [path, shas] of installedFiles(previous)) files.set(path, new Set([...(files.get(path) ?? []), ...shas]));
  for (const [path, shas] of installedFiles(d)) files.set(`${path}${STAGED}`, shas);
  return files;
}

/**
 * `acinstall reset`: every node reset (workers first, the first master last, one at a time so that
 * a failure leaves a cluster that still says which nodes are left), the registry stopped, and the
 * install's state (journal, cluster) removed from the store; its content too with `purgeStore`. A
 * node that cannot be reached fails the reset, and stays in the state for the next try.
 */
export async function resetCluster(
  store: string,
  spec: ClusterSpec,
  d: BundleDescriptor | undefined,
  o: { previous?: BundleDescriptor; purgeStore: boolean; left: (rest: ClusterSpec) => Promise<unknown>; log: (line: string) => void },
): Promise<void> {
  const first = firstMaster(spec);
  const order = [...spec.hosts.filter((h) => !isMaster(h)), ...spec.hosts.filter((h) => isMaster(h) && h !== first), first];
  await withStoreLock(store, 'resetting the cluster', async () => {
    const known = await KnownHosts.inStore(store);
    const failed: string[] = [];
    let rest = spec;
    for (const h of order) {
      try {
        const host = await SshHost.connect(h, known, { logDir: join(store, 'logs') });
        try {
          keptWarnings(h.ip, await host.check(resetScript(d, o.previous), 'reset', 300_000)).forEach(o.log);
        } finally {
          host.close();
        }
        rest = { ...rest, hosts: rest.hosts.filter((x) => x !== h) };
        const journal = new Journal(store);
        journal.forget(h.ip);
        journal.close();
        o.log(`${h.ip}: reset`);
      } catch (err) {
        failed.push(`${h.ip}: ${(err as Error).message.split('\n')[0]}`);
      }
    }
    await known.save();
    if (failed.length) {
      await o.left(rest);
      throw new AcpackError('NODE_STEP', `${plural(failed.length, 'node')} not reset (the cluster keeps them; run acinstall reset again once they answer):\n  ${failed.join('\n  ')}`);
    }
    o.log(`registry: ${await stopRegistry(store)}`);
    const state = ['journal.db', 'journal.db-wal', 'journal.db-shm', 'cluster.json', 'registry.pid'];
    if (o.purgeStore) await rm(store, { recursive: true, force: true });
    else for (const f of state) await rm(join(store, f), { force: true });
  });
}
