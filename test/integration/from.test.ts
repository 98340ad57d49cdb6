import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { bundle } from '../../packer/index.js';
import { parsePlatformList } from '../../arch/platform.js';
import { sha256 } from '../../oci/digest.js';
import { buildIndexImage, buildLayer, pushImage } from '../../demo/samples.js';
import { labDown, labUp, inHost, ssh, type Lab } from '../hosts/lab.js';
import { ROOT, silent, tempDir, withRegistry } from '../helpers/env.js';
import { buildFixture, imageRef, pushFixture, writeManifest, type Fixture } from '../helpers/fixtures.js';

let lab: Lab;
let work: Awaited<ReturnType<typeof tempDir>>;
let fx: Fixture;
let upstream: string;
let bundlePath: string;
let pauseRef: string;

beforeAll(async () => {
  work = await tempDir();
  const source = await withRegistry();
  upstream = source.registry.host;
  fx = await buildFixture('from');
  await pushFixture(upstream, fx);
  const pause = buildIndexImage('ecp_builder/pause', '3.5', { amd64: [await buildLayer([{ path: 'pause', content: 'pause amd64' }])], arm64: [await buildLayer([{ path: 'pause', content: 'pause arm64' }])] });
  await pushImage(upstream, pause);
  pauseRef = `${upstream}/ecp_builder/pause:3.5`;
  const bin = join(work.dir, 'bin');
  await mkdir(join(bin, 'pkg'), { recursive: true });
  await writeFile(join(bin, 'tool-amd64'), '#!/bin/sh\necho tool amd64\n');
  await writeFile(join(bin, 'tool-arm64'), '#!/bin/sh\necho tool arm64\n');
  await writeFile(join(bin, 'pkg/hello.txt'), 'from a tarball\n');
  execFileSync('tar', ['-czf', join(bin, 'pkg.tar.gz'), '-C', join(bin, 'pkg'), 'hello.txt']);
  const pkgSha = execFileSync('sha256sum', [join(bin, 'pkg.tar.gz')]).toString().split(' ')[0];
  const m = await writeManifest(work.dir, {
    images: [pauseRef, imageRef(upstream, fx.web)],
    binaries: [
      { name: 'tool', version: 'v1', url: 'bin/tool-{arch}', sha256: { amd64: sha256('#!/bin/sh\necho tool amd64\n').slice(7), arm64: sha256('#!/bin/sh\necho tool arm64\n').slice(7) }, install: '/usr/bin/acpack-tool' },
      { name: 'pkg', version: 'v1', url: 'bin/pkg.tar.gz', sha256: pkgSha, extract: '/opt/acpack-pkg' },
    ],
  });
  bundlePath = join(work.dir, 'b.tar.zst');
  await bundle({ manifestFile: m, platforms: parsePlatformList('amd64,arm64'), cacheDir: join(work.dir, 'cache'), reporter: silent, sourceDateEpoch: 0, out: bundlePath });
  await source.cleanup(); // the site has no upstream
  lab = await labUp(2, { dir: join(work.dir, 'lab') });
}, 180_000);

afterAll(async () => {
  if (lab) await labDown(lab);
  await work?.cleanup();
});

async function acinstall(args: string[]) {
  try {
    return { code: 0, ...(await inHost(lab.hosts[0], process.execPath, ['--import', 'tsx', join(ROOT, 'installer/main.ts'), ...args], 120_000)) };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: e.code ?? -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

const store = () => join(work.dir, 'site');
const fromArgs = () => ['from', bundlePath, '-m', lab.hosts[0].ip, '-n', lab.hosts[1].ip, '-i', lab.key, '--store', store(), '--ignore-preflight', 'disk,ip_forward,br_netfilter'];

describe('acinstall from on test hosts', () => {
  it('gives every node its binaries and a containerd configuration that pulls only from the site', async () => {
    const r = await acinstall(fromArgs());
    expect(r.code, r.stderr).toBe(0);
    const [master, worker] = lab.hosts;
    expect((await ssh(lab, master, worker, '/usr/bin/acpack-tool')).stdout.trim()).toBe('tool amd64');
    expect((await ssh(lab, master, worker, 'stat -c %a /usr/bin/acpack-tool')).stdout.trim()).toBe('755');
    expect((await ssh(lab, master, worker, 'cat /opt/acpack-pkg/hello.txt')).stdout).toBe('from a tarball\n');
    const hostsToml = (await ssh(lab, master, worker, `cat /etc/containerd/certs.d/${upstream}/hosts.toml`)).stdout;
    expect(hostsToml).toContain(`server = "http://${master.ip}:5000"`);
    const config = (await ssh(lab, master, worker, 'cat /etc/containerd/config.toml')).stdout;
    expect(config).toContain(`sandbox_image = "${pauseRef}"`);
    expect(config).toContain('config_path = "/etc/containerd/certs.d"');
    expect(config).toContain('SystemdCgroup = true');
  });

  it('a real containerd on a node pulls by the original name through the written hosts.toml', async () => {
    const [master, worker] = lab.hosts;
    const d = '/tmp/acpack-ctrd';
    // containerd is started detached from the SSH session (all fds redirected), its PID kept to stop it.
    const setup = [
      `mkdir -p ${d}`,
      `printf 'version = 2\\nroot = "${d}/root"\\nstate = "${d}/state"\\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\\n[grpc]\\n  address = "${d}/sock"\\n[ttrpc]\\n  address = "${d}/sock.ttrpc"\\n' > ${d}/config.toml`,
      `{ containerd --config ${d}/config.toml > ${d}/log 2>&1 < /dev/null & echo $! > ${d}/pid; }`,
      `for i in $(seq 50); do [ -S ${d}/sock ] && break; sleep 0.1; done`,
    ].join('; ');
    await ssh(lab, master, worker, setup);
    try {
      const ref = imageRef(upstream, fx.web);
      await ssh(lab, master, worker, `ctr --address ${d}/sock -n acpack content fetch --hosts-dir /etc/containerd/certs.d --platform linux/amd64 ${ref}`);
      const images = (await ssh(lab, master, worker, `ctr --address ${d}/sock -n acpack images ls`)).stdout;
      expect(images).toContain(ref);
      expect(images).toContain(fx.web.top.digest);
    } finally {
      await ssh(lab, master, worker, `kill $(cat ${d}/pid)`).catch(() => {});
    }
  });

  it('a re-run skips what the journal records as done, and status shows it', async () => {
    const r = await acinstall(fromArgs());
    expect(r.code, r.stderr).toBe(0);
    const status = await acinstall(['status', '--store', store()]);
    for (const h of lab.hosts) {
      expect(status.stdout).toMatch(new RegExp(`${h.ip.replace(/\./g, '\\.')}\\s+binaries\\s+done\\s+2 binaries for amd64`));
      expect(status.stdout).toMatch(new RegExp(`${h.ip.replace(/\./g, '\\.')}\\s+containerd-config\\s+done`));
    }
    expect(status.stdout).toMatch(/import\s+done/);
  });
});
