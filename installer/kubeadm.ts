import { stringify } from 'yaml';
import type { BundleDescriptor } from '../oci/bundle-format.js';
import { parseReference } from '../oci/reference.js';
import { AcpackError } from '../oci/errors.js';
import { isMaster, type ClusterSpec } from './cluster-spec.js';
import type { SshHost } from './ssh.js';
import { shq, writeFiles } from './node-setup.js';
import { API_SERVER_NAME, controlPlaneEndpoint } from './control-plane.js';

export const KUBEADM_CONFIG = '/etc/kubernetes/acpack-kubeadm.yaml';
/** kubeadm waits minutes for a control plane to come up. */
const KUBEADM_TIMEOUT = 600_000;

/** What a node needs to join. Secrets: kept in memory, never logged or journaled. */
export interface JoinInfo {
  endpoint: string;
  token: string;
  caCertHash: string;
  certificateKey?: string;
}

/**
 * The kubeadm configuration: images from their ORIGINAL repository (served through the containerd
 * mirror configuration), the bundle's Kubernetes version, the cluster's CIDRs, the control-plane
 * endpoint by name (see control-plane.ts), every master and the virtual IP in the API server certificate.
 */
export function kubeadmConfig(spec: ClusterSpec, d: BundleDescriptor): string {
  const ref = apiServerImage(d);
  const masters = spec.hosts.filter(isMaster).map((h) => h.ip);
  const docs = [
    {
      apiVersion: 'kubeadm.k8s.io/v1beta3',
      kind: 'InitConfiguration',
      nodeRegistration: { criSocket: 'unix:///run/containerd/containerd.sock' },
    },
    {
      apiVersion: 'kubeadm.k8s.io/v1beta3',
      kind: 'ClusterConfiguration',
      ...(ref?.tag ? { kubernetesVersion: ref.tag } : {}),
      controlPlaneEndpoint: controlPlaneEndpoint(),
      ...(ref ? { imageRepository: `${ref.host}/${ref.repository.replace(/\/kube-apiserver$/, '')}` } : {}),
      networking: { podSubnet: spec.network.podCIDR, serviceSubnet: spec.network.serviceCIDR },
      apiServer: { certSANs: [...masters, '127.0.0.1', API_SERVER_NAME, spec.network.apiServerVIP] },
    },
    { apiVersion: 'kubelet.config.k8s.io/v1beta1', kind: 'KubeletConfiguration', cgroupDriver: 'systemd' },
  ];
  return docs.map((x) => stringify(x)).join('---\n');
}

function apiServerImage(d: BundleDescriptor) {
  const api = d.images.find((i) => /\/kube-apiserver:[^/]+$/.test(i.ref));
  return api ? parseReference(api.ref) : undefined;
}

/** The Kubernetes version a bundle installs: its kube-apiserver image's tag. */
export function kubernetesVersion(d: BundleDescriptor): string | undefined {
  return apiServerImage(d)?.tag;
}

/** Parses `kubeadm join …` as kubeadm prints it (init output or `token create --print-join-command`). */
export function parseJoin(text: string): JoinInfo | undefined {
  const flat = text.replace(/\\\n/g, ' ');
  const m = /kubeadm join (\S+) --token (\S+)\s+--discovery-token-ca-cert-hash (\S+)/.exec(flat);
  if (!m) return undefined;
  const key = /--certificate-key (\S+)/.exec(flat)?.[1];
  return { endpoint: m[1], token: m[2], caCertHash: m[3], ...(key ? { certificateKey: key } : {}) };
}



export async function kubeadmInit(host: SshHost, config: string): Promise<JoinInfo> {
  await writeFiles(host, { [KUBEADM_CONFIG]: config });
  const out = await host.check(`kubeadm init --config ${KUBEADM_CONFIG} --upload-certs`, 'kubeadm init', KUBEADM_TIMEOUT);
  const join = parseJoin(out);
  if (!join) throw new AcpackError('NODE_STEP', `${host.spec.ip}: kubeadm init did not print a join command`);
  return join;
}

/** Fresh join material from an initialized first master (a re-run after init). */
export async function joinInfoFrom(host: SshHost): Promise<JoinInfo> {
  const join = parseJoin(await host.check('kubeadm token create --print-join-command', 'kubeadm token create', KUBEADM_TIMEOUT));
  if (!join) throw new AcpackError('NODE_STEP', `${host.spec.ip}: kubeadm token create printed no join command`);
  const certs = await host.check(`kubeadm init phase upload-certs --upload-certs --config ${KUBEADM_CONFIG}`, 'kubeadm upload-certs', KUBEADM_TIMEOUT);
  const key = certs.trim().split('\n').pop()?.trim();
  return { ...join, ...(key && /^[a-f0-9]{64}$/.test(key) ? { certificateKey: key } : {}) };
}

export async function kubeadmJoin(host: SshHost, join: JoinInfo, controlPlane: boolean): Promise<void> {
  const args = [`kubeadm join ${shq(join.endpoint)} --token ${shq(join.token)} --discovery-token-ca-cert-hash ${shq(join.caCertHash)}`];
  if (controlPlane) {
    if (!join.certificateKey) throw new AcpackError('NODE_STEP', 'no certificate key to join a master with');
    args.push(`--control-plane --certificate-key ${shq(join.certificateKey)}`);
  }
  await host.check(args.join(' '), controlPlane ? 'kubeadm join (control plane)' : 'kubeadm join', KUBEADM_TIMEOUT);
}
