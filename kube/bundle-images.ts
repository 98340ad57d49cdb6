import { stringify } from 'yaml';
import { formatReference, parseReference, type Reference } from '../oci/reference.js';
import { AcpackError } from '../oci/errors.js';
import type { ImageConfig } from './kubeadm-images.js';

// kubeadm's image settings, tied to the bundle: the Kubernetes version, the image repository and the
// etcd and CoreDNS tags are the bundle's. acinstall writes them into the configuration of kubeadm
// init; acpack asks the same question of the same configuration before the bundle leaves the build
// machine. Both read them here, so the two checks cannot disagree.

export const KUBEADM_API = 'kubeadm.k8s.io/v1beta3';

/** What these settings read of a bundle: its images by reference and its binaries (bundle.json's, or a manifest's). */
export interface ImageSource {
  name: string;
  version: string;
  images: { ref: string }[];
  binaries: { name: string; version: string }[];
}

/** The bundle's image named `…/<name>:<tag>`, preferring one beside the control plane's. */
function bundledImage(d: ImageSource, name: string, near?: Reference): Reference | undefined {
  const all = d.images.map((i) => parseReference(i.ref)).filter((r) => r.tag && (r.repository === name || r.repository.endsWith(`/${name}`)));
  const beside = near && all.find((r) => r.host === near.host && r.repository.replace(/[^/]+$/, '') === near.repository.replace(/[^/]+$/, ''));
  return beside ?? all[0];
}

const apiServerImage = (d: ImageSource) => bundledImage(d, 'kube-apiserver');
/** `host/path` without the image's own name: what kubeadm calls an image repository. */
const repositoryOf = (r: Reference, name: string) => `${r.host}/${r.repository.slice(0, -name.length - 1)}`.replace(/\/$/, '');

/**
 * The Kubernetes version a bundle installs: its kube-apiserver image's tag, or else the version of
 * its kubeadm (which then uses its default image names). A bundle with neither cannot install one.
 */
export function kubernetesVersion(d: ImageSource): string {
  const version = apiServerImage(d)?.tag ?? d.binaries.find((b) => b.name === 'kubeadm')?.version;
  if (!version) throw new AcpackError('BAD_BUNDLE', `${d.name} ${d.version} carries neither a kube-apiserver image nor a kubeadm binary: it cannot install Kubernetes`);
  return version;
}

/**
 * The ClusterConfiguration's image settings: the repository of the bundle's kube-apiserver, and the
 * bundle's own etcd and CoreDNS tags (ACK Distro: etcd 3.5.4, coredns v1.8.4.5-…, not kubeadm's
 * built-in 3.5.0-0 and v1.8.4), with their repositories where they live elsewhere.
 */
export function imageSettings(d: ImageSource): Omit<ImageConfig, 'kubernetesVersion'> {
  const api = apiServerImage(d);
  const out: Omit<ImageConfig, 'kubernetesVersion'> = {};
  const repo = api ? repositoryOf(api, 'kube-apiserver') : undefined;
  if (repo) out.imageRepository = repo;
  const etcd = bundledImage(d, 'etcd', api);
  if (etcd) out.etcd = { local: { ...(repositoryOf(etcd, 'etcd') !== repo ? { imageRepository: repositoryOf(etcd, 'etcd') } : {}), imageTag: etcd.tag } };
  const dns = bundledImage(d, 'coredns', api);
  if (dns) out.dns = { ...(repositoryOf(dns, 'coredns') !== repo ? { imageRepository: repositoryOf(dns, 'coredns') } : {}), imageTag: dns.tag };
  return out;
}

/** The ClusterConfiguration fields kubeadm's image list depends on, as acinstall writes them. */
export function kubeadmImageConfig(d: ImageSource): ImageConfig {
  return { kubernetesVersion: kubernetesVersion(d), ...imageSettings(d) };
}

/** A configuration file for `kubeadm config images list --config`: the image part of what acinstall's kubeadm init gets. */
export function imageListConfig(d: ImageSource): string {
  return stringify({ apiVersion: KUBEADM_API, kind: 'ClusterConfiguration', ...kubeadmImageConfig(d) });
}

/**
 * The images `kubeadm config images list` named that the bundle does not carry (compared by
 * normalized name: `nginx` is `docker.io/library/nginx:latest`).
 */
export function missingImages(d: Pick<ImageSource, 'images'>, listed: string): string[] {
  const key = (r: Reference) => formatReference({ host: r.host, repository: r.repository, tag: r.tag });
  const have = new Set(d.images.map((i) => key(parseReference(i.ref))));
  const wanted = listed.split('\n').map((l) => l.trim()).filter(Boolean);
  return wanted.filter((w) => !have.has(key(parseReference(w))));
}
