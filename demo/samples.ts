import { gzipSync } from 'node:zlib';
import tar from 'tar-stream';
import type { Arch } from '../arch/platform.js';
import { sha256, type Digest } from '../oci/digest.js';
import { MT, type Descriptor } from '../oci/media-types.js';

/**
 * Small but real multi-arch images: gzip tar layers, OCI configs with rootfs diff_ids, per-arch
 * manifests under an index. Used by the demo and by the tests as source content.
 */

export interface SampleFile {
  path: string;
  content: string | Buffer;
  mode?: number;
}

export interface Blob {
  descriptor: Descriptor;
  data: Buffer;
}

export interface Layer extends Blob {
  diffId: Digest;
}

export interface SampleImage {
  repository: string;
  tag: string;
  /** Everything to push, manifests last. */
  blobs: Blob[];
  manifests: { digest: Digest; mediaType: string; data: Buffer }[];
  /** The tagged manifest (an index for multi-arch images). */
  top: { digest: Digest; mediaType: string; data: Buffer };
}

/** A deterministic gzip tar layer. */
export async function buildLayer(files: SampleFile[]): Promise<Layer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  pack.on('data', (c) => chunks.push(c as Buffer));
  const done = new Promise<void>((resolve) => pack.on('end', resolve));
  for (const f of [...files].sort((a, b) => a.path.localeCompare(b.path))) {
    const data = typeof f.content === 'string' ? Buffer.from(f.content) : f.content;
    await new Promise<void>((resolve, reject) =>
      pack.entry({ name: f.path, size: data.length, mode: f.mode ?? 0o644, mtime: new Date(0), uid: 0, gid: 0 }, data, (err) => (err ? reject(err) : resolve())),
    );
  }
  pack.finalize();
  await done;
  const raw = Buffer.concat(chunks);
  const data = gzipSync(raw, { level: 6 });
  return { descriptor: { mediaType: MT.ociLayerGzip, digest: sha256(data), size: data.length }, data, diffId: sha256(raw) };
}

function json(value: unknown): Buffer {
  return Buffer.from(JSON.stringify(value));
}

/** One platform's manifest and config over the given layers. */
export function buildPlatformImage(arch: Arch, layers: Layer[], labels: Record<string, string> = {}) {
  const config = json({
    architecture: arch,
    os: 'linux',
    ...(arch === 'arm64' ? { variant: 'v8' } : {}),
    config: { Labels: labels, Cmd: ['/bin/sh'] },
    rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
  });
  const configDesc: Descriptor = { mediaType: MT.ociConfig, digest: sha256(config), size: config.length };
  const manifest = json({ schemaVersion: 2, mediaType: MT.ociManifest, config: configDesc, layers: layers.map((l) => l.descriptor) });
  return {
    config: { descriptor: configDesc, data: config },
    manifest: { digest: sha256(manifest), mediaType: MT.ociManifest, data: manifest },
  };
}

/**
 * A multi-arch image: `base` layers shared by every arch (and, when the caller passes the same
 * ones, by other images), plus per-arch layers.
 */
export function buildIndexImage(repository: string, tag: string, perArch: Partial<Record<Arch, Layer[]>>, labels: Record<string, string> = {}): SampleImage {
  const blobs = new Map<Digest, Blob>();
  const manifests: SampleImage['manifests'] = [];
  const entries: Descriptor[] = [];
  for (const [arch, layers] of Object.entries(perArch) as [Arch, Layer[]][]) {
    for (const l of layers) blobs.set(l.descriptor.digest, l);
    const img = buildPlatformImage(arch, layers, labels);
    blobs.set(img.config.descriptor.digest, img.config);
    manifests.push(img.manifest);
    entries.push({
      mediaType: MT.ociManifest,
      digest: img.manifest.digest,
      size: img.manifest.data.length,
      platform: { architecture: arch, os: 'linux', ...(arch === 'arm64' ? { variant: 'v8' } : {}) },
    });
  }
  const index = json({ schemaVersion: 2, mediaType: MT.ociIndex, manifests: entries });
  const top = { digest: sha256(index), mediaType: MT.ociIndex, data: index };
  return { repository, tag, blobs: [...blobs.values()], manifests, top };
}

/** A single-platform image (a plain manifest, no index). */
export function buildSingleImage(repository: string, tag: string, arch: Arch, layers: Layer[]): SampleImage {
  const img = buildPlatformImage(arch, layers);
  return { repository, tag, blobs: [...layers, img.config], manifests: [], top: img.manifest };
}

/** Pushes an image with the distribution API (POST + PUT uploads, manifest PUT). */
export async function pushImage(registry: string, image: SampleImage): Promise<void> {
  const base = `http://${registry}/v2/${image.repository}`;
  for (const blob of image.blobs) {
    const head = await fetch(`${base}/blobs/${blob.descriptor.digest}`, { method: 'HEAD' });
    if (head.ok) continue;
    const start = await fetch(`${base}/blobs/uploads/`, { method: 'POST' });
    if (start.status !== 202) throw new Error(`upload start for ${image.repository}: HTTP ${start.status}`);
    const location = new URL(start.headers.get('location')!, `http://${registry}`);
    location.searchParams.set('digest', blob.descriptor.digest);
    const put = await fetch(location, { method: 'PUT', body: new Uint8Array(blob.data), headers: { 'content-type': 'application/octet-stream' } });
    if (put.status !== 201) throw new Error(`upload of ${blob.descriptor.digest} to ${image.repository}: HTTP ${put.status} ${await put.text()}`);
  }
  for (const m of image.manifests) await putManifest(base, m.digest, m);
  await putManifest(base, image.tag, image.top);
}

async function putManifest(base: string, reference: string, m: { mediaType: string; data: Buffer }): Promise<void> {
  const res = await fetch(`${base}/manifests/${reference}`, { method: 'PUT', body: new Uint8Array(m.data), headers: { 'content-type': m.mediaType } });
  if (res.status !== 201) throw new Error(`manifest PUT ${base}/manifests/${reference}: HTTP ${res.status} ${await res.text()}`);
}

/** Pseudo-random but reproducible bytes, so sample layers have realistic (incompressible) sizes. */
export function noise(seed: string, size: number): Buffer {
  const out = Buffer.alloc(size);
  let block = Buffer.from(seed);
  for (let off = 0; off < size; off += 32) {
    block = Buffer.from(sha256(block).slice(7), 'hex');
    block.copy(out, off, 0, Math.min(32, size - off));
  }
  return out;
}

/** The demo's distribution: three multi-arch images sharing a base layer, one amd64-only image. */
export async function demoImages(): Promise<SampleImage[]> {
  const base = await buildLayer([
    { path: 'etc/os-release', content: 'NAME="acpack demo base"\nID=demo\n' },
    { path: 'usr/lib/base.so', content: noise('base', 256 * 1024) },
  ]);
  const perArch = async (name: string, size: number): Promise<Partial<Record<Arch, Layer[]>>> => ({
    amd64: [base, await buildLayer([{ path: `usr/bin/${name}`, content: noise(`${name}-amd64`, size), mode: 0o755 }])],
    arm64: [base, await buildLayer([{ path: `usr/bin/${name}`, content: noise(`${name}-arm64`, size), mode: 0o755 }])],
  });
  return [
    buildIndexImage('ecp_builder/pause', '3.5', await perArch('pause', 16 * 1024)),
    buildIndexImage('ecp_builder/coredns', 'v1.8.4', await perArch('coredns', 512 * 1024)),
    buildIndexImage('ecp_builder/hybridnet', 'v0.8.8', await perArch('hybridnet', 768 * 1024)),
    buildSingleImage('ecp_builder/nvidia-device-plugin', 'v0.9', 'amd64', [base, await buildLayer([{ path: 'usr/bin/nvidia-device-plugin', content: noise('nv', 128 * 1024), mode: 0o755 }])]),
  ];
}

/**
 * The rest of what kubeadm v1.22.15 asks for beside the demo's pause and coredns (its `config images
 * list`): the control plane, kube-proxy and etcd, as small images under ecp_builder. Nothing runs them
 * here; they are there so that the installer's image check passes as it would for ACK Distro.
 */
export async function controlPlaneImages(): Promise<SampleImage[]> {
  const tags: [string, string][] = [['kube-apiserver', 'v1.22.15'], ['kube-controller-manager', 'v1.22.15'], ['kube-scheduler', 'v1.22.15'], ['kube-proxy', 'v1.22.15'], ['etcd', '3.5.0-0']];
  const images: SampleImage[] = [];
  for (const [name, tag] of tags) {
    const layer = async (arch: Arch) => [await buildLayer([{ path: `usr/local/bin/${name}`, content: `${name} ${tag} ${arch}\n`, mode: 0o755 }])];
    images.push(buildIndexImage(`ecp_builder/${name}`, tag, { amd64: await layer('amd64'), arm64: await layer('arm64') }));
  }
  return images;
}

/** Pushes a packaged chart (.tgz) as `helm push` stores one: a Helm config and the chart as its one layer. Returns its manifest's digest. */
export async function pushHelmChart(registry: string, repository: string, tag: string, tgz: Buffer, chart: { name: string; version: string }): Promise<Digest> {
  const config = Buffer.from(JSON.stringify({ ...chart, apiVersion: 'v2' }));
  const configDesc = { mediaType: MT.helmConfig, digest: sha256(config), size: config.length };
  const chartDesc = { mediaType: MT.helmChart, digest: sha256(tgz), size: tgz.length };
  const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, config: configDesc, layers: [chartDesc] }));
  await pushImage(registry, {
    repository,
    tag,
    blobs: [
      { descriptor: configDesc, data: config },
      { descriptor: chartDesc, data: tgz },
    ],
    manifests: [],
    top: { digest: sha256(manifest), mediaType: MT.ociManifest, data: manifest },
  });
  return sha256(manifest);
}
