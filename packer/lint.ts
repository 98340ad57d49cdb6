import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { formatPlatform, isArch, type Arch, type Platform } from '../arch/platform.js';
import { AcpackError, plural } from '../oci/errors.js';
import { laysClusterDown } from '../oci/bundle-format.js';
import type { BundleManifest, ChartSpec } from '../manifests/index.js';
import { CNI_CHARTS, DEFAULT_CNI, KUBEADM_RULES, imageListConfig, isLvscareImage, kubeadmImageConfig, kubeadmImages, kubeadmRules, kubernetesVersion, missingImages } from '../kube/index.js';
import { binaryArches } from './binaries.js';
import { platformsFor } from './images.js';

// A bundle that carries kubeadm is meant to lay a cluster down; if it cannot, the place to find out
// is the build machine, not the air-gapped site. These are the installer's own refusals (acinstall
// from refuses the same bundles, but only once it is on site), checked against the site's defaults
// since acpack cannot see the site's cluster file. A bundle without kubeadm is a plain content
// bundle (images, charts and binaries to serve) and is held to none of this.

/** What the lint found. */
export interface LintReport {
  /** Why the bundle cannot lay a cluster down: acpack refuses to write it unless --allow-incomplete. */
  problems: string[];
  /** What limits the sites it can install on. */
  warnings: string[];
  /** How things were checked, and what could not be. */
  notes: string[];
}

/** kubeadm's image list for one arch: the list and who gave it, or why there is none. */
export type KubeadmList = { listed: string[]; by: string } | { refused: string } | { unchecked: string };

/** Running the bundled kubeadm on this machine: its answer, or why it cannot run here. */
export type KubeadmRun = (config: string) => Promise<Exclude<KubeadmList, { unchecked: string }> | { cannotRun: string }>;

/** The manifest as the lint sees it: per arch, what each binary and image is bundled for. */
interface View {
  name: string;
  version: string;
  platforms: Platform[];
  binaries: { name: string; version: string; arches: Arch[]; install?: string }[];
  images: { ref: string; arches: Arch[] }[];
  /** Chart names; undefined for a local chart whose Chart.yaml could not be read here. */
  charts: { name?: string; where: string }[];
  kubeadm: { version: string };
}

/** What is left for lintResolved: the checks that need what the resolution fetched. */
export interface PendingLint {
  view: View;
  /** kubeadm's images wait for the bundled kubeadm (acpack bundle); validate checks them at once by the rules. */
  images: boolean;
  /** Some charts' names are not known before they are resolved. */
  charts: boolean;
}

const arch = (p: Platform) => p.architecture as Arch;
const platformsOf = (view: View, arches: Arch[]) => view.platforms.filter((p) => arches.includes(arch(p))).map(formatPlatform).join(', ');

export function carriesKubeadm(m: BundleManifest): boolean {
  return laysClusterDown(m);
}

/** A local chart's name from its Chart.yaml (no fetching), if it can be read. */
async function chartName(spec: ChartSpec): Promise<string | undefined> {
  if (spec.name || spec.source.kind !== 'path') return spec.name;
  try {
    const meta = parseYaml(await readFile(join(spec.source.path, 'Chart.yaml'), 'utf8')) as { name?: unknown };
    return typeof meta?.name === 'string' ? meta.name : undefined;
  } catch {
    return undefined;
  }
}

async function viewOf(m: BundleManifest, platforms: Platform[]): Promise<View> {
  const linux = platforms.filter((p) => p.os === 'linux' && isArch(p.architecture));
  return {
    name: m.name,
    version: m.version,
    platforms: linux,
    binaries: m.binaries.map((b) => ({ name: b.name, version: b.version, arches: binaryArches(b, linux), install: b.install })),
    images: m.images.map((i) => ({ ref: i.name, arches: platformsFor(i, linux).map(arch) })),
    charts: await Promise.all(m.charts.map(async (c) => ({ name: await chartName(c), where: c.where }))),
    kubeadm: { version: m.binaries.find((b) => b.name === 'kubeadm')!.version },
  };
}

const WHY: Record<string, string> = {
  kubeadm: 'to run kubeadm init or join there',
  kubelet: 'to run a kubelet there',
  helm: 'to install the charts with (helm runs on the first master, which may be of any of the bundle\'s arches)',
};

/** kubeadm and kubelet for every arch, and helm for every arch when there are charts. */
function checkBinaries(view: View): string[] {
  const problems: string[] = [];
  const needed = ['kubeadm', 'kubelet', ...(view.charts.length ? ['helm'] : [])];
  for (const name of needed) {
    const have = new Set(view.binaries.filter((b) => b.name === name).flatMap((b) => b.arches));
    const lacking = view.platforms.filter((p) => !have.has(arch(p)));
    if (lacking.length === 0) continue;
    if (name === 'helm' && have.size === 0) {
      problems.push(`it carries ${plural(view.charts.length, 'chart')} but no helm binary to install them with: add helm to the manifest's binaries`);
    } else {
      problems.push(`no ${name} for ${lacking.map(formatPlatform).join(', ')}, ${WHY[name]}: add ${name} to the manifest's binaries for ${lacking.length === 1 ? 'that arch' : 'those arches'}`);
    }
  }
  return problems;
}

/** The default CNI's chart; undefined when some chart names are not known yet. */
function checkCni(view: View): string[] | undefined {
  const names = view.charts.map((c) => c.name);
  if (names.includes(DEFAULT_CNI)) return [];
  if (names.includes(undefined)) return undefined;
  const others = CNI_CHARTS.filter((c) => names.includes(c));
  const site = `acinstall installs the CNI that the site's cluster file names (network.cni), ${DEFAULT_CNI} when it names none, and acpack cannot see that file, so it checks the default`;
  return [
    others.length
      ? `no ${DEFAULT_CNI} chart: ${site}; the bundle's ${others.join(', ')} serves only a cluster file with network.cni: ${others[0]} (build with --allow-incomplete for such a site): add the ${DEFAULT_CNI} chart to the manifest's charts`
      : `no CNI chart (without one, nodes never become Ready): ${site}: add the ${DEFAULT_CNI} chart to the manifest's charts`,
  ];
}

function checkLvscare(view: View): string[] {
  if (view.images.some((i) => isLvscareImage(i.ref))) return [];
  return ['no lvscare image: acinstall will refuse clusters with several masters and workers (workers reach the masters through a virtual IP that lvscare keeps); add one, e.g. sealerio/lvscare, to the images for such sites'];
}

/** kubeadm's list by acpack's copy of its image rules (the same for every arch). */
function byRules(view: View): KubeadmList {
  const rules = kubeadmRules(view.kubeadm.version);
  if (!rules) return { unchecked: `acpack has no image rules for kubeadm ${view.kubeadm.version} (it has ${Object.keys(KUBEADM_RULES).join(', ')})` };
  try {
    return { listed: kubeadmImages(rules, kubeadmImageConfig(view)), by: `acpack's copy of kubeadm ${rules.version}'s image rules` };
  } catch (err) {
    if (err instanceof AcpackError) return { refused: err.message };
    throw err;
  }
}

/** kubeadm's images for each arch against what the bundle carries for that arch; one line per same finding. */
function checkImages(view: View, lists: Map<Arch, KubeadmList>): LintReport {
  const out: LintReport = { problems: [], warnings: [], notes: [] };
  const groups = new Map<string, { arches: Arch[]; kind: keyof LintReport; text: (on: string) => string }>();
  const add = (key: string, a: Arch, kind: keyof LintReport, text: (on: string) => string) => {
    const g = groups.get(key) ?? { arches: [], kind, text };
    g.arches.push(a);
    groups.set(key, g);
  };
  for (const [a, list] of lists) {
    if ('unchecked' in list) {
      add(`u${list.unchecked}`, a, 'warnings', (on) => `kubeadm's images for ${on} were not checked: ${list.unchecked}`);
    } else if ('refused' in list) {
      add(`r${list.refused}`, a, 'problems', (on) => `kubeadm refuses the configuration acinstall would give it (${on}): ${list.refused}`);
    } else {
      add(`b${list.by}`, a, 'notes', (on) => `kubeadm's images for ${on}: asked of ${list.by}`);
      const missing = missingImages({ images: view.images.filter((i) => i.arches.includes(a)) }, list.listed.join('\n'));
      if (missing.length === 0) continue;
      add(`m${missing.join(' ')}`, a, 'problems', (on) =>
        `kubeadm ${view.kubeadm.version} needs ${plural(missing.length, 'image')} to install Kubernetes ${kubernetesVersion(view)} that the bundle does not carry for ${on}:\n      ${missing.join('\n      ')}\n    add ${missing.length === 1 ? 'it' : 'them'} to the manifest's images (for ${missing.length === 1 ? 'that' : 'those'} platforms)`,
      );
    }
  }
  for (const g of groups.values()) out[g.kind].push(g.text(platformsOf(view, g.arches)));
  return out;
}

const merge = (...reports: LintReport[]): LintReport => ({
  problems: reports.flatMap((r) => r.problems),
  warnings: reports.flatMap((r) => r.warnings),
  notes: reports.flatMap((r) => r.notes),
});

/**
 * What the manifest alone decides, before anything is fetched: kubeadm and kubelet for every arch,
 * helm for the charts, the default CNI's chart, lvscare. kubeadm's images too with `images: 'rules'`
 * (validate, which fetches nothing); acpack bundle leaves them to lintResolved, to ask the bundled
 * kubeadm. Only for a manifest that carries kubeadm.
 */
export async function lintManifest(m: BundleManifest, platforms: Platform[], o: { images: 'rules' | 'later' }): Promise<{ report: LintReport; pending: PendingLint }> {
  const view = await viewOf(m, platforms);
  const cni = checkCni(view);
  const early: LintReport = { problems: [...checkBinaries(view), ...(cni ?? [])], warnings: checkLvscare(view), notes: [] };
  const rules = byRules(view);
  const report = o.images === 'rules' ? merge(early, checkImages(view, new Map(view.platforms.map((p) => [arch(p), rules] as const)))) : early;
  return { report, pending: { view, images: o.images === 'later', charts: cni === undefined } };
}

/**
 * The checks that waited for the resolution: the CNI chart by the resolved charts' names, and
 * kubeadm's images for every arch — asked of the bundled kubeadm (`run`) for `nativeArch`, this
 * machine's, and by acpack's copy of kubeadm's rules for the others and where it cannot run (with
 * no rules for its version, its own answer stands for every arch: kubeadm's list does not depend on
 * the arch).
 */
export async function lintResolved(p: PendingLint, got: { charts: { name: string }[]; nativeArch?: Arch; run: KubeadmRun }): Promise<LintReport> {
  const problems = p.charts ? checkCni({ ...p.view, charts: got.charts.map((c) => ({ name: c.name, where: '' })) })! : [];
  const lists = new Map<Arch, KubeadmList>();
  const notes: string[] = [];
  if (p.images) {
    const rules = byRules(p.view);
    const kubeadmHere = got.nativeArch && p.view.binaries.some((b) => b.name === 'kubeadm' && b.install && b.arches.includes(got.nativeArch!));
    const native = kubeadmHere ? await got.run(imageListConfig(p.view)) : undefined;
    if (native && 'cannotRun' in native) {
      const fallback = 'unchecked' in rules ? '' : ": kubeadm's images were checked by acpack's copy of its rules instead";
      notes.push(`the bundled kubeadm for ${formatPlatform({ os: 'linux', architecture: got.nativeArch! })} cannot run here (${native.cannotRun})${fallback}`);
    }
    const asked = native && !('cannotRun' in native) ? native : undefined;
    for (const a of p.view.platforms.map(arch)) {
      if (asked && a === got.nativeArch) lists.set(a, asked);
      else if (asked && 'unchecked' in rules && 'listed' in asked) lists.set(a, { ...asked, by: `${asked.by} for ${got.nativeArch} (kubeadm's list does not depend on the arch)` });
      else lists.set(a, rules);
    }
  }
  return merge({ problems, warnings: [], notes }, checkImages(p.view, lists));
}

/** With the CNI still unknown after lintManifest (validate fetches nothing): what was not checked. */
export function uncheckedCharts(p: PendingLint): string[] {
  if (!p.charts) return [];
  const unknown = p.view.charts.filter((c) => !c.name).map((c) => c.where);
  return [`the ${DEFAULT_CNI} chart was not looked for: ${plural(unknown.length, 'local chart')} (${unknown.join(', ')}) could not be read here`];
}

/** The refusal of a bundle that cannot lay a cluster down. */
export function incompleteError(m: { name: string; version: string }, problems: string[], after: string): AcpackError {
  return new AcpackError(
    'INCOMPLETE_BUNDLE',
    `${m.name} ${m.version} carries kubeadm, so it is meant to lay a cluster down, and it cannot:\n  - ${problems.join('\n  - ')}\n${after}; fix the manifest, or build it anyway with --allow-incomplete (acinstall will refuse it on site, or fail there)`,
  );
}
