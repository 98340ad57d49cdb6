import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { parse as parseYaml, stringify } from 'yaml';
import { readFile, writeFile } from 'node:fs/promises';
import { acinstallOn, inHost, ssh } from '../hosts/lab.js';
import { spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { stopChild } from '../../demo/processes.js';
import { ROOT } from '../helpers/env.js';
import { bundleSpec, kubeadmContent, pushSmallImage } from '../helpers/fixtures.js';
import { useLab } from '../helpers/lab.js';

/** Two masters and a worker: the worker reaches the masters through lvscare's virtual IP. */
const t = useLab(3, async ({ host, dir }) => {
  // What kubeadm v1.22.15 asks for (acinstall checks with `kubeadm config images list`), with and without lvscare.
  const { images, kubeadm } = await kubeadmContent(host, dir);
  const lvscare = await pushSmallImage(host, 'sealerio/lvscare', 'v1.1.3-beta.8');
  // No kubelet or CNI chart (the kubeadm steps are what is tested): built with allowIncomplete.
  const o = { allowIncomplete: true };
  return {
    lvscare,
    withLvscare: await bundleSpec(join(dir, 'ha'), { images: [lvscare, ...images], binaries: [kubeadm] }, join(dir, 'ha.tar.zst'), 'amd64', o),
    withoutLvscare: await bundleSpec(join(dir, 'plain'), { images, binaries: [kubeadm] }, join(dir, 'plain.tar.zst'), 'amd64', o),
  };
});

// Not sealer's default (10.103.97.2): the cluster spec's own, to see it used everywhere.
const VIP = '10.103.97.9';

describe('acinstall from with two masters', () => {
  const args = (bundlePath: string) => {
    const [m1, m2, w] = t.lab.hosts;
    return ['from', bundlePath, '-m', `${m1.ip},${m2.ip}`, '-n', w.ip, '-i', t.lab.key, '--store', join(t.work.dir, 'site'), '--ignore-preflight', 'disk,ip_forward,br_netfilter'];
  };

  it('refuses to run anywhere but on the first master', async () => {
    const [m1, m2] = t.lab.hosts;
    const r = await acinstallOn(m2, args(t.built.withLvscare), ROOT);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(`acinstall runs on the first master (${m1.ip}, the first of the masters), and this machine is not it (its addresses: ${m2.ip})`);
  });

  it('refuses a bundle without lvscare before touching any node', async () => {
    const [m1, m2, w] = t.lab.hosts;
    const r = await acinstallOn(m1, args(t.built.withoutLvscare), ROOT);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/2 masters: workers reach them through 10\.103\.97\.2, kept by lvscare, and .* carries no lvscare image/); // the flags' default VIP
    for (const h of [m1, m2, w]) await expect(ssh(t.lab, m1, h, 'test -e /var/log/acpack-standins/kubeadm.calls')).rejects.toThrow();
  });

  it('says why the registry could not start (its port taken), before touching any node', async () => {
    const [m1, m2, w] = t.lab.hosts;
    const squatter = spawn('nsenter', [`--net=/run/netns/${m1.netns}`, '--', 'python3', '-m', 'http.server', '5000'], { stdio: 'ignore' });
    try {
      for (let i = 0; i < 50 && !(await inHost(m1, 'sh', ['-c', "ss -ltn | grep -q ':5000 '"]).then(() => true, () => false)); i++) await sleep(100);
      const r = await acinstallOn(m1, args(t.built.withLvscare), ROOT);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/the site registry \(background process \d+ .*\) did not start on https:\/\/[\d.]+:5000:\n.*cannot listen on 0\.0\.0\.0:5000: EADDRINUSE/);
      for (const h of [m1, m2, w]) await expect(ssh(t.lab, m1, h, 'test -e /var/log/acpack-standins/kubeadm.calls')).rejects.toThrow();
    } finally {
      await stopChild(squatter);
    }
  });

  it('joins the second master as control plane and puts the worker behind the virtual IP (from a kind: Cluster spec)', async () => {
    const [m1, m2, w] = t.lab.hosts;
    const clusterFile = join(t.work.dir, 'cluster.yaml');
    await writeFile(
      clusterFile,
      stringify({
        apiVersion: 'acpack/v1',
        kind: 'Cluster',
        metadata: { name: 'ha' },
        spec: {
          ssh: { user: 'root', pk: t.lab.key },
          hosts: [
            { ips: [m1.ip, m2.ip], roles: ['master'] },
            { ips: [w.ip], roles: ['node'] },
          ],
          network: { apiServerVIP: VIP },
        },
      }),
    );
    const r = await acinstallOn(m1, ['from', t.built.withLvscare, '--cluster', clusterFile, '--store', join(t.work.dir, 'site'), '--ignore-preflight', 'disk,ip_forward,br_netfilter'], ROOT);
    expect(r.code, r.stderr).toBe(0);
    const esc = (x: string) => x.replace(/\./g, '\\.');
    expect(r.stdout).toMatch(new RegExp(`${esc(m1.ip)}\\s+first master\\s+init \\(Kubernetes v1\\.22\\.15\\)\\s+apiserver\\.cluster\\.local is ${esc(m1.ip)}`));
    expect(r.stdout).toMatch(new RegExp(`${esc(w.ip)}\\s+worker\\s+joined\\s+apiserver\\.cluster\\.local is ${esc(VIP)}`));
    const calls = async (h: typeof m1) => (await ssh(t.lab, m1, h, 'cat /var/log/acpack-standins/kubeadm.calls')).stdout.trim().split('\n');
    // init uploaded no control-plane certificates; they were uploaded just before the second master
    // joined (their Secret lives two hours), and it joined with that very key.
    expect(await calls(m1)).toEqual([
      'config images list --config /etc/kubernetes/acpack-kubeadm.yaml',
      'init --config /etc/kubernetes/acpack-kubeadm.yaml',
      'init phase upload-certs --upload-certs --config /etc/kubernetes/acpack-kubeadm.yaml',
    ]);
    expect(await calls(m2)).toEqual(['join --config /etc/kubernetes/acpack-join.yaml']);
    expect(await calls(w)).toEqual(['join --config /etc/kubernetes/acpack-join.yaml']);
    const uploaded = (await ssh(t.lab, m1, m1, 'cat /var/lib/acpack-standins/uploaded-certificate-keys')).stdout.trim().split('\n');
    expect(uploaded).toHaveLength(1);
    expect((await ssh(t.lab, m1, m2, 'cat /var/lib/acpack-standins/certificate-key')).stdout.trim()).toBe(uploaded[0].split(' ')[1]);
    const logOf = async (h: typeof m1) => (await readFile(join(t.work.dir, 'site', 'logs', `${h.ip}.log`), 'utf8')).split(/^--- /m).slice(1);
    const at = (block: string) => Date.parse(block.slice(0, block.indexOf(' ')));
    const upload = (await logOf(m1)).find((b) => b.includes('$ kubeadm init phase upload-certs'))!;
    const joined = (await logOf(m2)).find((b) => b.includes('kubeadm join --config'))!;
    expect(at(upload)).toBeGreaterThan(at((await logOf(m1)).find((b) => b.includes('kubeadm init --config'))!));
    expect(at(upload)).toBeLessThan(at(joined));

    // Each master is its own API server; the worker goes through the VIP, which lvscare keeps.
    const entry = async (h: typeof m1) => (await ssh(t.lab, m1, h, 'grep apiserver.cluster.local /etc/hosts')).stdout;
    expect(await entry(m1)).toBe(`${m1.ip} apiserver.cluster.local # acpack\n`);
    expect(await entry(m2)).toBe(`${m2.ip} apiserver.cluster.local # acpack\n`);
    expect(await entry(w)).toBe(`${VIP} apiserver.cluster.local # acpack\n`);
    const pod = parseYaml((await ssh(t.lab, m1, w, 'cat /etc/kubernetes/manifests/kube-lvscare.yaml')).stdout);
    expect(pod.spec.containers[0].image).toBe(t.built.lvscare);
    expect(pod.spec.containers[0].args).toEqual(['care', '--vs', `${VIP}:6443`, '--health-path', '/healthz', '--health-schem', 'https', '--rs', `${m1.ip}:6443`, '--rs', `${m2.ip}:6443`]);
    for (const m of [m1, m2]) await expect(ssh(t.lab, m1, m, 'test -e /etc/kubernetes/manifests/kube-lvscare.yaml')).rejects.toThrow();

    // Each node pulled its images for kubeadm ahead, into the kubelet's namespace: the control
    // plane's on the masters only, the worker the rest and lvscare.
    expect(r.stderr).toMatch(/images pulled ahead: done on \d node\(s\), still pulling on \d/);
    expect(r.stderr).toMatch(/peer cache: the registry sent \S+ \S+ to the nodes' agents.*; they took \S+ \S+ from each other/);
    const pulledAhead = async (h: typeof m1) => {
      await ssh(t.lab, m1, h, 'for i in $(seq 600); do [ -f /var/lib/acpack/runs/prepull/status ] && break; sleep 0.1; done; test "$(cat /var/lib/acpack/runs/prepull/status)" = 0', 90_000);
      return (await ssh(t.lab, m1, h, 'ctr -n k8s.io images ls -q')).stdout.split('\n').filter(Boolean);
    };
    const named = (refs: string[], name: string) => refs.some((x) => x.includes(`/${name}:`));
    for (const m of [m1, m2]) {
      const refs = await pulledAhead(m);
      for (const n of ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'etcd', 'kube-proxy', 'pause', 'coredns']) expect(named(refs, n), `${n} on ${m.ip}: ${refs}`).toBe(true);
    }
    const onWorker = await pulledAhead(w);
    for (const n of ['kube-proxy', 'pause', 'coredns']) expect(named(onWorker, n), `${n}: ${onWorker}`).toBe(true);
    for (const n of ['kube-apiserver', 'etcd']) expect(named(onWorker, n), `${n}: ${onWorker}`).toBe(false);
    expect(onWorker).toContain(t.built.lvscare);

    const cfg = (await ssh(t.lab, m1, m1, 'cat /etc/kubernetes/acpack-kubeadm.yaml')).stdout;
    expect(cfg).toContain('controlPlaneEndpoint: apiserver.cluster.local:6443');
    for (const san of [m1.ip, m2.ip, VIP, 'apiserver.cluster.local']) expect(cfg).toContain(`- ${san}`);
  }, 180_000); // a whole three-node install (containerd really restarted on each), on a machine that may be busy
});
