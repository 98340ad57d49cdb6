import { stringify } from 'yaml';
import type { BundleDescriptor } from '../oci/bundle-format.js';
import { AcpackError } from '../oci/errors.js';
import { isMaster, type ClusterSpec, type HostSpec } from './cluster-spec.js';
import { shq, writeFiles } from './node-setup.js';
import type { SshHost } from './ssh.js';
import { isLvscareImage } from '../kube/index.js';

/**
 * How every node reaches the API servers, the way sealer (and so ACK Distro) does it: kubeadm's
 * control-plane endpoint is a name, `apiserver.cluster.local:6443`, and each node's /etc/hosts says
 * what it means there. The first master: itself. Another master: the first one while it joins, then
 * itself. A worker: the first master while it joins; then, with several masters, a virtual IP that
 * lvscare (a static pod on the worker) balances over the healthy masters with IPVS; with one master,
 * that master. No master is a single point of failure for the workers, and no external balancer is
 * needed.
 */
export const API_SERVER_NAME = 'apiserver.cluster.local';
export const API_SERVER_PORT = 6443;
export const LVSCARE_POD = '/etc/kubernetes/manifests/kube-lvscare.yaml';
const HOSTS_MARK = '# acpack';

export function controlPlaneEndpoint(): string {
  return `${API_SERVER_NAME}:${API_SERVER_PORT}`;
}

/** What apiserver.cluster.local means on `host`, while it joins and once it has joined. */
export function apiServerAddress(spec: ClusterSpec, host: HostSpec, joined: boolean): string {
  const masters = spec.hosts.filter(isMaster);
  if (host === masters[0]) return host.ip;
  if (!joined) return masters[0].ip;
  if (isMaster(host)) return host.ip;
  return masters.length > 1 ? spec.network.apiServerVIP : masters[0].ip;
}

/** Whether workers need lvscare (several masters behind the virtual IP). */
export function needsLvscare(spec: ClusterSpec): boolean {
  return spec.hosts.filter(isMaster).length > 1 && spec.hosts.some((h) => !isMaster(h));
}

/** The bundle's lvscare image; with several masters and workers, its absence is an error before any node is touched. */
export function lvscareImage(spec: ClusterSpec, d: BundleDescriptor): string | undefined {
  if (!needsLvscare(spec)) return undefined;
  const image = d.images.find((i) => isLvscareImage(i.ref))?.ref;
  if (!image) {
    throw new AcpackError(
      'BAD_BUNDLE',
      `this cluster has ${spec.hosts.filter(isMaster).length} masters: workers reach them through ${spec.network.apiServerVIP}, kept by lvscare, and ${d.name} ${d.version} carries no lvscare image (add e.g. sealerio/lvscare to the manifest's images)`,
    );
  }
  return image;
}

/**
 * Points apiserver.cluster.local at `address` in /etc/hosts, replacing acpack's earlier line and
 * keeping every other. Rewritten in place, not renamed: /etc/hosts is often a bind mount.
 */
export function hostsEntryScript(address: string | undefined): string {
  const lines = [
    'set -e',
    'tmp=$(mktemp)',
    `grep -v ${shq(` ${API_SERVER_NAME} ${HOSTS_MARK}$`)} /etc/hosts > "$tmp" || true`,
    ...(address ? [`printf '%s\\n' ${shq(`${address} ${API_SERVER_NAME} ${HOSTS_MARK}`)} >> "$tmp"`] : []),
    'cat "$tmp" > /etc/hosts',
    'rm -f "$tmp"',
  ];
  return lines.join('\n');
}

/** The lvscare static pod of a worker: the virtual server and every master as a real server. */
export function lvscarePod(spec: ClusterSpec, image: string): string {
  const masters = spec.hosts.filter(isMaster).map((h) => h.ip);
  return stringify({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'kube-lvscare', namespace: 'kube-system', labels: { component: 'kube-lvscare', tier: 'control-plane' } },
    spec: {
      hostNetwork: true,
      priorityClassName: 'system-node-critical',
      containers: [
        {
          name: 'kube-lvscare',
          image,
          imagePullPolicy: 'IfNotPresent',
          command: ['/usr/bin/lvscare'],
          args: [
            'care',
            '--vs', `${spec.network.apiServerVIP}:${API_SERVER_PORT}`,
            '--health-path', '/healthz',
            '--health-schem', 'https',
            ...masters.flatMap((ip) => ['--rs', `${ip}:${API_SERVER_PORT}`]),
          ],
          securityContext: { privileged: true },
          volumeMounts: [{ name: 'lib-modules', mountPath: '/lib/modules', readOnly: true }],
        },
      ],
      volumes: [{ name: 'lib-modules', hostPath: { path: '/lib/modules' } }],
    },
  });
}

/** Points apiserver.cluster.local on the node at `address` (nothing: removes acpack's line). */
export async function pointApiServer(host: SshHost, address: string | undefined): Promise<void> {
  await host.check(hostsEntryScript(address), 'writing /etc/hosts', 60_000);
}

/**
 * After a node joined: a worker of a several-master cluster gets its lvscare static pod (the
 * kubelet now running starts it), then the node's final address for the API servers.
 */
export async function settleApiServer(host: SshHost, spec: ClusterSpec, node: HostSpec, lvscare: string | undefined): Promise<string> {
  if (lvscare && !isMaster(node)) await writeFiles(host, { [LVSCARE_POD]: lvscarePod(spec, lvscare) });
  const address = apiServerAddress(spec, node, true);
  await pointApiServer(host, address);
  return address;
}
