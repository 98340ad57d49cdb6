/**
 * Shell run on the benchmark's nodes (bench/p2p/run.ts), over SSH from each node to itself so that
 * nothing but the measured transfers crosses the master's link.
 */
import { AGENT_LOCAL, shq } from '../../installer/node-setup.js';
import { PREHEAT_PATH } from '../../p2p/protocol.js';

/** Where a mode's containerd lives on a node (in the host's tmpfs overlay), removed after the mode. */
export const benchDir = (mode: string) => `/var/lib/acpack-bench-p2p/${mode}`;

/**
 * Starts a containerd of the mode's own, with its own root, as bench/install does: containerd
 * shares content between namespaces of one root (content_sharing_policy "shared"), so a blob
 * fetched in an earlier mode would be taken as present and not transferred again. A fresh root per
 * mode, removed afterwards, keeps every mode's transfers real and the tmpfs from filling up.
 */
export function startContainerd(dir: string): string {
  const config = [
    'version = 2',
    `root = "${dir}/root"`,
    `state = "${dir}/state"`,
    'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
    '[grpc]',
    `  address = "${dir}/sock"`,
    '[ttrpc]',
    `  address = "${dir}/sock.ttrpc"`,
    '',
  ].join('\n');
  return [
    'set -e',
    `rm -rf ${shq(dir)} && mkdir -p ${shq(dir)}`,
    `printf '%s' ${shq(config)} > ${dir}/config.toml`,
    `{ containerd --config ${dir}/config.toml > ${dir}/log 2>&1 < /dev/null & echo $! > ${dir}/pid; }`,
    `for i in $(seq 100); do [ -S ${dir}/sock ] && break; sleep 0.1; done`,
    `[ -S ${dir}/sock ] || { echo "containerd did not start: $(tail -5 ${dir}/log)" >&2; exit 1; }`,
  ].join('\n');
}

/** Stops the mode's containerd by its PID and removes its root (and everything it fetched). */
export function stopContainerd(dir: string): string {
  return [
    `if [ -f ${dir}/pid ]; then kill $(cat ${dir}/pid) 2>/dev/null || true; for i in $(seq 50); do kill -0 $(cat ${dir}/pid) 2>/dev/null || break; sleep 0.1; done; fi`,
    `rm -rf ${shq(dir)}`,
  ].join('\n');
}

/**
 * A hosts dir naming the site registry only: acinstall's /etc/containerd/certs.d copied, with each
 * file's `[host."…"]` table (the node's agent, the last thing in the file) replaced by one naming
 * the file's own server (the site registry) with its CA. The server, its CA and its capabilities
 * stay as acinstall wrote them: the same pull, minus the peer cache. (The registry as a [host],
 * not just `server`: containerd 1.6.20's `ctr --hosts-dir` refuses a hosts.toml with no [host]
 * table, "invalid `host` tree". As a [host] it is asked with `?ns=`, as the agent would be.)
 */
export function directHostsDir(dir: string): string {
  return [
    'set -e',
    `rm -rf ${dir}/certs.d && cp -r /etc/containerd/certs.d ${dir}/certs.d`,
    `for f in ${dir}/certs.d/*/hosts.toml; do`,
    String.raw`  server=$(sed -n 's/^server = "\(.*\)"$/\1/p' "$f")`,
    String.raw`  ca=$(sed -n 's/^ca = "\(.*\)"$/\1/p' "$f")`,
    '  [ -n "$server" ]',
    String.raw`  sed -i '/^\[host\./,$d' "$f"`,
    String.raw`  printf '[host."%s"]\n  capabilities = ["pull", "resolve"]\n' "$server" >> "$f"`,
    String.raw`  if [ -n "$ca" ]; then printf '  ca = "%s"\n' "$ca" >> "$f"; fi`,
    'done',
    `! grep -q '127.0.0.1:5001' ${dir}/certs.d/*/hosts.toml`,
  ].join('\n');
}

/**
 * Waits until the epoch second `at` (every host shares this machine's clock), then fetches the
 * images one after another, as the kubelet does by default (serializeImagePulls), each with ctr's
 * three layers at a time, without unpacking; prints `START END` epoch seconds and, on a second line,
 * when each image was in, or fails with each
 * failed fetch's error output. (Every image at once, 40 ctr clients on this 2-core machine, starved
 * the master into TLS handshake timeouts before any mode was measured.) With `preheat`, the node's
 * agent is asked to preheat the same list meanwhile, as the installer's pull-ahead does
 * (installer/prepull.ts). `ctr --debug` turns ctr's progress bars off (it draws none with debug
 * output on): their poll of containerd's ingests every 100 ms cost the 8 nodes' ctr and containerd
 * ~15 CPU-seconds a run on this 2-core machine, time the kubelet, which draws none, does not spend.
 */
export function timedFetch(dir: string, hostsDir: string, refs: string[], at: number, preheat = false): string {
  const ctr = `ctr --debug --address ${dir}/sock -n bench content fetch --hosts-dir ${shq(hostsDir)} --platform linux/amd64`;
  return [
    `d=$(awk -v t=${at.toFixed(3)} -v n=$(date +%s.%N) 'BEGIN { d = t - n; if (d < 0) d = 0; if (d > 60) d = 60; printf "%.3f", d }')`,
    'sleep "$d"',
    'start=$(date +%s.%N)',
    'fail=0',
    ...(preheat ? [`curl -sS --max-time 1800 -X POST --data-binary ${shq(JSON.stringify({ images: refs, platform: 'linux/amd64' }))} ${AGENT_LOCAL}${PREHEAT_PATH} > ${dir}/preheat.out 2>&1 &`] : []),
    'images_in=""',
    ...refs.map((ref, i) => `${ctr} ${shq(ref)} > /dev/null 2> ${dir}/fetch${i}.err || { fail=1; echo "fetch ${i}: $(tail -3 ${dir}/fetch${i}.err)" >&2; }; images_in="$images_in $(date +%s.%N)"`),
    'end=$(date +%s.%N)',
    ...(preheat ? ['wait'] : []),
    'echo "$start $end"',
    'echo "$images_in"',
    'exit $fail',
  ].join('\n');
}

/** The digests the mode's containerd holds, one a line. */
export const contentList = (dir: string) => `ctr --address ${dir}/sock -n bench content ls -q`;

/** The agent's byte counters since it started. */
export const agentStats = 'curl -fsS --max-time 5 http://127.0.0.1:5001/p2p/v1/stats';

/**
 * Stops the node's agent, empties its cache, starts it again and waits for it to answer: the next
 * P2P run starts with no blob anywhere but the master (and the agent's counters at zero). Stopping
 * tells the tracker the node is gone, so it forgets what the node held.
 */
export const resetAgent = [
  'systemctl stop acpack-agent',
  'rm -rf /var/lib/acpack-agent',
  'systemctl start acpack-agent',
  'for i in $(seq 75); do curl -fsS -o /dev/null --max-time 2 http://127.0.0.1:5001/v2/ && exit 0; sleep 0.2; done',
  'echo "the agent does not answer after its restart" >&2; exit 1',
].join('\n');

/** The tmpfs the host's overlay writes to: used and available bytes. */
export const overlayUse = "df -B1 --output=used,avail / | tail -1";
