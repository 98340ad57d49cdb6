import { dirname } from 'node:path';
import type { BundleDescriptor } from '../oci/bundle-format.js';
import { hexOf, sha256 } from '../oci/digest.js';
import { PEER_BLOBS_PATH } from '../p2p/protocol.js';
import type { HostSpec } from './cluster-spec.js';
import { AGENT_LOCAL, AGENT_PORT, NODE_CA, NODE_RUNTIME, sha256Check, shq, STAGED } from './node-setup.js';
import type { SshHost } from './ssh.js';

// The peer cache on a node (docs/p2p.md): acinstall's runtime for the node's arch, and the agent
// running on it as a service. containerd's hosts.toml names the agent as its one [host], with the
// site registry as the server behind it: a node whose agent is down still pulls, from the registry.

export const AGENT_UNIT = '/etc/systemd/system/acpack-agent.service';
/** The agent's store (p2p/piece-store.ts): whole verified blobs in blobs/, pieces in partial/. */
export const AGENT_DIR = '/var/lib/acpack-agent';
/** What the running agent was started from: the unit's and the runtime's sha256, to restart it only on a change. */
const AGENT_APPLIED = '/etc/acpack/agent.applied';

export function agentUnit(registry: string, node: HostSpec): string {
  const ca = registry.startsWith('https:') ? ` --ca ${NODE_CA}` : '';
  return `[Unit]
Description=acpack peer cache: this node's images and binaries, piece by piece from the other nodes
Wants=network-online.target
After=network-online.target

[Service]
ExecStart=${NODE_RUNTIME} agent --registry ${registry}${ca} --listen 127.0.0.1:${AGENT_PORT} --peer-listen ${node.ip}:${AGENT_PORT} --dir ${AGENT_DIR}
Restart=always
RestartSec=2

[Install]
WantedBy=multi-user.target
`;
}

/**
 * The node fetches acinstall's runtime for its arch from `peer`'s agent when given (see
 * runtime-sources.ts), else or when that fails from the registry (sha256 checked, unpacked beside its
 * place and renamed in), keeps the gzipped blob in its agent's store for the nodes after it, writes
 * the agent's unit from standard input, and (re)starts the agent when either changed or it is not
 * running. Prints `runtime-from peer|registry` when it fetched the runtime, `runtime-kept` when the
 * agent holds it for peers, and `agent-down` and the agent's last log lines when it does not answer
 * within 15 s.
 */
export function peerCacheScript(d: BundleDescriptor, arch: string, registry: string, unit: string, peer?: string): string {
  const runtime = d.runtime?.find((r) => r.arch === arch);
  const lines = ['set -e', 'dir=$(mktemp -d)', 'trap \'rm -rf "$dir"\' EXIT'];
  lines.push('mkdir -p /etc/systemd/system /etc/acpack', `head -c ${Buffer.byteLength(unit)} > "$dir/unit"`, sha256Check('"$dir/unit"', sha256(unit), 'the agent unit did not arrive whole'));
  const kept = runtime && shq(`${AGENT_DIR}/blobs/${hexOf(runtime.digest)}`);
  if (runtime) {
    const path = `/v2/${runtime.ref.replace(/:[^:/]+$/, '')}/blobs/${runtime.digest}`;
    const gz = '"$dir/acinstall.gz"';
    const staged = shq(`${NODE_RUNTIME}${STAGED}`);
    const good = `[ "$(sha256sum ${gz} | cut -d' ' -f1)" = ${shq(hexOf(runtime.digest))} ]`;
    // A peer that is slow (under 64 kB/s for 15 s) or gone costs seconds, then the registry serves it.
    const fromPeer = peer ? `curl -fsS --max-time 300 --speed-time 15 --speed-limit 65536 -o ${gz} ${shq(`http://${peer}${PEER_BLOBS_PATH}${runtime.digest}`)} 2>/dev/null && ${good}` : 'false';
    lines.push(
      `if ! [ -x ${shq(NODE_RUNTIME)} ] || ! [ "$(cat ${AGENT_APPLIED} 2>/dev/null | cut -d' ' -f2)" = ${shq(runtime.digest)} ]; then`,
      `  if ${fromPeer}; then echo runtime-from peer; else`,
      `    curl -fsS --retry 3 --max-time 600 ${registry.startsWith('https:') ? `--cacert ${NODE_CA} ` : ''}-o ${gz} ${shq(`${registry}${path}`)}`,
      `    ${sha256Check(gz, runtime.digest, `acinstall's runtime: sha256 mismatch from ${registry}${path}`)}`,
      '    echo runtime-from registry',
      '  fi',
      `  mkdir -p ${shq(dirname(NODE_RUNTIME))} && gzip -dc ${gz} > ${staged} && chmod 755 ${staged} && mv -f -T ${staged} ${shq(NODE_RUNTIME)}`,
      // Checked whole, so a whole blob for the agent's store; via partial/*.in-*, which the agent
      // removes on start, so that a cut copy is never taken for a whole one.
      `  mkdir -p -m 700 ${AGENT_DIR} ${AGENT_DIR}/partial ${AGENT_DIR}/blobs && cp ${gz} ${AGENT_DIR}/partial/runtime.in-acinstall && mv -f ${AGENT_DIR}/partial/runtime.in-acinstall ${kept}`,
      'fi',
    );
  }
  // The fingerprint: the unit's sha256 and the runtime's digest (the bundle's, not re-hashed on every run).
  // Compared with sha256sum, which preflight checks every node has (cmp is diffutils, not always there).
  const fingerprint = `${sha256(unit).slice(7, 23)} ${runtime?.digest ?? 'none'}`;
  lines.push(
    `if [ "$(sha256sum < "$dir/unit")" = "$(sha256sum < ${AGENT_UNIT} 2>/dev/null)" ] && [ "$(cat ${AGENT_APPLIED} 2>/dev/null)" = ${shq(fingerprint)} ] && systemctl is-active -q acpack-agent; then :; else`,
    `  mv -f "$dir/unit" ${AGENT_UNIT}`,
    '  systemctl daemon-reload',
    '  systemctl enable acpack-agent',
    '  systemctl restart acpack-agent',
    `  echo ${shq(fingerprint)} > ${AGENT_APPLIED}`,
    'fi',
    `for i in $(seq 75); do if curl -fsS -o /dev/null --max-time 2 ${AGENT_LOCAL}/v2/; then ${kept ? `if [ -f ${kept} ]; then echo runtime-kept; fi; ` : ''}exit 0; fi; sleep 0.2; done`,
    'echo agent-down',
    'journalctl -u acpack-agent -n 5 -o cat --no-pager 2>&1 | cut -c1-300 || true',
  );
  return lines.join('\n');
}

export interface PeerCacheResult {
  /** Set when the agent does not answer (pulls then go to the registry). */
  down?: string;
  /** Where the runtime came from this time; undefined when the node had it. */
  runtimeFrom?: 'peer' | 'registry';
  /** The node's agent holds the runtime and answers: it may hand it on. */
  servesRuntime: boolean;
}

/** Installs the runtime (from `peer`'s agent when given) and runs the agent. */
export async function startPeerCache(host: SshHost, d: BundleDescriptor, arch: string, registry: string, peer?: string): Promise<PeerCacheResult> {
  const unit = agentUnit(registry, host.spec);
  const out = await host.check(peerCacheScript(d, arch, registry, unit, peer), "acinstall's runtime and the peer cache agent", 300_000, unit);
  const runtimeFrom = /^runtime-from (peer|registry)$/m.exec(out)?.[1] as PeerCacheResult['runtimeFrom'];
  const i = out.indexOf('agent-down');
  if (i < 0) return { runtimeFrom, servesRuntime: /^runtime-kept$/m.test(out) };
  const log = out.slice(i + 'agent-down'.length).trim();
  return { runtimeFrom, servesRuntime: false, down: `the peer cache agent does not answer on ${AGENT_LOCAL} (the node pulls from the site registry instead)${log ? `; its log ends: ${log.split('\n').join(' | ')}` : ''}` };
}
