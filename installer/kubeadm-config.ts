import { gunzipSync } from 'node:zlib';
import tar from 'tar-stream';
import { stringify } from 'yaml';
import type { BundleDescriptor, BundledChart } from '../oci/bundle-format.js';
import { ContentStore } from '../oci/store.js';
import { firstMaster, isMaster, type ClusterSpec, type HostSpec } from './cluster-spec.js';
import { API_SERVER_NAME, API_SERVER_PORT, controlPlaneEndpoint } from './control-plane.js';
import { chartOrder } from './charts.js';
import { KUBEADM_API, imageSettings, kubernetesVersion, missingImages } from '../kube/index.js';

// kubeadm's configuration, tied to the bundle: the Kubernetes version, the image repository and the
// etcd and CoreDNS tags are the bundle's (kube/bundle-images.ts, shared with acpack's own check); the
// node addresses are those acinstall reached the nodes at.

export { KUBEADM_API, imageSettings, kubernetesVersion, missingImages };
export const KUBEADM_CONFIG = '/etc/kubernetes/acpack-kubeadm.yaml';
export const CRI_SOCKET = 'unix:///run/containerd/containerd.sock';

/** The kubeadm addons a bundle's charts may install themselves. */
export type Addon = 'coredns' | 'kube-proxy';

/** What a node registers with: containerd, and the kubelet on the address acinstall reached the node at. */
function nodeRegistration(h: HostSpec) {
  return { criSocket: CRI_SOCKET, kubeletExtraArgs: { 'node-ip': h.ip } };
}

/**
 * The kubeadm configuration of `kubeadm init` on the first master: images from their ORIGINAL
 * repository (served through the containerd mirror configuration) with the bundle's version and
 * tags, the API server advertised on the first master's own address (not whichever interface holds
 * the default route), the cluster's CIDRs, the control-plane endpoint by name (see control-plane.ts),
 * every master and the virtual IP in the API server certificate.
 */
export function kubeadmConfig(spec: ClusterSpec, d: BundleDescriptor): string {
  const first = firstMaster(spec);
  const masters = spec.hosts.filter(isMaster).map((h) => h.ip);
  const docs = [
    {
      apiVersion: KUBEADM_API,
      kind: 'InitConfiguration',
      localAPIEndpoint: { advertiseAddress: first.ip, bindPort: API_SERVER_PORT },
      nodeRegistration: nodeRegistration(first),
    },
    {
      apiVersion: KUBEADM_API,
      kind: 'ClusterConfiguration',
      // The image part is kube/'s kubeadmImageConfig, which acpack checks the bundle against: same fields, this order.
      kubernetesVersion: kubernetesVersion(d),
      controlPlaneEndpoint: controlPlaneEndpoint(),
      ...imageSettings(d),
      networking: { podSubnet: spec.network.podCIDR, serviceSubnet: spec.network.serviceCIDR },
      apiServer: { certSANs: [...masters, '127.0.0.1', API_SERVER_NAME, spec.network.apiServerVIP] },
    },
    { apiVersion: 'kubelet.config.k8s.io/v1beta1', kind: 'KubeletConfiguration', cgroupDriver: 'systemd' },
  ];
  return docs.map((x) => stringify(x)).join('---\n');
}

/** What a node needs to join. Secrets: kept in memory, never logged or journaled. */
export interface JoinInfo {
  endpoint: string;
  token: string;
  caCertHash: string;
}

/**
 * A JoinConfiguration (kubeadm refuses `--config` beside the join flags): the bootstrap token, the
 * node's own address for its kubelet and, for a master, for its API server, and the certificate key
 * of the control-plane certificates uploaded for it.
 */
export function joinConfig(h: HostSpec, join: JoinInfo, certificateKey?: string): string {
  return stringify({
    apiVersion: KUBEADM_API,
    kind: 'JoinConfiguration',
    discovery: { bootstrapToken: { apiServerEndpoint: join.endpoint, token: join.token, caCertHashes: [join.caCertHash] } },
    nodeRegistration: nodeRegistration(h),
    ...(certificateKey ? { controlPlane: { localAPIEndpoint: { advertiseAddress: h.ip, bindPort: API_SERVER_PORT }, certificateKey } } : {}),
  });
}

// kubeadm's addons create these objects in kube-system (cmd/kubeadm/app/phases/addons/dns and
// proxy): a chart rendering one of them fails in helm ("exists and cannot be imported into the
// current release"), so kubeadm's phase for that addon is skipped.
const ADDON_OBJECTS: Record<Addon, [kind: string, name: string][]> = {
  coredns: [['Deployment', 'coredns'], ['ConfigMap', 'coredns'], ['Service', 'kube-dns'], ['ServiceAccount', 'coredns']],
  'kube-proxy': [['DaemonSet', 'kube-proxy'], ['ConfigMap', 'kube-proxy'], ['ServiceAccount', 'kube-proxy']],
};

/** A YAML document's top-level `kind` and `metadata.name`, read from its lines (templates are not YAML until rendered). */
function kindAndName(doc: string): { kind?: string; name?: string } {
  const lines = doc.split('\n');
  const kind = lines.map((l) => /^kind:\s*["']?(\w+)["']?\s*$/.exec(l)?.[1]).find(Boolean);
  const at = lines.findIndex((l) => /^metadata:\s*$/.test(l));
  let name: string | undefined;
  let indent: string | undefined;
  for (const l of at < 0 ? [] : lines.slice(at + 1)) {
    if (!l.trim() || /^\s*#/.test(l) || /^\s*\{\{-?.*-?\}\}\s*$/.test(l)) continue;
    const own = /^([ \t]+)\S/.exec(l)?.[1];
    if (!own || (indent !== undefined && own.length < indent.length)) break;
    indent ??= own;
    const m = own === indent ? /^\s+name:\s*["']?([\w.:-]+)["']?\s*$/.exec(l) : null;
    if (m) name = m[1];
  }
  return { kind, name };
}

/** The addons a chart's templates install: documents whose kind and metadata.name are kubeadm's. */
export function addonsInTemplates(templates: string[]): Set<Addon> {
  const found = new Set<Addon>();
  for (const doc of templates.flatMap((t) => t.split(/^---.*$/m))) {
    const { kind, name } = kindAndName(doc);
    for (const [addon, objects] of Object.entries(ADDON_OBJECTS) as [Addon, [string, string][]][]) {
      if (objects.some(([k, n]) => k === kind && n === name)) found.add(addon);
    }
  }
  return found;
}

/** The template files of a chart package (.tgz), subcharts' included. */
export async function chartTemplates(tgz: Buffer): Promise<string[]> {
  const files: string[] = [];
  const extract = tar.extract();
  const done = new Promise<void>((resolve, reject) => {
    extract.on('entry', (header, stream, next) => {
      const chunks: Buffer[] = [];
      stream.on('data', (c) => chunks.push(c as Buffer));
      stream.on('end', () => {
        if (header.type === 'file' && /(^|\/)templates\/.+\.(ya?ml|tpl|json)$/.test(header.name)) files.push(Buffer.concat(chunks).toString());
        next();
      });
      stream.on('error', reject);
    });
    extract.on('finish', resolve);
    extract.on('error', reject);
  });
  extract.end(gunzipSync(tgz, { maxOutputLength: 256 * 2 ** 20 }));
  await done;
  return files;
}

/** Which kubeadm addons the charts acinstall will install (the chosen CNI and the rest) bring themselves. */
export async function addonsFromCharts(store: string, d: BundleDescriptor, cni: string): Promise<Set<Addon>> {
  const charts: BundledChart[] = d.charts.length ? chartOrder(d, cni) : [];
  const found = new Set<Addon>();
  if (charts.length === 0) return found;
  const cas = await ContentStore.open(store);
  for (const c of charts) {
    for (const a of addonsInTemplates(await chartTemplates(await cas.readBytes(c.chart)))) found.add(a);
  }
  return found;
}

/** kubeadm init's --skip-phases for the addons the charts bring. */
export function skippedPhases(addons: Set<Addon>): string[] {
  return [...addons].sort().map((a) => `addon/${a}`);
}
