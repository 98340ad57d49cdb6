import type { BundleDescriptor } from '../oci/bundle-format.js';
import { hexOf, sha256, type Digest } from '../oci/digest.js';
import { AcpackError, plural } from '../oci/errors.js';
import { parseReference } from '../oci/reference.js';
import type { SshHost } from './ssh.js';

/** A shell line that fails (exit 3, saying `message`) unless `file` (already quoted) hashes to `digest`. */
export function sha256Check(file: string, digest: Digest, message: string): string {
  return `[ "$(sha256sum ${file} | cut -d' ' -f1)" = ${shq(hexOf(digest))} ] || { echo ${shq(message)} >&2; exit 3; }`;
}

/** Single-quotes a value for sh. */
export function shq(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** Where nodes keep the site registry's CA (written with containerd's configuration). */
export const NODE_CA = '/etc/acpack/registry-ca.crt';

/** Where nodes keep their detached runs: a directory each, with the command, its PID, output and exit status. */
export const RUNS_DIR = '/var/lib/acpack/runs';

/**
 * Where a node keeps acinstall's runtime (the bundle's executable for its arch), which its own
 * processes (the peer cache's agent) run on. Private: the operator's acinstall on the PATH, if any, stays theirs.
 */
export const NODE_RUNTIME = '/usr/local/lib/acpack/acinstall';

/** The peer cache agent's port, on 127.0.0.1 for the node's containerd and on the node's address for its peers. */
export const AGENT_PORT = 5001;
/** Where the node's own containerd and curl reach its agent. */
export const AGENT_LOCAL = `http://127.0.0.1:${AGENT_PORT}`;

/** Where containerd's CRI plugin reads a hosts.toml per registry host. */
export const CERTS_D = '/etc/containerd/certs.d';

/**
 * During a Kubernetes upgrade a node's kubelet must not run ahead of its control plane: its new
 * binary is staged beside the old one and swapped in after `kubeadm upgrade` (see upgrade.ts).
 */
export const HELD_DURING_UPGRADE = new Set(['kubelet']);
export const STAGED = '.acpack-new';

/**
 * The node fetches its own arch's binaries through its peer cache agent (`agent`), or from the
 * master's registry, and checks each sha256 before anything is installed: one SSH round trip, no
 * file staged on the master per node.
 */
export function binariesScript(d: BundleDescriptor, arch: string, registry: string, hold = new Set<string>(), replaced?: BundleDescriptor, agent = AGENT_LOCAL): string {
  const lines = ['set -e', 'dir=$(mktemp -d)', 'trap \'rm -rf "$dir"\' EXIT'];
  for (const b of d.binaries.filter((x) => x.arch === arch)) {
    const path = `/v2/${b.ref.replace(/:[^:/]+$/, '')}/blobs/${b.digest}`;
    const f = `"$dir/${b.name}"`;
    const good = `[ "$(sha256sum ${f} | cut -d' ' -f1)" = ${shq(hexOf(b.digest))} ]`;
    // Through the node's peer cache when it runs; from the registry when it does not, or its copy is not good.
    lines.push(`if ! { curl -fsS --max-time 600 -o ${f} ${shq(`${agent}${path}`)} 2>/dev/null && ${good}; }; then`);
    lines.push(`  curl -fsS --retry 3 --max-time 600 ${registry.startsWith('https:') ? `--cacert ${NODE_CA} ` : ''}-o ${f} ${shq(`${registry}${path}`)}`);
    lines.push(`  ${sha256Check(f, b.digest, `${b.name}: sha256 mismatch from ${registry}${path}`)}`);
    lines.push('fi');
    if (b.extract) lines.push(`mkdir -p ${shq(b.extract)} && tar -xzf ${f} -C ${shq(b.extract)}`);
    // -T: the path IS the file; a directory in its place is an error, not a place to drop the file into.
    // Written beside and renamed: a node dying mid-copy never leaves a truncated binary in place.
    else if (b.install && hold.has(b.name)) lines.push(`install -D -T -m ${shq(b.mode)} ${f} ${shq(`${b.install}${STAGED}`)}`);
    else if (b.install) lines.push(`install -D -T -m ${shq(b.mode)} ${f} ${shq(`${b.install}${STAGED}`)} && mv -f -T ${shq(`${b.install}${STAGED}`)} ${shq(b.install)}`);
  }
  // Last: a failed download leaves the node with everything it had.
  lines.push(...removeIfOurs(droppedFiles(replaced, d, arch)));
  return lines.join('\n');
}

/**
 * Installs `d`'s binaries for `arch` (see binariesScript); `replaced` is the
 * bundle whose binaries the node holds now, whose files `d` no longer installs go. Returns what was
 * installed, and a warning for each dropped file left in place.
 */
export async function installBinaries(host: SshHost, d: BundleDescriptor, arch: string, registry: string, hold?: Set<string>, replaced?: BundleDescriptor): Promise<{ installed: string; warnings: string[] }> {
  const count = d.binaries.filter((b) => b.arch === arch).length;
  const out = await host.check(binariesScript(d, arch, registry, hold, replaced), 'installing binaries', 900_000);
  return { installed: `${plural(count, 'binary', 'binaries')} for ${arch}`, warnings: keptWarnings(host.spec.ip, out) };
}

/** Install path → the sha256 (hex) of each file `d` puts there: `arch`'s, or any arch's when not given. */
export function installedFiles(d: BundleDescriptor | undefined, arch?: string): Map<string, Set<string>> {
  const files = new Map<string, Set<string>>();
  for (const b of d?.binaries ?? []) {
    if (b.install && (arch === undefined || b.arch === arch)) files.set(b.install, (files.get(b.install) ?? new Set()).add(hexOf(b.digest)));
  }
  return files;
}

/** What `before` installed on an `arch` node at a path `after` installs nothing at. */
export function droppedFiles(before: BundleDescriptor | undefined, after: BundleDescriptor, arch: string): Map<string, Set<string>> {
  const kept = installedFiles(after, arch);
  return new Map([...installedFiles(before, arch)].filter(([path]) => !kept.has(path)));
}

const KEPT = 'acpack-kept:';

/**
 * Shell lines removing each file that still holds bytes a bundle put there. A file whose sha256 is
 * another is someone else's now (an admin's fix, another package's): it stays, and a line says so
 * for keptWarnings.
 */
export function removeIfOurs(files: Map<string, Set<string>>): string[] {
  return [...files].map(([path, shas]) =>
    `if [ -f ${shq(path)} ]; then case "$(sha256sum < ${shq(path)} | cut -c1-64)" in ${[...shas].join('|')}) rm -f ${shq(path)} ;; *) echo ${shq(`${KEPT} ${path}`)} ;; esac; fi`,
  );
}

/** A warning per file that removeIfOurs left on `node`, read from its script's output. */
export function keptWarnings(node: string, output: string): string[] {
  return output
    .split('\n')
    .filter((l) => l.startsWith(`${KEPT} `))
    .map((l) => `warning: ${node}: kept ${l.slice(KEPT.length + 1)}: it changed since acinstall installed it (another sha256), so it is not acinstall's to remove`);
}

/** Every upstream registry host the bundle's images come from. */
export function upstreamHosts(d: BundleDescriptor): string[] {
  return [...new Set(d.images.map((i) => parseReference(i.ref).host))].sort();
}

/** The bundle's pause image, pinned as containerd's sandbox image. */
export function sandboxImage(d: BundleDescriptor): string | undefined {
  return d.images.find((i) => /\/pause:[^/]+$/.test(i.ref))?.ref;
}

/**
 * containerd's config.toml (registry config_path, pinned sandbox image, systemd cgroups) and a
 * hosts.toml for every upstream host, so that image names stay as they are and nothing is ever
 * fetched from the internet. containerd tries each `[host]` in order and then the top-level `server`
 * as one more host, with the top-level TLS settings (remotes/docker/config/hosts.go): the site
 * registry is that `server`, with the site CA and pull/resolve only, and the node's peer cache agent
 * (`agent`, plain HTTP on loopback) the one `[host]`, tried first: when it is down containerd goes on
 * to the server. containerd sends both `?ns=<upstream host>`, which the registry's mirror mode
 * answers (the agent passes it on). `siteHost` (sealer's `sea.hub:5000`, which ACK Distro's charts name their
 * images under) gets one too.
 */
export function containerdFiles(d: BundleDescriptor, registry: string, ca?: string, siteHost?: string, agent = AGENT_LOCAL): Record<string, string> {
  const files: Record<string, string> = {};
  if (ca) files[NODE_CA] = ca;
  const sandbox = sandboxImage(d);
  files['/etc/containerd/config.toml'] = [
    'version = 2',
    '',
    '[plugins."io.containerd.grpc.v1.cri"]',
    ...(sandbox ? [`  sandbox_image = "${sandbox}"`] : []),
    '  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]',
    '    runtime_type = "io.containerd.runc.v2"',
    '    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]',
    '      SystemdCgroup = true',
    '  [plugins."io.containerd.grpc.v1.cri".registry]',
    `    config_path = "${CERTS_D}"`,
    '',
  ].join('\n');
  for (const host of new Set([...upstreamHosts(d), ...(siteHost ? [siteHost] : [])])) {
    const dir = host === 'docker.io' ? 'docker.io' : host;
    files[`${CERTS_D}/${dir}/hosts.toml`] = [
      `# Written by acinstall: ${host} is served by the site registry; there is no way out to the internet.`,
      `server = "${registry}"`,
      'capabilities = ["pull", "resolve"]',
      ...(ca ? [`ca = "${NODE_CA}"`] : []),
      '',
      `[host."${agent}"]`,
      '  capabilities = ["pull", "resolve"]',
      '',
    ].join('\n');
  }
  return files;
}

/**
 * The shell that writes files on a node atomically (temp + rename), and the standard input it reads:
 * the contents one after the other (`head -c` takes each one's exact byte count), never in the
 * command line (Linux caps one argument at 128 KiB, and a file may hold a secret). Each is checked by
 * its sha256 before it replaces anything. For a caller that runs it inside a command of its own.
 */
export function writeFilesScript(files: Record<string, string>): { script: string; input: string } {
  const script = ['set -e'];
  for (const [path, content] of Object.entries(files)) {
    const tmp = shq(`${path}.acpack-tmp`);
    script.push(
      `mkdir -p "$(dirname ${shq(path)})"`,
      `head -c ${Buffer.byteLength(content)} > ${tmp}`,
      sha256Check(tmp, sha256(content), `${path}: what arrived on standard input is not what was sent`),
      `mv -f ${tmp} ${shq(path)}`,
    );
  }
  return { script: script.join('\n'), input: Object.values(files).join('') };
}

/** Writes files on a node (see writeFilesScript), in one round trip. */
export async function writeFiles(host: SshHost, files: Record<string, string>): Promise<void> {
  const { script, input } = writeFilesScript(files);
  await host.check(script, `writing ${Object.keys(files).join(', ')}`, 60_000, input);
}

const KUBELET_UNIT = `[Unit]
Description=kubelet: The Kubernetes Node Agent
Wants=network-online.target
After=network-online.target containerd.service

[Service]
ExecStart=/usr/bin/kubelet
Restart=always
StartLimitInterval=0
RestartSec=10

[Install]
WantedBy=multi-user.target
`;

/** kubeadm's own drop-in: kubelet reads what kubeadm init/join writes. */
const KUBEADM_DROPIN = `[Service]
Environment="KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf"
Environment="KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml"
EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env
EnvironmentFile=-/etc/default/kubelet
ExecStart=
ExecStart=/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS
`;

const CONTAINERD_UNIT = `[Unit]
Description=containerd container runtime
After=network.target local-fs.target

[Service]
ExecStartPre=-/sbin/modprobe overlay
ExecStart=/usr/local/bin/containerd
Type=notify
Delegate=yes
KillMode=process
Restart=always
RestartSec=5
LimitNOFILE=infinity
TasksMax=infinity
OOMScoreAdjust=-999

[Install]
WantedBy=multi-user.target
`;

/** The node's kernel settings and units for Kubernetes, as files (written atomically). */
export function serviceFiles(): Record<string, string> {
  return {
    '/etc/systemd/system/kubelet.service': KUBELET_UNIT,
    '/etc/systemd/system/kubelet.service.d/10-kubeadm.conf': KUBEADM_DROPIN,
    '/etc/modules-load.d/acpack-k8s.conf': 'overlay\nbr_netfilter\n',
    '/etc/sysctl.d/99-acpack-k8s.conf': 'net.bridge.bridge-nf-call-iptables = 1\nnet.bridge.bridge-nf-call-ip6tables = 1\nnet.ipv4.ip_forward = 1\n',
  };
}

/**
 * What containerd last ran on a node when acinstall looked: "<fingerprint> <pid>". The running
 * daemon is proved every time; this only spares a restart when nothing changed since.
 */
export const CONTAINERD_APPLIED = '/etc/acpack/containerd.applied';

/** The line containerd's CRI plugin logs at start, with the whole configuration it took (pkg/cri/cri.go). */
const CRI_LINE = 'Start cri plugin with config';

/**
 * The node's side of containerd's start: the unit systemd has, a fingerprint of what containerd
 * runs (the binary of its ExecStart=, its unit and drop-ins, its config.toml), and a restart when
 * containerd is not running, when the fingerprint is not the one recorded last time, or when
 * `force`. Then, up to 60 s, the running daemon's CRI line in its journal (journald keeps a
 * service's output by PID), and the fingerprint recorded. Prints key=value lines.
 */
function containerdScript(force: boolean): string {
  return [
    'set -e',
    'unit=$(systemctl show -p ExecStart -p MainPID -p ActiveState containerd)',
    `exe=$(printf '%s\\n' "$unit" | sed -n 's/^ExecStart={ path=\\([^ ;]*\\) .*/\\1/p' | head -n 1)`,
    `old=$(printf '%s\\n' "$unit" | sed -n 's/^MainPID=//p')`,
    `fp=$( { printf '%s\\n' "$exe"; sha256sum "$exe" 2>&1; systemctl cat containerd 2>&1; sha256sum /etc/containerd/config.toml 2>&1; } | sha256sum | cut -d' ' -f1)`,
    'restarted=0',
    `if [ ${force ? 1 : 0} = 1 ] || ! printf '%s\\n' "$unit" | grep -qx ActiveState=active || [ "$(cut -d' ' -f1 ${CONTAINERD_APPLIED} 2>/dev/null)" != "$fp" ]; then systemctl restart containerd; restarted=1; fi`,
    'pid=0; line=; end=$(( $(date +%s) + 60 ))',
    'while [ "$(date +%s)" -lt "$end" ]; do',
    '  pid=$(systemctl show -p MainPID containerd | cut -d= -f2)',
    `  if [ "$pid" != 0 ]; then line=$(journalctl -u containerd _PID="$pid" -o cat --no-pager 2>/dev/null | grep -m 1 '${CRI_LINE}' || true); [ -n "$line" ] && break; fi`,
    '  sleep 0.5',
    'done',
    'started=0; if [ "$pid" != 0 ]; then started=$(( $(date +%s) - $(ps -o etimes= -p "$pid" || echo 0) )); fi',
    `mkdir -p ${CONTAINERD_APPLIED.replace(/\/[^/]*$/, '')} && echo "$fp $pid" > ${CONTAINERD_APPLIED}.tmp && mv -f ${CONTAINERD_APPLIED}.tmp ${CONTAINERD_APPLIED}`,
    `echo "fp=$fp"; echo "old=$old"; echo "pid=$pid"; echo "restarted=$restarted"; echo "started=$started"`,
    'echo "config=$(stat -c %Y /etc/containerd/config.toml)"',
    `echo "sandbox=$(sed -n 's/^ *sandbox_image *= *"\\(.*\\)" *$/\\1/p' /etc/containerd/config.toml | head -n 1)"`,
    `printf 'line=%s\\n' "$line"`,
  ].join('\n');
}

interface ContainerdRun {
  fp: string;
  old: number;
  pid: number;
  restarted: boolean;
  /** When the running daemon started, and when config.toml was last written (seconds). */
  started: number;
  config: number;
  sandbox: string;
  line: string;
}

/** Runs containerdScript after `before` (a script of its own, fed `input`) in one round trip. */
async function runContainerd(host: SshHost, force: boolean, before?: { script: string; input: string }): Promise<ContainerdRun> {
  const what = before ? 'enabling containerd and kubelet, starting containerd' : 'restarting containerd';
  const out = await host.check([before?.script ?? '', containerdScript(force)].join('\n'), what, 180_000, before?.input);
  const kv = Object.fromEntries(out.split('\n').filter((l) => l.includes('=')).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
  return { fp: kv.fp ?? '', old: Number(kv.old) || 0, pid: Number(kv.pid) || 0, restarted: kv.restarted === '1', started: Number(kv.started), config: Number(kv.config), sandbox: kv.sandbox ?? '', line: kv.line ?? '' };
}

/**
 * Why the running containerd is not proved to run our config.toml, or undefined when it is: a
 * restart gave it a new PID after the file was written, and its CRI line carries our ConfigPath,
 * SandboxImage and SystemdCgroup:true (`containerd config dump` would only re-read the file).
 */
export function containerdProblem(r: Pick<ContainerdRun, 'old' | 'pid' | 'restarted' | 'started' | 'config' | 'sandbox' | 'line'>): string | undefined {
  if (r.pid === 0) return 'containerd.service is not running after its start';
  if (!r.line) return `containerd (pid ${r.pid}) did not log "${CRI_LINE} {…}" within 60 s: is its CRI plugin disabled?`;
  if (r.restarted && r.old !== 0 && r.pid === r.old) return `containerd kept its PID ${r.pid} through the restart`;
  if (r.restarted && r.started < r.config) return `containerd (pid ${r.pid}) started before /etc/containerd/config.toml was written`;
  const wanted = [`ConfigPath:${CERTS_D} `, 'SystemdCgroup:true', ...(r.sandbox ? [`SandboxImage:${r.sandbox} `] : [])];
  const missing = wanted.filter((w) => !r.line.includes(w));
  if (!missing.length) return undefined;
  const took = [...['ConfigPath', 'SandboxImage'].map((k) => `${k}:${new RegExp(`${k}:([^ \\]}]*)`).exec(r.line)?.[1] ?? '?'}`), `SystemdCgroup:${r.line.includes('SystemdCgroup:true')}`].join(' ');
  return `containerd (pid ${r.pid}) does not run /etc/containerd/config.toml: its CRI configuration lacks ${missing.map((m) => m.trim()).join(', ')} (it took ${took}): does a drop-in or a --config in its unit point it elsewhere (systemctl cat containerd)?`;
}

/**
 * Loads the kernel modules and sysctls (where the kernel lets us: preflight already said what is
 * missing), turns swap off, enables containerd and kubelet (kubeadm starts kubelet), and makes
 * containerd run the configuration written before: restarted when its binary, unit or config
 * changed, or when it was not running, and proved from what the running daemon logged at start
 * (see containerdProblem); a node where that cannot be proved fails, saying why. containerd's unit
 * comes from its tarball; one is written only when none exists.
 */
export async function startServices(host: SshHost): Promise<void> {
  const unitDirs = ['/etc/systemd/system', '/usr/local/lib/systemd/system', '/usr/lib/systemd/system', '/lib/systemd/system'];
  const unit = '/etc/systemd/system/containerd.service';
  const enabling = [
    'set -e',
    'modprobe overlay 2>/dev/null || true',
    'modprobe br_netfilter 2>/dev/null || true',
    'sysctl -q -p /etc/sysctl.d/99-acpack-k8s.conf 2>/dev/null || true',
    'swapoff -a 2>/dev/null || true',
    // The unit travels on standard input: read whether or not it is needed.
    'mkdir -p /etc/systemd/system',
    `head -c ${Buffer.byteLength(CONTAINERD_UNIT)} > ${unit}.acpack-tmp`,
    `if ${unitDirs.map((d) => `! [ -f ${d}/containerd.service ]`).join(' && ')}; then mv -f ${unit}.acpack-tmp ${unit}; else rm -f ${unit}.acpack-tmp; fi`,
    'systemctl daemon-reload',
    'systemctl enable containerd kubelet',
  ].join('\n');
  let r = await runContainerd(host, false, { script: enabling, input: CONTAINERD_UNIT });
  let problem = containerdProblem(r);
  // Running from before with what was recorded, yet not proved (changed by hand, or never proved): restart it once and look again.
  if (problem && !r.restarted) problem = containerdProblem((r = await runContainerd(host, true)));
  if (problem) {
    const tail = (await host.exec('journalctl -u containerd -n 8 -o cat --no-pager 2>&1', 30_000)).stdout.split('\n').map((l) => (l.length > 300 ? `${l.slice(0, 300)}…` : l)).join('\n').trim();
    throw new AcpackError('NODE_STEP', `${host.spec.ip}: ${problem}${tail ? `\nits journal (journalctl -u containerd) ends:\n${tail}` : ''}`);
  }
}
