import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';

/**
 * The kubeadm stand-in of one kubeadm release: `standins/kubeadm` (a Python script, v1.22.15's as
 * committed) with the rules block rewritten for that release. The rules are the constants kubeadm's
 * image list is made of — cmd/kubeadm/app/images/images.go (GetControlPlaneImages, GetDNSImage,
 * GetEtcdImage, GetPauseImage; read in the release-1.22 form that imports kubeadmapiv1beta2) over
 * cmd/kubeadm/app/constants/constants.go of the same branch (PauseVersion, CoreDNSVersion,
 * DefaultEtcdVersion, SupportedEtcdVersion, MinimumControlPlaneVersion) and the default image
 * repository of apis/kubeadm/v1beta2|v1beta3 (k8s.gcr.io until v1.22.15; registry.k8s.io from
 * v1.22.16, kubernetes PR #113388, the release-1.22 backport of #109938). The etcd, CoreDNS and pause
 * tags per release agree with minikube's record of `kubeadm config images list` per version
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

/** The committed stand-in (v1.22.15's rules). */
export const KUBEADM_STANDIN = resolve(import.meta.dirname, 'kubeadm');
const BLOCK = /^# --- rules \(kubeadm-standin\.ts rewrites this block per kubeadm version\) ---\n[\s\S]*?\n# --- end of rules ---$/m;

/** kubeadm's own version for a bundled one: "v1.22.15-aliyun.1" is a v1.22.15 kubeadm. */
function rulesFor(version: string): KubeadmRules {
  const plain = /^v\d+\.\d+\.\d+/.exec(version)?.[0] ?? version;
  const rules = KUBEADM_RULES[plain];
  if (!rules) throw new Error(`no kubeadm image rules for ${version}: read images.go and constants.go at that tag and add them to KUBEADM_RULES`);
  return { ...rules, version };
}

/** The stand-in's text for a kubeadm release. */
export function kubeadmStandin(version: string): string {
  const text = readFileSync(KUBEADM_STANDIN, 'utf8');
  if (!BLOCK.test(text)) throw new Error(`${KUBEADM_STANDIN} lost its rules block`);
  const block = `# --- rules (kubeadm-standin.ts rewrites this block per kubeadm version) ---\nRULES = json.loads(r'''${JSON.stringify(rulesFor(version))}''')\n# --- end of rules ---`;
  return text.replace(BLOCK, block);
}

/** Writes the stand-in of `version` into `dir` (as `kubeadm-<version>`), for a manifest's binaries. */
export async function writeKubeadmStandin(dir: string, version: string): Promise<{ file: string; sha256: string }> {
  await mkdir(dir, { recursive: true });
  const file = join(dir, `kubeadm-${version}`);
  const text = kubeadmStandin(version);
  await writeFile(file, text);
  await chmod(file, 0o755);
  return { file, sha256: createHash('sha256').update(text).digest('hex') };
}

/** A manifest's binaries entry installing the stand-in of `version` as /usr/bin/kubeadm. */
export async function kubeadmBinary(dir: string, version = 'v1.22.15') {
  const { file, sha256 } = await writeKubeadmStandin(dir, version);
  return { name: 'kubeadm', version, url: file, sha256, install: '/usr/bin/kubeadm' };
}
