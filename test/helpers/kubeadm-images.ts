import type { Arch } from '../../arch/platform.js';
import { buildIndexImage, buildLayer, pushImage } from '../../demo/samples.js';

export interface KubeadmImageSet {
  /** Repository path under the registry host, as ACK Distro's `ecp_builder`. */
  repo?: string;
  /** The control plane's tag (kube-apiserver, -controller-manager, -scheduler, kube-proxy). */
  version?: string;
  etcd?: string;
  coredns?: string;
  pause?: string;
  arches?: Arch[];
  /** Images of the set not to push (a test that brings its own). */
  leaveOut?: string[];
}

/**
 * Pushes the images `kubeadm config images list` names for a cluster configured with
 * `imageRepository: <host>/<repo>` (and the given tags) — small images, one per arch — and returns
 * their references, for a test bundle that kubeadm's image check accepts. Defaults: kubeadm
 * v1.22.15's own tags (etcd 3.5.0-0, coredns v1.8.4, pause 3.5).
 */
export async function pushKubeadmImages(host: string, o: KubeadmImageSet = {}): Promise<string[]> {
  const repo = o.repo ?? 'ecp_builder';
  const version = o.version ?? 'v1.22.15';
  const tags: Record<string, string> = {
    'kube-apiserver': version,
    'kube-controller-manager': version,
    'kube-scheduler': version,
    'kube-proxy': version,
    pause: o.pause ?? '3.5',
    etcd: o.etcd ?? '3.5.0-0',
    coredns: o.coredns ?? 'v1.8.4',
  };
  const refs: string[] = [];
  for (const [name, tag] of Object.entries(tags)) {
    if (o.leaveOut?.includes(name)) continue;
    const perArch: Partial<Record<Arch, Awaited<ReturnType<typeof buildLayer>>[]>> = {};
    for (const arch of o.arches ?? ['amd64', 'arm64']) perArch[arch] = [await buildLayer([{ path: name, content: `${name} ${tag} ${arch}` }])];
    await pushImage(host, buildIndexImage(`${repo}/${name}`, tag, perArch));
    refs.push(`${host}/${repo}/${name}:${tag}`);
  }
  return refs;
}
