import type { BundleDescriptor } from '../oci/bundle-format.js';
import { AcpackError } from '../oci/errors.js';
import type { HostSpec } from './cluster-spec.js';
import type { DetachedRun, SshHost } from './ssh.js';
import { failedRun } from './failed-run.js';
import { RUNS_DIR, shq, writeFilesScript } from './node-setup.js';
import { CRI_SOCKET, joinConfig, KUBEADM_CONFIG, kubernetesVersion, missingImages, type JoinInfo } from './kubeadm-config.js';

export { KUBEADM_CONFIG, kubeadmConfig, kubernetesVersion, type JoinInfo } from './kubeadm-config.js';

/** kubeadm waits minutes for a control plane to come up. */
const KUBEADM_TIMEOUT = 600_000;
/** A join's configuration holds its token and certificate key: root's only, and gone once joined. */
const JOIN_CONFIG = '/etc/kubernetes/acpack-join.yaml';

/** Parses `kubeadm join …` as kubeadm prints it (init output or `token create --print-join-command`). */
export function parseJoin(text: string): JoinInfo | undefined {
  const flat = text.replace(/\\\n/g, ' ');
  const m = /kubeadm join (\S+) --token (\S+)\s+--discovery-token-ca-cert-hash (\S+)/.exec(flat);
  return m ? { endpoint: m[1], token: m[2], caCertHash: m[3] } : undefined;
}

/**
 * Asks the bundle's own kubeadm, on the first master, which images the configuration needs, and
 * refuses — naming each — when the bundle lacks one: kubeadm's preflight would fail pulling it on a
 * site with no way out (or, with a tag kubeadm picked itself, run an image nobody bundled).
 */
export async function checkKubeadmImages(host: SshHost, d: BundleDescriptor, config: string): Promise<void> {
  const write = writeFilesScript({ [KUBEADM_CONFIG]: config });
  const listed = await host.check(`umask 077\n${write.script}\nkubeadm config images list --config ${KUBEADM_CONFIG}`, 'kubeadm config images list', 120_000, write.input);
  let missing: string[];
  try {
    missing = missingImages(d, listed);
  } catch (err) {
    throw new AcpackError('NODE_STEP', `${host.spec.ip}: kubeadm config images list printed what is not an image list (${(err as Error).message})`);
  }
  if (missing.length) {
    throw new AcpackError(
      'BAD_BUNDLE',
      `kubeadm needs ${missing.length === 1 ? 'an image' : `${missing.length} images`} to install Kubernetes ${kubernetesVersion(d)} that ${d.name} ${d.version} does not carry:\n${missing.map((m) => `  ${m}`).join('\n')}\n(asked with kubeadm config images list --config ${KUBEADM_CONFIG} on ${host.spec.ip}): add ${missing.length === 1 ? 'it' : 'them'} to the manifest's images (no kubeadm step was started on any node)`,
    );
  }
}

/** Files a kubeadm init or join writes, whose presence makes the next one's preflight fail. */
const LEFT_BEHIND = [
  'ls /etc/kubernetes/manifests/*.yaml',
  ...['kubelet.conf', 'bootstrap-kubelet.conf', 'admin.conf', 'pki/ca.crt'].map((f) => `test -e /etc/kubernetes/${f}`),
  'ls -A /var/lib/etcd 2>/dev/null | grep -q .',
];
/**
 * kubeadm reset as acinstall runs it, naming the CRI socket: on a node that also has docker's (or
 * another runtime's) socket, kubeadm cannot choose and refuses without it.
 */
export const KUBEADM_RESET = `kubeadm reset -f --cri-socket ${CRI_SOCKET}`;

/** Shell: true when the node holds any of them. */
const LEFT_BEHIND_TEST = LEFT_BEHIND.map((c) => `${c} >/dev/null 2>&1`).join(' || ');
/** The detached runs (SshHost.runDetached) of kubeadm init and join. */
const INIT_RUN = 'kubeadm-init';
const JOIN_RUN = 'kubeadm-join';

/**
 * Shell: true on a node where acinstall started a kubeadm init or join whose work is still there —
 * installed, or cut off halfway (finished unobserved, failed, died with its node). Its kubelet, API
 * server and etcd may hold Kubernetes's ports; the kubeadm step takes the run as done or resets it
 * (kubeadm reset frees them), and kubeadm's own preflight checks them before it runs again.
 */
export const KUBEADM_STARTED_HERE = `{ { ${[INIT_RUN, JOIN_RUN].map((id) => `test -f ${RUNS_DIR}/${id}/cmd`).join(' || ')}; } && { ${LEFT_BEHIND_TEST}; }; }`;

/**
 * Runs a kubeadm init or join detached from the SSH session, so that a dropped connection neither
 * kills it nor leaves it unobserved, and picks up where an earlier run stopped: a run still going is
 * waited for; one that finished well (and whose work is still on the node: `proof`) is done; one that
 * failed or died with its node (files written, no success) is undone with `kubeadm reset -f` and run
 * again. Files no run of ours explains are left to kubeadm's own preflight to report.
 */
async function resumable(host: SshHost, id: string, command: string, what: string, proof: string, file: { path: string; content: () => Promise<string> }): Promise<{ stdout: string; resumed: boolean }> {
  const probe = [`if test -e ${shq(proof)}; then echo proof; fi`, `if ${LEFT_BEHIND_TEST}; then echo left-behind; fi`].join('\n');
  const earlier = await host.detachedRun(id, KUBEADM_TIMEOUT, probe);
  if (earlier.state === 'running') throw new AcpackError('NODE_STEP', `${host.spec.ip}: the ${what} of an earlier run is still going after ${KUBEADM_TIMEOUT / 60_000} minutes: run again later`);
  const found = earlier.probe.split('\n');
  if (earlier.state === 'finished' && earlier.code === 0 && found.includes('proof')) return { stdout: earlier.stdout, resumed: true };
  if (earlier.state !== 'none' && found.includes('left-behind')) {
    const why = earlier.state === 'lost' ? 'died with its node or was killed' : earlier.state === 'finished' && earlier.code === 0 ? 'was undone since' : 'failed';
    await host.check(KUBEADM_RESET, `kubeadm reset (the ${what} of an earlier run ${why})`, 300_000);
  }
  const run: DetachedRun = await host.runDetached(id, command, KUBEADM_TIMEOUT, writeFilesScript({ [file.path]: await file.content() }));
  if (run.state === 'finished' && run.code === 0) return { stdout: run.stdout, resumed: false };
  throw failedRun(host.spec.ip, what, run);
}

/**
 * `kubeadm init` on the first master, without uploading the control-plane certificates (they wait,
 * encrypted, in a Secret for two hours: uploaded only when a master joins, see uploadCerts).
 * Returns the join material it printed, or nothing when it had finished in an earlier, interrupted
 * run (that token may be old: the caller asks for a fresh one).
 */
export async function kubeadmInit(host: SshHost, config: string, skipPhases: string[]): Promise<{ join?: JoinInfo; resumed: boolean }> {
  const skip = skipPhases.length ? ` --skip-phases=${skipPhases.join(',')}` : '';
  const r = await resumable(host, INIT_RUN, `kubeadm init --config ${KUBEADM_CONFIG}${skip}`, 'kubeadm init', '/etc/kubernetes/admin.conf', { path: KUBEADM_CONFIG, content: async () => config });
  if (r.resumed) return { resumed: true };
  const join = parseJoin(r.stdout);
  if (!join) throw new AcpackError('NODE_STEP', `${host.spec.ip}: kubeadm init did not print a join command`);
  return { join, resumed: false };
}

/** Fresh join material from an initialized first master (a re-run after init). */
export async function joinInfoFrom(host: SshHost): Promise<JoinInfo> {
  const join = parseJoin(await host.check('kubeadm token create --print-join-command', 'kubeadm token create', KUBEADM_TIMEOUT));
  if (!join) throw new AcpackError('NODE_STEP', `${host.spec.ip}: kubeadm token create printed no join command`);
  return join;
}

/** Uploads the control-plane certificates for a master about to join; returns the key that decrypts them. */
export async function uploadCerts(host: SshHost): Promise<string> {
  const out = await host.check(`kubeadm init phase upload-certs --upload-certs --config ${KUBEADM_CONFIG}`, 'kubeadm upload-certs', KUBEADM_TIMEOUT);
  const key = out.trim().split('\n').pop()?.trim();
  if (!key || !/^[a-f0-9]{64}$/.test(key)) throw new AcpackError('NODE_STEP', `${host.spec.ip}: kubeadm init phase upload-certs printed no certificate key`);
  return key;
}

/**
 * `kubeadm join --config` with a JoinConfiguration (its token and key go on standard input, never
 * into a command line or a log, and the file goes once kubeadm is done with it), resumable like
 * init. A master joins with a certificate key, asked for (`certificateKey`: uploading the
 * certificates) only when a join is about to run, not when an earlier one had finished.
 */
export async function kubeadmJoin(host: SshHost, node: HostSpec, join: JoinInfo, certificateKey?: () => Promise<string>): Promise<{ resumed: boolean }> {
  const what = certificateKey ? 'kubeadm join (control plane)' : 'kubeadm join';
  const command = `kubeadm join --config ${JOIN_CONFIG}\ncode=$?\nrm -f ${JOIN_CONFIG}\nexit $code`;
  const content = async () => joinConfig(node, join, certificateKey ? await certificateKey() : undefined);
  const r = await resumable(host, JOIN_RUN, command, what, '/etc/kubernetes/kubelet.conf', { path: JOIN_CONFIG, content });
  return { resumed: r.resumed };
}
