import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { kubeadmRules, type KubeadmRules } from '../../../kube/index.js';

export { KUBEADM_RULES, type KubeadmRules } from '../../../kube/index.js';

/**
 * The kubeadm stand-in of one kubeadm release: `standins/kubeadm` (a Python script, v1.22.15's as
 * committed) with the rules block rewritten for that release. The rules are acpack's own copy of
 * kubeadm's image rules (kube/kubeadm-images.ts, where the upstream sources they were read from are
 * cited), the same table acpack checks bundles against where it cannot run their kubeadm: the
 * stand-in applies them as kubeadm does (its images()), and test/unit/kubeadm-images.test.ts holds
 * the two to the same answers.
 *
 * Here: the committed stand-in (v1.22.15's rules).
 */
export const KUBEADM_STANDIN = resolve(import.meta.dirname, 'kubeadm');
const BLOCK = /^# --- rules \(kubeadm-standin\.ts rewrites this block per kubeadm version\) ---\n[\s\S]*?\n# --- end of rules ---$/m;

/** kubeadm's own version for a bundled one: "v1.22.15-aliyun.1" is a v1.22.15 kubeadm. */
function rulesFor(version: string): KubeadmRules {
  const rules = kubeadmRules(version);
  if (!rules) throw new Error(`no kubeadm image rules for ${version}: read images.go and constants.go at that tag and add them to KUBEADM_RULES (kube/kubeadm-images.ts)`);
  return rules;
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

/** A manifest's binaries entry installing the kubelet stand-in (standins/kubelet, which says v1.22.15) as /usr/bin/kubelet. */
export function kubeletBinary() {
  const file = resolve(import.meta.dirname, 'kubelet');
  return { name: 'kubelet', version: 'v1.22.15', url: file, sha256: createHash('sha256').update(readFileSync(file)).digest('hex'), install: '/usr/bin/kubelet' };
}
