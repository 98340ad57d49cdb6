import { setTimeout as sleep } from 'node:timers/promises';
import type { BundleDescriptor } from '../oci/bundle-format.js';
import { AcpackError } from '../oci/errors.js';
import type { ClusterSpec } from './cluster-spec.js';
import { shq } from './node-setup.js';
import type { SshHost } from './ssh.js';

/** The bundle's kubectl, if it carries one: without it there is no post-check (the summary says so). */
export function kubectlCommand(d: BundleDescriptor): string | undefined {
  const kubectl = d.binaries.find((b) => b.name === 'kubectl' && b.install);
  return kubectl ? shq(kubectl.install!) : undefined;
}

interface NodeList {
  items: { metadata: { name: string }; status: { addresses?: { type: string; address: string }[]; conditions?: { type: string; status: string }[] } }[];
}
interface PodList {
  items: { metadata: { name: string }; status: { phase?: string; containerStatuses?: { ready: boolean }[] } }[];
}

/** What is not right yet: a spec node missing or not Ready, a kube-system pod not running and ready. */
export function clusterProblems(spec: ClusterSpec, nodes: NodeList, pods: PodList): string[] {
  const problems: string[] = [];
  for (const h of spec.hosts) {
    const node = nodes.items.find((n) => n.status.addresses?.some((a) => a.type === 'InternalIP' && a.address === h.ip));
    if (!node) problems.push(`${h.ip}: no node with this address has registered`);
    else if (!node.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True')) problems.push(`${h.ip}: node ${node.metadata.name} is not Ready`);
  }
  for (const p of pods.items) {
    const ok = p.status.phase === 'Succeeded' || (p.status.phase === 'Running' && (p.status.containerStatuses ?? []).every((c) => c.ready));
    if (!ok) problems.push(`pod kube-system/${p.metadata.name} is ${p.status.phase ?? 'unknown'}${p.status.phase === 'Running' ? ' (not ready)' : ''}`);
  }
  return problems;
}

/**
 * On the first master: every node Ready and every kube-system pod running, waiting up to `waitMs`
 * for them to settle. An API server that does not answer at all is reported at once (after a few
 * tries): by now kubeadm and helm have both talked to it.
 */
export async function postCheck(host: SshHost, spec: ClusterSpec, kubectl: string, waitMs = 10 * 60_000): Promise<{ nodes: number; pods: number }> {
  const k = `${kubectl} --kubeconfig /etc/kubernetes/admin.conf`;
  const command = `${k} get nodes -o json && echo '---acpack---' && ${k} get pods -n kube-system -o json`;
  const deadline = Date.now() + waitMs;
  let unreachable = 0;
  for (;;) {
    const r = await host.exec(command, 60_000);
    if (r.code !== 0) {
      if (++unreachable >= 3) throw new AcpackError('NODE_STEP', `${host.spec.ip}: post-check: kubectl cannot reach the API server: ${r.stderr.trim().slice(-300)}`);
      await sleep(2000);
      continue;
    }
    const [nodes, pods] = r.stdout.split('---acpack---').map((part) => JSON.parse(part) as NodeList & PodList);
    const problems = clusterProblems(spec, nodes, pods);
    if (problems.length === 0) return { nodes: nodes.items.length, pods: pods.items.length };
    if (Date.now() > deadline) throw new AcpackError('NODE_STEP', `${host.spec.ip}: post-check: not settled after ${Math.round(waitMs / 60_000)} min:\n    ${problems.join('\n    ')}`);
    await sleep(5000);
  }
}
