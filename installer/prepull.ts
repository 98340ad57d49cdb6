import type { BundleDescriptor } from '../oci/bundle-format.js';
import { parseReference } from '../oci/reference.js';
import { PREHEAT_PATH } from '../p2p/protocol.js';
import { AGENT_LOCAL, CERTS_D, RUNS_DIR, shq } from './node-setup.js';
import type { SshHost } from './ssh.js';

// Images pulled ahead (docs/p2p.md): as soon as a node's containerd and agent run, it starts pulling
// its arch's images for kubeadm into the namespace the kubelet uses, in the background, through the
// agent — so that they arrive while kubeadm init and the joins run, not after, when the kubelet asks.

/** What kubeadm runs on masters only (static pods of the control plane). */
const CONTROL_PLANE = ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'etcd'];
/** What every node runs: the sandbox, kube-proxy's DaemonSet, CoreDNS (scheduled anywhere). */
const EVERY_NODE = ['pause', 'kube-proxy', 'coredns'];

/** The node's background pull: its image list, PID, log and exit status. */
export const PREPULL_DIR = `${RUNS_DIR}/prepull`;

/**
 * The bundle's images a node of this arch and role pulls ahead: kubeadm's for its role, lvscare on
 * workers of a cluster with several masters, then the charts' (`charts`, chart-images.ts) on every
 * node, since their DaemonSets (the CNI first) run on masters too.
 */
export function prepullImages(d: BundleDescriptor, arch: string, master: boolean, lvscare?: string, charts: string[] = []): string[] {
  const names = new Set(master ? [...CONTROL_PLANE, ...EVERY_NODE] : EVERY_NODE);
  const name = (ref: string) => parseReference(ref).repository.split('/').pop()!;
  const ofArch = d.images.filter((i) => i.platforms.some((p) => p.platform.split('/')[1] === arch));
  const kubeadm = ofArch.filter((i) => names.has(name(i.ref)) || (!master && i.ref === lvscare)).map((i) => i.ref);
  const forCharts = ofArch.filter((i) => charts.includes(i.ref) && !kubeadm.includes(i.ref)).map((i) => i.ref);
  return [...kubeadm, ...forCharts];
}

/**
 * Shell: true while the pull named by `dir`/pid still runs. The PID's command line must name `dir`:
 * a pid file that outlived a reboot may name a PID some other process has now.
 */
export function prepullRunning(dir = PREPULL_DIR): string {
  return `[ -f ${shq(dir)}/pid ] && grep -qsaF ${shq(dir)} "/proc/$(cat ${shq(dir)}/pid)/cmdline"`;
}

/**
 * Starts the pull detached from the SSH session (it outlives it): each image in turn with ctr into
 * containerd's k8s.io namespace, through the hosts.toml acinstall wrote; one that fails does not
 * stop the others. Meanwhile the node's agent preheats the whole list (p2p/preheat.ts), so that its
 * layers cross the network all at once rather than image by image; ctr's requests join those
 * fetches. An agent that is down costs nothing: ctr pulls from the registry. `status` holds 0 when
 * every image arrived. A pull of the same list still running
 * is left alone; one of another list (an earlier bundle's) is stopped first.
 */
export function prepullScript(refs: string[], arch: string, dir = PREPULL_DIR): string {
  const d = shq(dir);
  const pull = `ctr -n k8s.io images pull --hosts-dir ${CERTS_D} --platform linux/${arch}`;
  const worker = [
    `curl -sS --max-time 3600 -X POST --data-binary @${d}/preheat.json ${AGENT_LOCAL}${PREHEAT_PATH} > ${d}/preheat.out 2>&1 &`,
    'rc=0',
    `while read -r ref; do ${pull} "$ref" >/dev/null 2>>${d}/log || { rc=1; echo "failed: $ref" >> ${d}/log; }; done < ${d}/images`,
    `echo $rc > ${d}/status`,
  ].join('\n');
  return [
    `mkdir -p ${d}`,
    `printf '%s\\n' ${refs.map(shq).join(' ')} > ${d}/images.next`,
    `if ${prepullRunning(dir)}; then`,
    `  if [ "$(sha256sum < ${d}/images.next)" = "$(sha256sum < ${d}/images 2>/dev/null)" ]; then rm -f ${d}/images.next; echo running; exit 0; fi`,
    `  kill -- -"$(cat ${d}/pid)" 2>/dev/null || true`,
    'fi',
    `rm -f ${d}/status ${d}/log ${d}/pid ${d}/preheat.out`,
    `mv -f ${d}/images.next ${d}/images`,
    `printf '%s' ${shq(JSON.stringify({ images: refs, platform: `linux/${arch}` }))} > ${d}/preheat.json`,
    `setsid sh -c ${shq(worker)} < /dev/null > /dev/null 2>&1 &`,
    `echo $! > ${d}/pid`,
    'echo started',
  ].join('\n');
}

export async function startPrepull(host: SshHost, refs: string[], arch: string): Promise<void> {
  if (refs.length) await host.check(prepullScript(refs, arch), 'starting the images pulled ahead');
}

/** Where a node's pull stands: 'done', 'running', or what failed (the end of its log). */
export async function prepullState(host: SshHost): Promise<string> {
  const d = shq(PREPULL_DIR);
  const out = await host.check(`if [ -f ${d}/status ]; then echo "status $(cat ${d}/status)"; tail -n 3 ${d}/log 2>/dev/null; elif [ -f ${d}/pid ]; then echo running; else echo none; fi`, 'looking at the images pulled ahead');
  if (out.startsWith('status 0')) return 'done';
  if (out.startsWith('status')) return out.split('\n').slice(1).join(' | ').trim() || 'failed';
  return out.trim();
}
