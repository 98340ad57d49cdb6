import { dirname } from 'node:path';
import type { BundleDescriptor } from '../oci/bundle-format.js';
import { sha256 } from '../oci/digest.js';
import type { HostSpec } from './cluster-spec.js';
import { AGENT_LOCAL, AGENT_PORT, NODE_CA, NODE_RUNTIME, sha256Check, shq, STAGED } from './node-setup.js';
import type { SshHost } from './ssh.js';

// The peer cache on a node (docs/p2p.md): acinstall's runtime for the node's arch, and the agent
// running on it as a service. containerd's hosts.toml names the agent as its one [host], with the
// site registry as the server behind it: a node whose agent is down still pulls, from the registry.

export const AGENT_UNIT = '/etc/systemd/system/acpack-agent.service';
/** What the running agent was started from: the unit's and the runtime's sha256, to restart it only on a change. */
const AGENT_APPLIED = '/etc/acpack/agent.applied';

export function agentUnit(registry: string, node: HostSpec): string {
  const ca = registry.startsWith('https:') ? ` --ca ${NODE_CA}` : '';
  return `[Unit]
Description=acpack peer cache: this node's images and binaries, piece by piece from the other nodes
Wants=network-online.target
After=network-online.target

[Service]
ExecStart=${NODE_RUNTIME} agent --registry ${registry}${ca} --listen 127.0.0.1:${AGENT_PORT} --peer-listen ${node.ip}:${AGENT_PORT} --dir /var/lib/acpack-agent
Restart=always
RestartSec=2

[Install]
WantedBy=multi-user.target
`;
}

/**
 * The node fetches acinstall's runtime for its arch from the registry (sha256 checked, unpacked
 * beside its place and renamed in), writes the agent's unit from standard input, and (re)starts the
 * agent when either changed or it is not running. Prints `agent-down` and the agent's last log lines
 * when it does not answer within 15 s.
 */
export function peerCacheScript(d: BundleDescriptor, arch: string, registry: string, unit: string): string {
  const runtime = d.runtime?.find((r) => r.arch === arch);
  const lines = ['set -e', 'dir=$(mktemp -d)', 'trap \'rm -rf "$dir"\' EXIT'];
  lines.push('mkdir -p /etc/systemd/system /etc/acpack', `head -c ${Buffer.byteLength(unit)} > "$dir/unit"`, sha256Check('"$dir/unit"', sha256(unit), 'the agent unit did not arrive whole'));
  if (runtime) {
    const url = `${registry}/v2/${runtime.ref.replace(/:[^:/]+$/, '')}/blobs/${runtime.digest}`;
    const staged = shq(`${NODE_RUNTIME}${STAGED}`);
    lines.push(
      `if ! [ -x ${shq(NODE_RUNTIME)} ] || ! [ "$(cat ${AGENT_APPLIED} 2>/dev/null | cut -d' ' -f2)" = ${shq(runtime.digest)} ]; then`,
      `  curl -fsS --retry 3 --max-time 600 ${registry.startsWith('https:') ? `--cacert ${NODE_CA} ` : ''}-o "$dir/acinstall.gz" ${shq(url)}`,
      `  ${sha256Check('"$dir/acinstall.gz"', runtime.digest, `acinstall's runtime: sha256 mismatch from ${url}`)}`,
      `  mkdir -p ${shq(dirname(NODE_RUNTIME))} && gzip -dc "$dir/acinstall.gz" > ${staged} && chmod 755 ${staged} && mv -f -T ${staged} ${shq(NODE_RUNTIME)}`,
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
    `for i in $(seq 75); do if curl -fsS -o /dev/null --max-time 2 ${AGENT_LOCAL}/v2/; then exit 0; fi; sleep 0.2; done`,
    'echo agent-down',
    'journalctl -u acpack-agent -n 5 -o cat --no-pager 2>&1 | cut -c1-300 || true',
  );
  return lines.join('\n');
}

/** Installs the runtime and runs the agent; returns a warning when the agent does not answer (pulls then go to the registry). */
export async function startPeerCache(host: SshHost, d: BundleDescriptor, arch: string, registry: string): Promise<string | undefined> {
  const unit = agentUnit(registry, host.spec);
  const out = await host.check(peerCacheScript(d, arch, registry, unit), "acinstall's runtime and the peer cache agent", 300_000, unit);
  const i = out.indexOf('agent-down');
  if (i < 0) return undefined;
  const log = out.slice(i + 'agent-down'.length).trim();
  return `the peer cache agent does not answer on ${AGENT_LOCAL} (the node pulls from the site registry instead)${log ? `; its log ends: ${log.split('\n').join(' | ')}` : ''}`;
}
