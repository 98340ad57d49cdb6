import { describe, expect, it } from 'vitest';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { sha256 } from '../../oci/digest.js';
import { buildIndexImage, buildLayer, pushImage } from '../../demo/samples.js';
import { acinstallOn, killHost, reviveHost, ssh } from '../hosts/lab.js';
import { KUBEADM_STANDIN, kubeadmBinary } from '../hosts/standins/kubeadm-standin.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { ROOT } from '../helpers/env.js';
import { buildFixture, bundleSpec, imageRef, localBinary, pushFixture } from '../helpers/fixtures.js';
import { pushKubeadmImages } from '../helpers/kubeadm-images.js';
import { useLab } from '../helpers/lab.js';

const t = useLab(3, async ({ host: upstream, dir }) => {
  const fx = await buildFixture('from');
  await pushFixture(upstream, fx);
  const pause = buildIndexImage('ecp_builder/pause', '3.5', { amd64: [await buildLayer([{ path: 'pause', content: 'pause amd64' }])], arm64: [await buildLayer([{ path: 'pause', content: 'pause arm64' }])] });
  await pushImage(upstream, pause);
  const pauseRef = `${upstream}/ecp_builder/pause:3.5`;
  const api = buildIndexImage('ecp_builder/kube-apiserver', 'v1.22.15', { amd64: [await buildLayer([{ path: 'api', content: 'apiserver' }])], arm64: [await buildLayer([{ path: 'api', content: 'apiserver arm' }])] });
  await pushImage(upstream, api);
  const apiRef = `${upstream}/ecp_builder/kube-apiserver:v1.22.15`;
  // The rest of what kubeadm v1.22.15 asks for (acinstall checks with `kubeadm config images list`).
  const kubeadmImages = await pushKubeadmImages(upstream, { leaveOut: ['pause', 'kube-apiserver'] });
  const bin = join(dir, 'bin');
  await mkdir(join(bin, 'pkg'), { recursive: true });
  await writeFile(join(bin, 'tool-amd64'), '#!/bin/sh\necho tool amd64\n');
  await writeFile(join(bin, 'tool-arm64'), '#!/bin/sh\necho tool arm64\n');
  await writeFile(join(bin, 'pkg/hello.txt'), 'from a tarball\n');
  execFileSync('tar', ['-czf', join(bin, 'pkg.tar.gz'), '-C', join(bin, 'pkg'), 'hello.txt']);
  const pkgSha = execFileSync('sha256sum', [join(bin, 'pkg.tar.gz')]).toString().split(' ')[0];
  // kubeadm cannot run here: an honest stand-in that records its calls and writes what kubeadm would.
  const kubeadm = (version: string) => localBinary('kubeadm', version, KUBEADM_STANDIN, '/usr/bin/kubeadm');
  // kubelet cannot run here either: a script that says its version is enough to see which one is in place.
  const kubelet = (version: string) => {
    const file = join(bin, `kubelet-${version}`);
    writeFileSync(file, `#!/bin/sh\necho kubelet ${version}\n`);
    return localBinary('kubelet', version, file, '/usr/bin/kubelet');
  };
  const first = await bundleSpec(
    dir,
    {
      images: [pauseRef, apiRef, ...kubeadmImages, imageRef(upstream, fx.web)],
      binaries: [
        { name: 'tool', version: 'v1', url: 'bin/tool-{arch}', sha256: { amd64: sha256('#!/bin/sh\necho tool amd64\n').slice(7), arm64: sha256('#!/bin/sh\necho tool arm64\n').slice(7) }, install: '/usr/bin/acpack-tool' },
        { name: 'pkg', version: 'v1', url: 'bin/pkg.tar.gz', sha256: pkgSha, extract: '/opt/acpack-pkg' },
        kubeadm('v1.22.15'),
        kubelet('v1.22.15'),
      ],
    },
    join(dir, 'b.tar.zst'),
    'amd64,arm64',
    // No CNI chart (the stand-ins start no API server for helm): acpack's lint would refuse it.
    { allowIncomplete: true },
  );
  // The next release: the same content but a new tool, for the upgrade test.
  await writeFile(join(bin, 'tool-amd64'), '#!/bin/sh\necho tool amd64 v2\n');
  await writeFile(join(bin, 'tool-arm64'), '#!/bin/sh\necho tool arm64 v2\n');
  const next = await bundleSpec(
    join(dir, 'v2'),
    {
      images: [pauseRef, apiRef, ...kubeadmImages, imageRef(upstream, fx.web)],
      binaries: [
        { name: 'tool', version: 'v2', url: join(bin, 'tool-{arch}'), sha256: { amd64: sha256('#!/bin/sh\necho tool amd64 v2\n').slice(7), arm64: sha256('#!/bin/sh\necho tool arm64 v2\n').slice(7) }, install: '/usr/bin/acpack-tool' },
        kubeadm('v1.22.15'),
        kubelet('v1.22.15'),
      ],
    },
    join(dir, 'b2.tar.zst'),
    'amd64,arm64',
    { allowIncomplete: true },
  );
  // A bundle of another Kubernetes version, which acinstall must not half-apply.
  const api2 = buildIndexImage('ecp_builder/kube-apiserver', 'v1.22.16', { amd64: [await buildLayer([{ path: 'api', content: 'apiserver 16' }])] });
  await pushImage(upstream, api2);
  // Its kubeadm is the stand-in of v1.22.16 (a v1.22.15 one refuses to upgrade past its own version, as the real one does).
  const other = await bundleSpec(join(dir, 'v3'), { images: [pauseRef, `${upstream}/ecp_builder/kube-apiserver:v1.22.16`], binaries: [await kubeadmBinary(bin, 'v1.22.16'), kubelet('v1.22.16')] }, join(dir, 'b3.tar.zst'), 'amd64', { allowIncomplete: true });
  return { upstream, fx, pauseRef, bundle: first, bundle2: next, bundle3: other };
});

const acinstall = (args: string[]) => acinstallOn(t.lab.hosts[0], args, ROOT);

const store = () => join(t.work.dir, 'site');
const fromArgs = () => ['from', t.built.bundle, '-m', t.lab.hosts[0].ip, '-n', `${t.lab.hosts[1].ip},${t.lab.hosts[2].ip}`, '-i', t.lab.key, '--store', store(), '--ignore-preflight', 'disk,ip_forward,br_netfilter'];

// Each test runs acinstall on three hosts, often several times: 30 s on a quiet machine, over 60 s on CI's
// two busy cores. The limit is there to stop a hang, not to time them (bench/ does that).
describe('acinstall from on test hosts', { timeout: 180_000 }, () => {
  it('gives every node its binaries and a containerd configuration that pulls only from the site', async () => {
    const r = await acinstall(fromArgs());
    expect(r.code, r.stderr).toBe(0);
    const [master, worker] = t.lab.hosts;
    expect((await ssh(t.lab, master, worker, '/usr/bin/acpack-tool')).stdout.trim()).toBe('tool amd64');
    expect((await ssh(t.lab, master, worker, 'stat -c %a /usr/bin/acpack-tool')).stdout.trim()).toBe('755');
    expect((await ssh(t.lab, master, worker, 'cat /opt/acpack-pkg/hello.txt')).stdout).toBe('from a tarball\n');
    const hostsToml = (await ssh(t.lab, master, worker, `cat /etc/containerd/certs.d/${t.built.upstream}/hosts.toml`)).stdout;
    expect(hostsToml).toContain(`server = "https://${master.ip}:5000"`);
    expect(hostsToml).toContain('ca = "/etc/acpack/registry-ca.crt"');
    expect((await ssh(t.lab, master, worker, 'cat /etc/acpack/registry-ca.crt')).stdout).toContain('BEGIN CERTIFICATE');
    const config = (await ssh(t.lab, master, worker, 'cat /etc/containerd/config.toml')).stdout;
    expect(config).toContain(`sandbox_image = "${t.built.pauseRef}"`);
    expect(config).toContain('config_path = "/etc/containerd/certs.d"');
    expect(config).toContain('SystemdCgroup = true');
    // No join secret reaches the output.
    expect(`${r.stdout}${r.stderr}`).not.toContain('0123456789abcdef');
  }, 120_000); // containerd really starts on every node, on a machine that may be busy

  it('keeps a log per node with every command, and no secret in it', async () => {
    const { readFile } = await import('node:fs/promises');
    const certKey = sha256('certkey').slice(7);
    for (const h of t.lab.hosts) {
      const log = await readFile(join(store(), 'logs', `${h.ip}.log`), 'utf8');
      expect(log).toContain('curl -fsS');
      expect(log).not.toContain('abcdef.0123456789abcdef');
      expect(log).not.toContain(certKey);
    }
    expect(await readFile(join(store(), 'logs', `${t.lab.hosts[0].ip}.log`), 'utf8')).toContain('kubeadm init --config');
    // A join's token travels in its JoinConfiguration, on standard input: never in a command line.
    expect(await readFile(join(store(), 'logs', `${t.lab.hosts[1].ip}.log`), 'utf8')).toContain('kubeadm join --config /etc/kubernetes/acpack-join.yaml');
  });

  it('writes the kubelet units and kernel settings, starts containerd and enables kubelet (systemctl stand-in)', async () => {
    const [master, worker] = t.lab.hosts;
    // What changes the node's services (the rest asks systemctl questions): the peer cache agent
    // started, then containerd (re)started to run its configuration.
    const calls = (await ssh(t.lab, master, worker, 'cat /var/log/acpack-standins/systemctl.calls')).stdout.trim().split('\n');
    expect(calls.filter((c) => !/^(show|cat|is-active|is-enabled) /.test(c))).toEqual(['daemon-reload', 'enable acpack-agent', 'restart acpack-agent', 'daemon-reload', 'enable containerd kubelet', 'restart containerd']);
    expect((await ssh(t.lab, master, worker, 'systemctl is-active containerd acpack-agent && systemctl is-enabled kubelet')).stdout).toBe('active\nactive\nenabled\n');
    expect((await ssh(t.lab, master, worker, 'cat /etc/systemd/system/kubelet.service.d/10-kubeadm.conf')).stdout).toContain('--kubeconfig=/etc/kubernetes/kubelet.conf');
    // The namespace's own forwarding was switched on from the written sysctl file.
    expect((await ssh(t.lab, master, worker, 'cat /proc/sys/net/ipv4/ip_forward')).stdout.trim()).toBe('1');
  });

  it('runs kubeadm init once on the master and joins both workers, with the original image repository', async () => {
    const [master, w1, w2] = t.lab.hosts;
    const calls = (h: typeof master) => ssh(t.lab, master, h, 'cat /var/log/acpack-standins/kubeadm.calls').then((r) => r.stdout.trim().split('\n'));
    // kubeadm's image list asked first; one master: no control-plane certificates uploaded.
    expect(await calls(master)).toEqual(['config images list --config /etc/kubernetes/acpack-kubeadm.yaml', 'init --config /etc/kubernetes/acpack-kubeadm.yaml']);
    for (const w of [w1, w2]) expect(await calls(w)).toEqual(['join --config /etc/kubernetes/acpack-join.yaml']);
    // One master: apiserver.cluster.local is that master everywhere, and no node runs lvscare.
    for (const h of [master, w1, w2]) {
      expect((await ssh(t.lab, master, h, 'grep apiserver.cluster.local /etc/hosts')).stdout).toBe(`${master.ip} apiserver.cluster.local # acpack\n`);
      await expect(ssh(t.lab, master, h, 'test -e /etc/kubernetes/manifests/kube-lvscare.yaml')).rejects.toThrow();
    }
    const cfg = (await ssh(t.lab, master, master, 'cat /etc/kubernetes/acpack-kubeadm.yaml')).stdout;
    expect(cfg).toContain(`imageRepository: ${t.built.upstream}/ecp_builder`);
    expect(cfg).toContain('kubernetesVersion: v1.22.15');
    expect(cfg).toContain('podSubnet: 100.64.0.0/16');
    expect(cfg).toContain('controlPlaneEndpoint: apiserver.cluster.local:6443');
    expect((await ssh(t.lab, master, w2, 'cat /etc/kubernetes/kubelet.conf')).stdout).toContain('server: https://apiserver.cluster.local:6443');
  });

  it('a real containerd on a node pulls by the original name (and the sea.hub site name) through the written hosts.toml', async () => {
    const [master, worker] = t.lab.hosts;
    const d = '/tmp/acpack-ctrd';
    // containerd is started detached from the SSH session (all fds redirected), its PID kept to stop it.
    const setup = [
      `mkdir -p ${d}`,
      `printf 'version = 2\\nroot = "${d}/root"\\nstate = "${d}/state"\\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\\n[grpc]\\n  address = "${d}/sock"\\n[ttrpc]\\n  address = "${d}/sock.ttrpc"\\n' > ${d}/config.toml`,
      `{ containerd --config ${d}/config.toml > ${d}/log 2>&1 < /dev/null & echo $! > ${d}/pid; }`,
      `for i in $(seq 50); do [ -S ${d}/sock ] && break; sleep 0.1; done`,
    ].join('; ');
    await ssh(t.lab, master, worker, setup);
    try {
      const ref = imageRef(t.built.upstream, t.built.fx.web);
      await ssh(t.lab, master, worker, `ctr --address ${d}/sock -n acpack content fetch --hosts-dir /etc/containerd/certs.d --platform linux/amd64 ${ref}`);
      const images = (await ssh(t.lab, master, worker, `ctr --address ${d}/sock -n acpack images ls`)).stdout;
      expect(images).toContain(ref);
      expect(images).toContain(t.built.fx.web.top.digest);
      // The sealer-style site name (what ACK Distro's charts use) finds the same image, re-rooted.
      const siteRef = `sea.hub:5000/${t.built.fx.web.repository}:${t.built.fx.web.tag}`;
      await ssh(t.lab, master, worker, `ctr --address ${d}/sock -n acpack content fetch --hosts-dir /etc/containerd/certs.d --platform linux/amd64 ${siteRef}`);
      const again = (await ssh(t.lab, master, worker, `ctr --address ${d}/sock -n acpack images ls`)).stdout.split('\n').find((l) => l.startsWith(siteRef));
      expect(again).toContain(t.built.fx.web.top.digest);
    } finally {
      await ssh(t.lab, master, worker, `kill $(cat ${d}/pid)`).catch(() => {});
    }
  });

  it('a re-run skips what the journal records as done, and status shows it', async () => {
    const r = await acinstall(fromArgs());
    expect(r.code, r.stderr).toBe(0);
    // Installed nodes are not preflighted again (their kubelet and API server hold the checked ports).
    expect(r.stderr).toContain('preflight passed on 0 nodes (3 already installed)');
    const [master, w1] = t.lab.hosts;
    expect((await ssh(t.lab, master, master, "grep -c '^init ' /var/log/acpack-standins/kubeadm.calls")).stdout.trim()).toBe('1');
    expect((await ssh(t.lab, master, w1, 'wc -l < /var/log/acpack-standins/kubeadm.calls')).stdout.trim()).toBe('1');
    const status = await acinstall(['status', '--store', store()]);
    for (const h of t.lab.hosts) {
      expect(status.stdout).toMatch(new RegExp(`${h.ip.replace(/\./g, '\\.')}\\s+binaries\\s+done\\s+[\\d-]+ [\\d:]+\\s+4 binaries for amd64`));
      expect(status.stdout).toMatch(new RegExp(`${h.ip.replace(/\./g, '\\.')}\\s+containerd-config\\s+done`));
    }
    expect(status.stdout).toMatch(/import\s+done/);
    expect(status.stdout).toMatch(new RegExp(`${master.ip.replace(/\./g, '\\.')}\\s+kubeadm-init\\s+done`));
    expect(status.stdout).toMatch(new RegExp(`${w1.ip.replace(/\./g, '\\.')}\\s+kubeadm-join\\s+done\\s+[\\d-]+ [\\d:]+\\s+worker`));
  });

  it('registry status, stop and start: the nodes reach it only while it runs', async () => {
    const [master, w1] = t.lab.hosts;
    const reach = () => ssh(t.lab, master, w1, `curl -fsS -o /dev/null --cacert /etc/acpack/registry-ca.crt https://${master.ip}:5000/v2/`).then(() => true, () => false);
    const status = await acinstall(['registry', 'status', '--store', store()]);
    expect(status.code, status.stderr).toBe(0);
    expect(status.stdout).toMatch(new RegExp(`^running: https://${master.ip.replace(/\./g, '\\.')}:5000 \\(background process \\d+\\)`));
    expect(await reach()).toBe(true);
    const stop = await acinstall(['registry', 'stop', '--store', store()]);
    expect(stop.stdout).toMatch(/^stopped background process \d+/);
    // The primary and its workers are gone: nothing answers on the port.
    expect(await reach()).toBe(false);
    const stopped = await acinstall(['registry', 'status', '--store', store()]);
    expect(stopped.code).toBe(3);
    expect(stopped.stdout).toMatch(/^stopped: /);
    const start = await acinstall(['registry', 'start', '--store', store()]);
    expect(start.code, start.stderr).toBe(0);
    expect(await reach()).toBe(true);
  });

  it('refuses another host list on the installed cluster, naming the delete or join to run, before touching any node', async () => {
    const [master, w1, w2] = t.lab.hosts;
    const touched = () => Promise.all(t.lab.hosts.map(async (h) => (await ssh(t.lab, master, h, 'cat /var/log/acpack-standins/*.calls | wc -l')).stdout));
    const before = await touched();
    const esc = (ip: string) => ip.replace(/\./g, '\\.');
    const withNodes = (masters: string, nodes: string) => {
      const args = fromArgs();
      args[3] = masters;
      args[5] = nodes;
      return args;
    };
    const dropped = await acinstall(withNodes(master.ip, w1.ip));
    expect(dropped.code).toBe(1);
    expect(dropped.stderr).toMatch(new RegExp(`${esc(w2.ip)} is a worker of the cluster and not named here: to remove it, acinstall delete -n ${esc(w2.ip)} --store `));
    const promoted = await acinstall(withNodes(`${master.ip},${w1.ip}`, w2.ip));
    expect(promoted.code).toBe(1);
    expect(promoted.stderr).toContain(`${w1.ip} is a worker of the cluster and a master here: a node's role cannot change in place`);
    expect(await touched()).toEqual(before);
  });

  it('deletes a worker (kubeadm reset) and joins it back', async () => {
    const [master, , w2] = t.lab.hosts;
    // Every IP is checked before any node is touched: an unknown one, or the first master, stops it all.
    for (const [ips, why] of [[`${w2.ip},10.213.99.99`, '10.213.99.99 is not a node of this cluster'], [master.ip, 'is the first master']]) {
      const refused = await acinstall(['delete', '-n', ips, '--store', store()]);
      expect(refused.code).toBe(1);
      expect(refused.stderr).toContain(why);
    }
    expect((await ssh(t.lab, master, w2, 'tail -1 /var/log/acpack-standins/kubeadm.calls')).stdout).toMatch(/^join /);
    // It asks first; with no terminal to ask on, only --yes goes ahead.
    const unasked = await acinstall(['delete', '-n', w2.ip, '--store', store()]);
    expect(unasked.code).toBe(1);
    expect(unasked.stderr).toContain('add --yes');
    expect((await ssh(t.lab, master, w2, 'tail -1 /var/log/acpack-standins/kubeadm.calls')).stdout).toMatch(/^join /);
    const del = await acinstall(['delete', '-n', w2.ip, '--yes', '--store', store()]);
    expect(del.code, del.stderr).toBe(0);
    // kubeadm reset leaves the Node object: the next step is named, with the node's name.
    expect(del.stderr).toContain(`${w2.ip}: reset and removed; its Node object stays in the API server until: kubectl delete node ${w2.name}`);
    expect((await ssh(t.lab, master, w2, 'tail -1 /var/log/acpack-standins/kubeadm.calls')).stdout.trim()).toBe('reset -f --cri-socket unix:///run/containerd/containerd.sock');
    await expect(ssh(t.lab, master, w2, 'test -e /etc/kubernetes/kubelet.conf')).rejects.toThrow();
    await expect(ssh(t.lab, master, w2, 'grep apiserver.cluster.local /etc/hosts')).rejects.toThrow();
    expect((await acinstall(['status', '--store', store()])).stdout).not.toContain(w2.ip);

    // Weeks later the USB stick is gone: join works from the store alone.
    await rename(t.built.bundle, `${t.built.bundle}.away`);
    try {
      const join = await acinstall(['join', '-n', w2.ip, '--store', store(), '--ignore-preflight', 'disk,ip_forward,br_netfilter']);
      expect(join.code, join.stderr).toBe(0);
    } finally {
      await rename(`${t.built.bundle}.away`, t.built.bundle);
    }
    expect((await ssh(t.lab, master, w2, 'tail -1 /var/log/acpack-standins/kubeadm.calls')).stdout).toMatch(/^join /);
    expect((await acinstall(['status', '--store', store()])).stdout).toMatch(new RegExp(`${w2.ip.replace(/\./g, '\\.')}\\s+kubeadm-join\\s+done`));
  });

  it('a node that fails mid-install fails alone, and the re-run finishes it', async () => {
    const [master, w1, w2] = t.lab.hosts;
    expect((await acinstall(['delete', '-n', w2.ip, '--yes', '--store', store()])).code).toBe(0);
    // Break the node: where a binary goes there is now a directory, so installing it fails.
    await ssh(t.lab, master, w2, 'rm -f /usr/bin/acpack-tool && mkdir /usr/bin/acpack-tool');
    const failing = await acinstall(['join', '-n', w2.ip, '--store', store(), '--ignore-preflight', 'disk,ip_forward,br_netfilter']);
    expect(failing.code).toBe(1);
    expect(failing.stderr).toMatch(new RegExp(`1 of 3 nodes failed:\\n  ${w2.ip.replace(/\./g, '\\.')}: .*installing binaries failed`));
    expect((await ssh(t.lab, master, w1, 'cat /etc/kubernetes/kubelet.conf')).stdout).toContain('apiserver.cluster.local');
    await ssh(t.lab, master, w2, 'rmdir /usr/bin/acpack-tool');
    const again = await acinstall(['join', '-n', w2.ip, '--store', store(), '--ignore-preflight', 'disk,ip_forward,br_netfilter']);
    expect(again.code, again.stderr).toBe(0);
    expect((await ssh(t.lab, master, w2, '/usr/bin/acpack-tool')).stdout.trim()).toBe('tool amd64');
    expect((await ssh(t.lab, master, master, "grep -c '^init --config' /var/log/acpack-standins/kubeadm.calls")).stdout.trim()).toBe('1');
  });

  it('a newer bundle on an installed cluster redoes the bundle steps, not kubeadm', async () => {
    const [master, w1] = t.lab.hosts;
    const args = fromArgs();
    args[1] = t.built.bundle2;
    const r = await acinstall(args);
    expect(r.code, r.stderr).toBe(0);
    expect((await ssh(t.lab, master, w1, '/usr/bin/acpack-tool')).stdout.trim()).toBe('tool amd64 v2');
    expect((await ssh(t.lab, master, master, "grep -c '^init --config' /var/log/acpack-standins/kubeadm.calls")).stdout.trim()).toBe('1');
  });

  it('a worker killed mid-install (power cut) fails alone and soon; delete --force forgets it while it is down, and it joins again once back', async () => {
    const [master, , w2] = t.lab.hosts;
    expect((await acinstall(['delete', '-n', w2.ip, '--yes', '--store', store()])).code).toBe(0);
    // A slow download on w2, so that the cut lands while its binaries are being fetched.
    await ssh(t.lab, master, w2, `printf '#!/bin/sh\ntouch /tmp/curl-started\nsleep 60\nexec /usr/bin/curl "$@"\n' > /usr/local/bin/curl && chmod +x /usr/local/bin/curl && rm -f /tmp/curl-started`);
    // join, not from: from names the cluster's nodes, and w2 is not one of them any more.
    const running = acinstall(['join', '-n', w2.ip, '--store', store(), '--ignore-preflight', 'disk,ip_forward,br_netfilter']);
    for (let i = 0; i < 300; i++) {
      if ((await ssh(t.lab, master, w2, 'test -f /tmp/curl-started').then(() => true, () => false))) break;
      await sleep(100);
    }
    await killHost(w2);
    const cut = Date.now();
    const r = await running;
    // Counted from the cut: what comes before it (preflight, the steps up to the slow download) is
    // the machine's load, not the detection. Keepalives (5 s, 3 missed) notice in about 20 s; TCP's
    // timeout or the step's would take minutes.
    const seconds = (Date.now() - cut) / 1000;
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`1 of 3 nodes failed:\\n  ${w2.ip.replace(/\./g, '\\.')}: .*connection was lost`));
    expect(seconds).toBeLessThan(45);
    expect((await acinstall(['status', '--store', store()])).stdout).not.toMatch(new RegExp(`${w2.ip.replace(/\./g, '\\.')}\\s+kubeadm-join\\s+done`));
    expect(r.stderr).toContain('a node that will not come back: acinstall delete -n IP --force');

    // While it is down, delete cannot reset it, and says how to give it up; --force forgets it untouched.
    const unreached = await acinstall(['delete', '-n', w2.ip, '--yes', '--store', store()]);
    expect(unreached.code).toBe(1);
    expect(unreached.stderr).toContain(`${w2.ip} was not removed; if it will not come back, acinstall delete -n ${w2.ip} --force forgets it`);
    const forced = await acinstall(['delete', '-n', w2.ip, '--yes', '--force', '--store', store()]);
    expect(forced.code, forced.stderr).toBe(0);
    expect(forced.stderr).toContain(`${w2.ip}: not reached`);
    expect(forced.stderr).toContain('run kubeadm reset -f on it');
    expect((await acinstall(['status', '--store', store()])).stdout).not.toContain(w2.ip);

    // Back after all: joined again.
    await reviveHost(t.lab, w2);
    await ssh(t.lab, master, w2, 'rm -f /usr/local/bin/curl');
    const again = await acinstall(['join', '-n', w2.ip, '--store', store(), '--ignore-preflight', 'disk,ip_forward,br_netfilter']);
    expect(again.code, again.stderr).toBe(0);
    expect((await ssh(t.lab, master, w2, '/usr/bin/acpack-tool')).stdout.trim()).toMatch(/^tool amd64/);
    expect((await acinstall(['status', '--store', store()])).stdout).toMatch(new RegExp(`${w2.ip.replace(/\./g, '\\.')}\\s+kubeadm-join\\s+done`));
  }, 240_000); // two SSH connects that time out (15 s each) besides the cut and two joins

  it('joins a node that takes only a password while the hosts already there keep their key', async () => {
    const [master, , w2] = t.lab.hosts;
    expect((await acinstall(['delete', '-n', w2.ip, '--yes', '--store', store()])).code).toBe(0);
    // w2 now refuses the lab's key and takes a password the others do not have (root has none there).
    const password = 'w2-only-pässword';
    await ssh(t.lab, master, w2, `echo 'root:${password}' | chpasswd`);
    const keys = join(t.lab.dir, w2.name, 'authorized_keys');
    const saved = await readFile(keys);
    await writeFile(keys, '');
    try {
      const joined = await acinstall(['join', '-n', w2.ip, '-p', password, '--store', store(), '--ignore-preflight', 'disk,ip_forward,br_netfilter']);
      expect(joined.code, joined.stderr).toBe(0);
      expect(`${joined.stdout}${joined.stderr}`).not.toContain(password);
    } finally {
      await writeFile(keys, saved);
    }
    expect((await ssh(t.lab, master, w2, 'tail -1 /var/log/acpack-standins/kubeadm.calls')).stdout).toMatch(/^join /);
    expect((await acinstall(['status', '--store', store()])).stdout).toMatch(new RegExp(`${w2.ip.replace(/\./g, '\\.')}\\s+kubeadm-join\\s+done`));
  }, 120_000);

  it('upgrades Kubernetes with a newer bundle: the control plane first, then each kubelet, and never back', async () => {
    const [master, w1, w2] = t.lab.hosts;
    for (const h of t.lab.hosts) expect((await ssh(t.lab, master, h, '/usr/bin/kubelet')).stdout.trim()).toBe('kubelet v1.22.15');
    // bundle3 drops the tool: it goes where it is still the bytes bundle2 installed, and stays where someone changed it since.
    await ssh(t.lab, master, w2, "printf '#' >> /usr/bin/acpack-tool");
    const args = fromArgs();
    args[1] = t.built.bundle3;
    const r = await acinstall(args);
    expect(r.code, r.stderr).toBe(0);
    await expect(ssh(t.lab, master, w1, 'test -e /usr/bin/acpack-tool')).rejects.toThrow();
    expect((await ssh(t.lab, master, w2, 'tail -c 1 /usr/bin/acpack-tool')).stdout).toBe('#');
    expect(r.stderr).toContain(`warning: ${w2.ip}: kept /usr/bin/acpack-tool: it changed since acinstall installed it`);
    const calls = async (h: typeof master) => (await ssh(t.lab, master, h, 'cat /var/log/acpack-standins/kubeadm.calls')).stdout.trim().split('\n');
    expect((await calls(master)).filter((c) => c.startsWith('upgrade'))).toEqual(['upgrade apply v1.22.16 -y']);
    for (const w of [w1, w2]) expect((await calls(w)).filter((c) => c.startsWith('upgrade'))).toEqual(['upgrade node']);
    for (const h of t.lab.hosts) {
      expect((await ssh(t.lab, master, h, '/usr/bin/kubelet')).stdout.trim()).toBe('kubelet v1.22.16');
      expect((await ssh(t.lab, master, h, 'tail -1 /var/log/acpack-standins/systemctl.calls')).stdout.trim()).toBe('restart kubelet');
    }
    // Order, from the per-node logs: the master's upgrade apply ended before any worker's kubelet changed.
    const commands = async (h: typeof master) =>
      (await readFile(join(store(), 'logs', `${h.ip}.log`), 'utf8')).split(/^--- /m).slice(1).map((block) => {
        const m = /^(\S+) \((\d+) ms/.exec(block)!;
        return { start: Date.parse(m[1]), end: Date.parse(m[1]) + Number(m[2]), text: block };
      });
    // (kubeadm upgrade runs detached from the session: its command is a line of the script that starts it and waits.)
    const applied = (await commands(master)).find((c) => /^kubeadm upgrade apply /m.test(c.text))!;
    for (const w of [w1, w2]) {
      const all = await commands(w);
      // This run's binaries step staged the new kubelet beside the old one, without swapping it in…
      const staged = all.filter((c) => c.text.includes('curl -fsS')).pop()!;
      expect(staged.text).toContain(`'/usr/bin/kubelet.acpack-new'`);
      expect(staged.text).not.toContain(`mv -f -T '/usr/bin/kubelet.acpack-new'`);
      // …and the swap and restart came after the control plane's upgrade.
      const swap = all.filter((c) => c.text.includes('systemctl restart kubelet')).pop()!;
      expect(swap.text).toContain(`mv -f -T '/usr/bin/kubelet.acpack-new' '/usr/bin/kubelet'`);
      expect(swap.start).toBeGreaterThanOrEqual(applied.end);
    }
    // One worker at a time (--max-unavailable 1): one's upgrade and kubelet restart end before the other's begin.
    const windows = await Promise.all(
      [w1, w2].map(async (w) => {
        const all = await commands(w);
        const start = all.find((c) => /^kubeadm upgrade node$/m.test(c.text))!.start;
        return { start, end: all.filter((c) => c.text.includes('systemctl restart kubelet')).pop()!.end };
      }),
    );
    windows.sort((a, b) => a.start - b.start);
    expect(windows[0].end).toBeLessThanOrEqual(windows[1].start);
    expect((await acinstall(['status', '--store', store()])).stdout).toMatch(new RegExp(`${w2.ip.replace(/\./g, '\\.')}\\s+kubernetes\\s+done\\s+[\\d-]+ [\\d:]+\\s+v1\\.22\\.16`));

    // The older bundle again: a downgrade, refused before any node is touched.
    const before = await calls(master);
    const back = await acinstall(fromArgs());
    expect(back.code).toBe(1);
    expect(back.stderr).toMatch(/runs Kubernetes v1\.22\.16 and .* carries v1\.22\.15: Kubernetes is never downgraded; nothing was changed/);
    expect(await calls(master)).toEqual(before);
    expect((await ssh(t.lab, master, w1, '/usr/bin/kubelet')).stdout.trim()).toBe('kubelet v1.22.16');
  }, 180_000); // an upgrade (workers one at a time) and a refused downgrade: over 60 s on CI's two cores

  it('reset takes the whole cluster down once confirmed, and keeps the store', async () => {
    const [master, w1] = t.lab.hosts;
    // No terminal to ask on and no --yes: refused, nothing touched.
    const refused = await acinstall(['reset', '--store', store()]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('No terminal to ask on: add --yes to go ahead.');
    expect((await ssh(t.lab, master, w1, 'test -e /etc/kubernetes/kubelet.conf && echo there')).stdout).toBe('there\n');

    const r = await acinstall(['reset', '--yes', '--store', store()]);
    expect(r.code, r.stderr).toBe(0);
    for (const h of t.lab.hosts) {
      expect((await ssh(t.lab, master, h, 'tail -1 /var/log/acpack-standins/kubeadm.calls')).stdout.trim()).toBe('reset -f --cri-socket unix:///run/containerd/containerd.sock');
      // What acinstall put there is gone: Kubernetes's state, the node's files, the bundle's binaries and runtime, the hosts line.
      const left = await ssh(t.lab, master, h, 'ls -d /etc/kubernetes /var/lib/kubelet /etc/containerd/certs.d /etc/containerd/config.toml /etc/acpack /usr/local/lib/acpack /usr/bin/kubeadm /usr/bin/kubelet /etc/systemd/system/kubelet.service 2>/dev/null; grep -c apiserver.cluster.local /etc/hosts || true');
      expect(left.stdout).toBe('0\n');
      // The node's own containerd (this machine's binary, not the bundle's) runs again, on its defaults.
      expect((await ssh(t.lab, master, h, 'systemctl is-active containerd')).stdout).toBe('active\n');
      // The kubelet stand-in's ports were let go (kubeadm reset stops the kubelet and the static pods).
      expect((await ssh(t.lab, master, h, 'ss -ltnH')).stdout).not.toMatch(/:(6443|10250)\s/);
    }
    expect((await ssh(t.lab, master, w1, `curl -fsS -o /dev/null -k https://${master.ip}:5000/v2/`).then(() => 'answers', () => 'gone'))).toBe('gone');
    const status = await acinstall(['status', '--store', store()]);
    expect(status.code).toBe(1);
    expect(status.stderr).toContain('no install has run with the store');
    // The content stays for the next install.
    expect(existsSync(join(store(), 'index.db'))).toBe(true);
  });
});
