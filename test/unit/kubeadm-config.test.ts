import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { BundleDescriptor } from '../../oci/bundle-format.js';
import { addonsInTemplates, imageSettings, joinConfig, kubeadmConfig, kubernetesVersion, missingImages } from '../../installer/kubeadm-config.js';
import { specFromFlags } from '../../installer/cluster-spec.js';
import { writeKubeadmStandin } from '../hosts/standins/kubeadm-standin.js';

const run = promisify(execFile);

/** kubeadm's configuration as acinstall derives it from a bundle, checked against the kubeadm stand-in's image rules. */
let dir: string;
let standin: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'acpack-kubeadm-config-'));
  standin = (await writeKubeadmStandin(join(dir, 'bin'), 'v1.22.15')).file;
});
afterAll(() => rm(dir, { recursive: true, force: true }));

const descriptor = (refs: string[], kubeadmVersion?: string): BundleDescriptor =>
  ({
    name: 'ackdistro',
    version: 'v1.22.15-aliyun.1',
    images: refs.map((ref) => ({ ref })),
    binaries: kubeadmVersion ? [{ name: 'kubeadm', version: kubeadmVersion }] : [],
    charts: [],
  }) as unknown as BundleDescriptor;

// ACK Distro v1.22.15-aliyun.1's own images (manifests/ackdistro-v1.22.15.yaml), the ones kubeadm names.
const ACK = 'ack-agility-registry.cn-shanghai.cr.aliyuncs.com/ecp_builder';
const ACK_IMAGES = [
  `${ACK}/pause:3.5`,
  `${ACK}/kube-apiserver:v1.22.15-aliyun.1`,
  `${ACK}/kube-controller-manager:v1.22.15-aliyun.1`,
  `${ACK}/kube-scheduler:v1.22.15-aliyun.1`,
  `${ACK}/etcd:3.5.4`,
  `${ACK}/kube-proxy:v1.22.15-aliyun.1`,
  `${ACK}/k8s-dns-node-cache:1.17.0`,
  `${ACK}/coredns:v1.8.4.5-2ce07fd2-aliyun`,
];

describe("kubeadm's configuration from the bundle", () => {
  it("asks kubeadm for exactly ACK Distro's bundled images: its etcd 3.5.4 and CoreDNS tags, not kubeadm's", async () => {
    const d = descriptor(ACK_IMAGES, 'v1.22.15-aliyun.1');
    expect(imageSettings(d)).toEqual({ imageRepository: ACK, etcd: { local: { imageTag: '3.5.4' } }, dns: { imageTag: 'v1.8.4.5-2ce07fd2-aliyun' } });
    const file = join(dir, 'ack.yaml');
    await writeFile(file, kubeadmConfig(specFromFlags({ masters: '10.0.0.1', nodes: '10.0.0.2', key: '/k' }), d));
    const r = await run(standin, ['config', 'images', 'list', '--config', file], { env: { ...process.env, ACPACK_STANDIN_ROOT: join(dir, 'root') } });
    expect(missingImages(d, r.stdout)).toEqual([]);
    expect(r.stdout.trim().split('\n').sort()).toEqual(ACK_IMAGES.filter((i) => !i.includes('node-cache')).sort());
  });

  it('names the etcd and CoreDNS repositories where they differ from the control plane\'s', () => {
    const d = descriptor([`${ACK}/kube-apiserver:v1.22.15-aliyun.1`, 'registry.cn-zhangjiakou.aliyuncs.com/acs/coredns:v1.8.4.5-2ce07fd2-aliyun', 'quay.io/coreos/etcd:v3.5.4']);
    expect(imageSettings(d)).toEqual({
      imageRepository: ACK,
      etcd: { local: { imageRepository: 'quay.io/coreos', imageTag: 'v3.5.4' } },
      dns: { imageRepository: 'registry.cn-zhangjiakou.aliyuncs.com/acs', imageTag: 'v1.8.4.5-2ce07fd2-aliyun' },
    });
  });

  it("takes the Kubernetes version from the kube-apiserver image, else from the bundled kubeadm; never a placeholder", () => {
    expect(kubernetesVersion(descriptor(ACK_IMAGES, 'v1.22.15-aliyun.1'))).toBe('v1.22.15-aliyun.1');
    expect(kubernetesVersion(descriptor([`${ACK}/pause:3.5`], 'v1.22.15'))).toBe('v1.22.15');
    expect(() => kubernetesVersion(descriptor([`${ACK}/pause:3.5`]))).toThrow(/neither a kube-apiserver image nor a kubeadm binary/);
  });

  it('compares image names as containerd does (docker.io/library/… is the short name)', () => {
    const d = descriptor(['nginx:1.25', 'docker.io/library/pause:3.5']);
    expect(missingImages(d, 'docker.io/library/nginx:1.25\npause:3.5\nregistry.k8s.io/etcd:3.5.0-0\n')).toEqual(['registry.k8s.io/etcd:3.5.0-0']);
  });

  it('advertises each node on its own address: the first master in InitConfiguration, a joining master in its JoinConfiguration', () => {
    const spec = specFromFlags({ masters: '10.0.0.1,10.0.0.2', nodes: '10.0.0.3', key: '/k' });
    expect(kubeadmConfig(spec, descriptor(ACK_IMAGES))).toContain('localAPIEndpoint:\n  advertiseAddress: 10.0.0.1\n  bindPort: 6443\nnodeRegistration:\n  criSocket: unix:///run/containerd/containerd.sock\n  kubeletExtraArgs:\n    node-ip: 10.0.0.1\n');
    const join_ = { endpoint: 'apiserver.cluster.local:6443', token: 'abcdef.0123456789abcdef', caCertHash: `sha256:${'a'.repeat(64)}` };
    const worker = joinConfig(spec.hosts[2], join_);
    expect(worker).toContain('node-ip: 10.0.0.3');
    expect(worker).not.toContain('controlPlane');
    const master = joinConfig(spec.hosts[1], join_, 'f'.repeat(64));
    expect(master).toContain(`controlPlane:\n  localAPIEndpoint:\n    advertiseAddress: 10.0.0.2\n    bindPort: 6443\n  certificateKey: ${'f'.repeat(64)}\n`);
  });
});

describe("kubeadm's addons the charts install", () => {
  it("finds CoreDNS's and kube-proxy's objects in templates, by kind and metadata.name", () => {
    const coredns = 'apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  labels:\n    k8s-app: kube-dns\n    app.kubernetes.io/name: other\n  name: coredns\n  namespace: kube-system\nspec: {}\n';
    const proxy = '{{- if .Values.proxy }}\napiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: "kube-proxy"\n{{- end }}\n';
    expect([...addonsInTemplates([coredns])]).toEqual(['coredns']);
    expect([...addonsInTemplates([`${coredns}---\n${proxy}`])].sort()).toEqual(['coredns', 'kube-proxy']);
    expect([...addonsInTemplates(['apiVersion: v1\nkind: Service\nmetadata:\n  name: kube-dns\n'])]).toEqual(['coredns']);
  });

  it('is not fooled by a label, a nested name or another kind', () => {
    const labelled = 'kind: Deployment\nmetadata:\n  labels:\n    name: coredns\n  name: my-dns\n';
    const nested = 'kind: DaemonSet\nmetadata:\n  name: agent\nspec:\n  template:\n    metadata:\n      name: kube-proxy\n';
    const otherKind = 'kind: Secret\nmetadata:\n  name: coredns\n';
    expect(addonsInTemplates([labelled, nested, otherKind]).size).toBe(0);
  });
});
