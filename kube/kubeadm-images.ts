import { AcpackError } from '../oci/errors.js';

/**
 * kubeadm's image rules, per release: what `kubeadm config images list` prints for a configuration,
 * without running kubeadm. acpack uses them where the bundled kubeadm cannot run (another arch than
 * the build machine's, `acpack validate` which fetches nothing); the test hosts' kubeadm stand-in is
 * generated from the same table (test/hosts/standins/kubeadm-standin.ts), so the two cannot drift.
 *
 * The rules are the constants kubeadm's image list is made of — cmd/kubeadm/app/images/images.go
 * (GetControlPlaneImages, GetDNSImage, GetEtcdImage, GetPauseImage; read in the release-1.22 form
 * that imports kubeadmapiv1beta2) over cmd/kubeadm/app/constants/constants.go of the same branch
 * (PauseVersion, CoreDNSVersion, DefaultEtcdVersion, SupportedEtcdVersion, MinimumControlPlaneVersion)
 * and the default image repository of cmd/kubeadm/app/apis/kubeadm/v1beta2|v1beta3 defaults.go
 * (k8s.gcr.io until v1.22.15; registry.k8s.io from v1.22.16, kubernetes PR #113388, the release-1.22
 * backport of #109938). The version handling follows cmd/kubeadm/app/util/version.go
 * (KubernetesReleaseVersion) and KubernetesVersionToImageTag in cmd/kubeadm/app/constants. The etcd,
 * CoreDNS and pause tags per release agree with minikube's record of `kubeadm config images list`
 * (pkg/minikube/constants/constants_kubeadm_images.go: v1.22.15 → coredns/coredns v1.8.4, etcd 3.5.0-0,
 * pause 3.5; v1.22.17 → etcd 3.5.6-0). Another release needs its own entry, read from its own tag.
 */
export interface KubeadmRules {
  version: string;
  defaultImageRepository: string;
  pause: string;
  coreDNS: string;
  defaultEtcd: string;
  /** SupportedEtcdVersion: Kubernetes minor → etcd image tag; other minors take the nearest. */
  supportedEtcd: Record<string, string>;
  minimumControlPlane: string;
  apiVersions: string[];
}

// The key order is the stand-in's committed RULES line (kubeadm-standin.ts writes this object as JSON).
const ETCD_1_22 = { '13': '3.2.24', '14': '3.3.10', '15': '3.3.10', '16': '3.3.17-0', '17': '3.4.3-0', '18': '3.4.3-0', '19': '3.4.13-0', '20': '3.4.13-0', '21': '3.4.13-0' };
const V1_22: Omit<KubeadmRules, 'version' | 'defaultImageRepository' | 'defaultEtcd' | 'supportedEtcd'> = {
  pause: '3.5',
  coreDNS: 'v1.8.4',
  minimumControlPlane: 'v1.21.0',
  apiVersions: ['kubeadm.k8s.io/v1beta2', 'kubeadm.k8s.io/v1beta3'],
};

export const KUBEADM_RULES: Record<string, KubeadmRules> = {
  'v1.22.15': { ...V1_22, version: 'v1.22.15', defaultImageRepository: 'k8s.gcr.io', defaultEtcd: '3.5.0-0', supportedEtcd: { ...ETCD_1_22, '22': '3.5.0-0', '23': '3.5.0-0' } },
  'v1.22.16': { ...V1_22, version: 'v1.22.16', defaultImageRepository: 'registry.k8s.io', defaultEtcd: '3.5.0-0', supportedEtcd: { ...ETCD_1_22, '22': '3.5.0-0', '23': '3.5.0-0' } },
  'v1.22.17': { ...V1_22, version: 'v1.22.17', defaultImageRepository: 'registry.k8s.io', defaultEtcd: '3.5.6-0', supportedEtcd: { ...ETCD_1_22, '22': '3.5.6-0', '23': '3.5.6-0' } },
};

/**
 * The rules of a bundled kubeadm by its version ("v1.22.15-aliyun.1" is a v1.22.15 kubeadm, and
 * reports that whole version as its own); undefined for a release not in the table.
 */
export function kubeadmRules(version: string): KubeadmRules | undefined {
  const plain = /^v\d+\.\d+\.\d+/.exec(version)?.[0] ?? version;
  const rules = KUBEADM_RULES[plain];
  return rules && { ...rules, version };
}

/** The part of a ClusterConfiguration kubeadm's image list depends on. */
export interface ImageConfig {
  kubernetesVersion?: string;
  imageRepository?: string;
  etcd?: { local?: { imageRepository?: string; imageTag?: string }; external?: { endpoints?: string[] } };
  dns?: { imageRepository?: string; imageTag?: string };
}

type Semver = [major: number, minor: number, patch: number, pre: string];

function semver(v: string): Semver | undefined {
  const m = /^v?(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)([-0-9a-zA-Z_.+]*)?$/.exec(v);
  return m ? [Number(m[1]), Number(m[2]), Number(m[3]), (m[4] ?? '').split('+')[0]] : undefined;
}

function older(a: Semver, b: Semver): boolean {
  for (let i = 0; i < 3; i++) if (a[i] !== b[i]) return (a[i] as number) < (b[i] as number);
  return a[3] !== '' && b[3] === '';
}

/** KubernetesReleaseVersion, offline: a label (stable-1, latest, …) falls back to kubeadm's own version. */
function kubernetesVersion(rules: KubeadmRules, given: string | undefined): string {
  const value = given || 'stable-1';
  if (semver(value)) return value.startsWith('v') ? value : `v${value}`;
  if (/^(stable|latest|latest-1|stable-1|latest-1\.\d+|stable-1\.\d+|ci\/.+)$/.test(value)) return rules.version;
  throw new AcpackError('KUBEADM_REFUSES', `kubeadm ${rules.version} refuses kubernetesVersion "${value}": it matches neither a semantic version nor a label (stable, latest, ...)`);
}

/** constants.EtcdSupportedVersion: the etcd of that minor, else the nearest one kubeadm knows. */
function etcdTag(rules: KubeadmRules, version: string): string {
  const v = semver(version);
  if (!v) return rules.defaultEtcd;
  const minors = Object.keys(rules.supportedEtcd).map(Number);
  const minor = rules.supportedEtcd[v[1]] ? v[1] : v[1] < Math.min(...minors) ? Math.min(...minors) : Math.max(...minors);
  return rules.supportedEtcd[minor];
}

/**
 * What `kubeadm config images list --config` prints for `cc` (in kubeadm's order), or an
 * AcpackError where that kubeadm refuses the configuration.
 */
export function kubeadmImages(rules: KubeadmRules, cc: ImageConfig): string[] {
  const version = kubernetesVersion(rules, cc.kubernetesVersion);
  if (older(semver(version)!, semver(rules.minimumControlPlane)!)) {
    throw new AcpackError(
      'KUBEADM_REFUSES',
      `kubeadm ${rules.version} only deploys a control plane >= ${rules.minimumControlPlane.slice(1)}, and the bundle's Kubernetes version is ${version}`,
    );
  }
  if (cc.etcd?.local && cc.etcd.external) throw new AcpackError('KUBEADM_REFUSES', `kubeadm ${rules.version} refuses a configuration with both a local and an external etcd`);
  const repo = cc.imageRepository || rules.defaultImageRepository;
  const tag = version.replace(/\+/g, '_'); // KubernetesVersionToImageTag
  const out = ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kube-proxy'].map((name) => `${repo}/${name}:${tag}`);
  out.push(`${repo}/pause:${rules.pause}`); // not configurable: the version kubeadm was built with
  if (!cc.etcd?.external) out.push(`${cc.etcd?.local?.imageRepository || repo}/etcd:${cc.etcd?.local?.imageTag || etcdTag(rules, version)}`);
  let dnsRepo = cc.dns?.imageRepository || repo;
  if (dnsRepo === rules.defaultImageRepository) dnsRepo += '/coredns'; // the official image moved to <default>/coredns/coredns
  out.push(`${dnsRepo}/coredns:${cc.dns?.imageTag || rules.coreDNS}`);
  return out;
}
