import { describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { createGunzip } from 'node:zlib';
import { join } from 'node:path';
import { hexOf, sha256 } from '../../oci/digest.js';
import { readDescriptor } from '../../oci/bundle-reader.js';
import type { Arch } from '../../arch/platform.js';
import { acinstallOn, ssh } from '../hosts/lab.js';
import { kubeadmBinary, kubeletBinary } from '../hosts/standins/kubeadm-standin.js';
import { ROOT } from '../helpers/env.js';
import { bundleSpec } from '../helpers/fixtures.js';
import { pushKubeadmImages } from '../helpers/kubeadm-images.js';
import { useLab } from '../helpers/lab.js';

/**
 * One cluster of two arches: an amd64 first master and a worker that reports aarch64 (node2: its
 * `uname -m` is an arm64 program under qemu-user, see labUp). Each node gets its own arch's
 * binaries and acinstall runtime, checked by sha256 on the node.
 */
const TOOL: Record<Arch, string> = { amd64: '#!/bin/sh\necho tool amd64\n', arm64: '#!/bin/sh\necho tool arm64\n' };

const t = useLab(
  2,
  async ({ host, dir }) => {
    const images = await pushKubeadmImages(host, { arches: ['amd64', 'arm64'] });
    for (const arch of ['amd64', 'arm64'] as const) await writeFile(join(dir, `tool-${arch}`), TOOL[arch]);
    const tool = { name: 'tool', version: 'v1', url: join(dir, 'tool-{arch}'), sha256: { amd64: sha256(TOOL.amd64).slice(7), arm64: sha256(TOOL.arm64).slice(7) }, install: '/usr/bin/acpack-tool' };
    const binaries = [await kubeadmBinary(join(dir, 'bin')), kubeletBinary(), tool];
    return bundleSpec(dir, { images, binaries }, join(dir, 'b.tar.zst'), 'amd64,arm64', { allowIncomplete: true });
  },
  { arm64: ['node2'] },
);

/** The sha256 of the executable the bundle carries for `arch` (gzipped in the site store after import). */
async function bundledRuntimeSha(store: string, arch: Arch): Promise<string> {
  const r = (await readDescriptor(t.built)).runtime!.find((x) => x.arch === arch)!;
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(join(store, 'blobs', 'sha256', hexOf(r.digest))).pipe(createGunzip())) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

describe('a cluster of amd64 and arm64 nodes', { timeout: 300_000 }, () => {
  it("gives each node its own arch's binaries and acinstall runtime", async () => {
    const [master, arm] = t.lab.hosts;
    const on = (h: typeof master, command: string, timeoutMs?: number) => ssh(t.lab, master, h, command, timeoutMs);
    expect((await on(arm, 'uname -m', 60_000)).stdout.trim()).toBe('aarch64');
    expect((await on(master, 'uname -m')).stdout.trim()).toBe('x86_64');

    const store = join(t.work.dir, 'site');
    const r = await acinstallOn(master, ['from', t.built, '-m', master.ip, '-n', arm.ip, '-i', t.lab.key, '--store', store, '--ignore-preflight', 'disk,ip_forward,br_netfilter'], ROOT, 300_000);
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);

    for (const [h, arch] of [[master, 'amd64'], [arm, 'arm64']] as const) {
      const sums = (await on(h, 'sha256sum /usr/bin/acpack-tool /usr/local/lib/acpack/acinstall')).stdout.split('\n').map((l) => l.split(' ')[0]);
      expect(sums[0], `${h.name}'s tool`).toBe(sha256(TOOL[arch]).slice(7));
      expect(sums[1], `${h.name}'s runtime`).toBe(await bundledRuntimeSha(store, arch));
      expect((await on(h, 'stat -c %a /usr/local/lib/acpack/acinstall')).stdout.trim()).toBe('755');
    }
    // The master's runs. The arm64 one is the bundled executable byte for byte (above), which
    // site-executable.test.ts runs under qemu-user (import, serve): not run again here, where
    // qemu would spend a minute of CPU compiling the same bundle.
    const version = (await acinstallOn(master, ['--version'], ROOT)).stdout.trim();
    expect((await on(master, '/usr/local/lib/acpack/acinstall --version')).stdout.trim()).toBe(version);

    expect((await on(arm, 'cat /var/log/acpack-standins/kubeadm.calls')).stdout).toMatch(/^join /m);
    const status = (await acinstallOn(master, ['status', '--store', store], ROOT)).stdout;
    expect(status).toMatch(new RegExp(`${arm.ip.replace(/\./g, '\\.')}\\s+binaries\\s+done\\s+[\\d-]+ [\\d:]+\\s+3 binaries for arm64`));
    expect(status).toMatch(new RegExp(`${master.ip.replace(/\./g, '\\.')}\\s+peer-cache\\s+done\\s+[\\d-]+ [\\d:]+\\s+agent on \\S+, acinstall \\S+\\+node\\S+ for amd64`));
    // This test host runs no arm64 program without qemu by name (no binfmt_misc): its agent cannot
    // start, which costs the node nothing but the peer cache: a warning, and its pulls go to the registry.
    expect(r.stderr + r.stdout).toContain(`${arm.ip}: the peer cache agent does not answer`);
  });
});
