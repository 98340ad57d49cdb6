import { readFile } from 'node:fs/promises';
import { writeFileAtomic } from '../oci/atomic-file.js';
import { join, resolve } from 'node:path';
import { AcpackError } from '../oci/errors.js';
import { checkSpec, firstMaster, isMaster, type ClusterSpec, type HostSpec } from './cluster-spec.js';
import { bundleIdentity, type BundleDescriptor } from '../oci/bundle-format.js';

/**
 * What `acinstall from` installed, kept on the master for `join` and `delete`: the bundle and the
 * cluster spec WITHOUT passwords (those are asked for again; key files are referenced by path).
 */
export interface ClusterState {
  bundle: string;
  /** What that bundle held: `join` works from the store, without the medium it came on. */
  descriptor?: BundleDescriptor;
  spec: ClusterSpec;
  /**
   * The bundle installed before that one: an upgrade interrupted before every node had the new
   * bundle's binaries still needs it on the re-run, to know which of a node's files the new bundle dropped.
   */
  previous?: BundleDescriptor;
}

const file = (store: string) => join(store, 'cluster.json');

/** Records the cluster; the bundle it held until now becomes `previous` when this is another one. */
export async function saveClusterState(store: string, bundle: string, descriptor: BundleDescriptor | undefined, spec: ClusterSpec): Promise<ClusterState> {
  // An unreadable record is replaced, as before there was anything in it to keep.
  const was = await loadClusterState(store).catch(() => undefined);
  const replaced = was?.descriptor && descriptor && bundleIdentity(was.descriptor) !== bundleIdentity(descriptor);
  const hosts = spec.hosts.map(({ password: _password, ...h }) => h);
  const state: ClusterState = { bundle: resolve(bundle), descriptor, spec: { ...spec, hosts }, previous: replaced ? was.descriptor : was?.previous };
  await writeFileAtomic(file(store), `${JSON.stringify(state, null, 2)}\n`, 0o600);
  return state;
}

export async function loadClusterState(store: string): Promise<ClusterState> {
  try {
    return JSON.parse(await readFile(file(store), 'utf8')) as ClusterState;
  } catch {
    throw new AcpackError('NOT_INSTALLED', `no cluster installed from ${store}: run acinstall from first`);
  }
}

/**
 * The spec with new workers added. New nodes log in with `login`, by default as the first master
 * does (its key, user and port). Hosts already in the cluster keep their own login: their recorded
 * key, or for those that logged in with a password at install (never recorded), `clusterPassword`.
 */
export function withNodes(state: ClusterState, ips: string[], login: Partial<HostSpec>, clusterPassword?: string): ClusterSpec {
  const known = new Set(state.spec.hosts.map((h) => h.ip));
  const first = firstMaster(state.spec);
  const added: HostSpec[] = ips.filter((ip) => !known.has(ip)).map((ip) => ({
    ip,
    roles: ['node'],
    user: login.user ?? first.user,
    port: login.port ?? first.port,
    password: login.password,
    keyFile: login.keyFile ?? (login.password ? undefined : first.keyFile),
  }));
  const hosts = state.spec.hosts.map((h) => {
    if (h.keyFile) return h;
    if (!clusterPassword) {
      throw new AcpackError('BAD_CLUSTER', `${h.ip} logged in with a password when the cluster was installed (passwords are not kept): give it again with --cluster-password or ACINSTALL_SSH_PASSWORD`);
    }
    return { ...h, password: clusterPassword };
  });
  return checkSpec({ ...state.spec, hosts: [...hosts, ...added] }, 'the nodes to join');
}

/**
 * `from` on a cluster already installed from this store must name the same nodes in the same roles:
 * a node left out would be forgotten (still in the cluster, no longer managed), a new one joined
 * with whatever role the flags happen to give it, and kubeadm cannot change a node's role in place.
 * `installed(ip)` says whether a node of the saved cluster is in it. Returns what differs, each with
 * the command that does it; empty when nothing does.
 */
export function hostListChanges(state: ClusterState, spec: ClusterSpec, installed: (h: HostSpec) => boolean, store: string): string[] {
  const members = state.spec.hosts.filter(installed);
  if (members.length === 0) return [];
  const role = (h: HostSpec) => (isMaster(h) ? 'master' : 'worker');
  const wanted = new Map(spec.hosts.map((h) => [h.ip, h]));
  const had = new Map(members.map((h) => [h.ip, h]));
  const changes: string[] = [];
  const was = firstMaster(state.spec);
  if (installed(was) && firstMaster(spec).ip !== was.ip) changes.push(`the first master is ${was.ip} (it holds the cluster's CA and this store); it must come first among the masters`);
  for (const h of members) {
    const now = wanted.get(h.ip);
    if (!now) changes.push(`${h.ip} is a ${role(h)} of the cluster and not named here: to remove it, acinstall delete -n ${h.ip} --store ${store}`);
    else if (role(now) !== role(h)) changes.push(`${h.ip} is a ${role(h)} of the cluster and a ${role(now)} here: a node's role cannot change in place (acinstall delete -n ${h.ip}, then install it again)`);
  }
  for (const h of spec.hosts.filter((x) => !had.has(x.ip) && !state.spec.hosts.some((s) => s.ip === x.ip && !installed(s)))) {
    changes.push(isMaster(h) ? `${h.ip} is not in the cluster, and acinstall adds masters only when it installs one: to add it as a worker, acinstall join -n ${h.ip} --store ${store}` : `${h.ip} is not in the cluster: to add it, acinstall join -n ${h.ip} --store ${store}`);
  }
  return changes;
}
