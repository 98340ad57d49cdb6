import { describe, expect, it } from 'vitest';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { writeFile } from 'node:fs/promises';
import { sha256 } from '../../oci/digest.js';
import { ssh } from '../hosts/lab.js';
import { kubeletBinary } from '../hosts/standins/kubeadm-standin.js';
import { ACINSTALL, ROOT } from '../helpers/env.js';
import { bundleSpec, buildFixture, imageRef, kubeadmContent, localBinary, pushFixture } from '../helpers/fixtures.js';
import { useLab } from '../helpers/lab.js';

/**
 * The site as it is: a first master with no Node.js, no npm and no project, given only acinstall's
 * executable and the bundle, lays the cluster down. (acinstall runs inside the master's own root
 * here, over SSH, where every other lab test runs it from this machine's files.)
 */
const TOOL = '#!/bin/sh\necho bare tool\n';

const t = useLab(3, async ({ host, dir }) => {
  const { images, kubeadm } = await kubeadmContent(host, dir);
  const fx = await buildFixture('bare');
  await pushFixture(host, fx);
  await writeFile(join(dir, 'tool'), TOOL);
  const bundle = await bundleSpec(
    dir,
    { images: [...images, imageRef(host, fx.web)], binaries: [kubeadm, kubeletBinary(), localBinary('tool', 'v1', join(dir, 'tool'), '/usr/bin/acpack-tool')] },
    join(dir, 'b.tar.zst'),
    'amd64',
    { allowIncomplete: true }, // no CNI chart: the stand-ins start no API server for helm
  );
  return { bundle, upstream: host, fx };
});

describe('a first master without Node.js', { timeout: 240_000 }, () => {
  it('runs acinstall from with only the executable and the bundle: 1 master and 2 workers, to the end', async () => {
    const [master, w1, w2] = t.lab.hosts;
    const site = '/root/site';
    const on = (h: typeof master, command: string, timeoutMs?: number) => ssh(t.lab, master, h, command, timeoutMs);
    await on(master, `mkdir -p ${site} && cp ${ACINSTALL} ${site}/acinstall && cp ${t.built.bundle} ${site}/bundle.tar.zst`);
    // Take node, npm, npx, the project and npm's cache away from the master's root (its own mount
    // namespace and overlay: this machine keeps them).
    await on(
      master,
      [
        `for c in node npm npx; do for i in 1 2 3; do p=$(command -v $c) || break; rm -f "$p"; done; done`,
        `mount -t tmpfs none ${ROOT}`,
        // npm's own files, where this machine has them.
        `for d in /usr/lib/node_modules /usr/local/lib/node_modules ${homedir()}/.npm; do if [ -d $d ]; then mount -t tmpfs none $d; fi; done`,
      ].join('\n'),
    );
    expect(await on(master, 'command -v node npm npx').then(() => 'found', (e: { code?: number }) => e.code)).toBe(1);
    expect((await on(master, `find ${ROOT} ${homedir()}/.npm -mindepth 1 2>/dev/null | head -1`)).stdout).toBe('');

    const from = await on(
      master,
      `${site}/acinstall from ${site}/bundle.tar.zst -m ${master.ip} -n ${w1.ip},${w2.ip} -i ${t.lab.key} --store ${site}/store --ignore-preflight disk,ip_forward,br_netfilter 2>&1`,
      200_000,
    ).then(
      () => ({ code: 0, out: '' }),
      (e: { code?: number; stdout?: string }) => ({ code: e.code, out: e.stdout ?? '' }),
    );
    expect(from.code, from.out).toBe(0);

    for (const h of [master, w1, w2]) {
      expect((await on(h, 'sha256sum /usr/bin/acpack-tool')).stdout.split(' ')[0]).toBe(sha256(TOOL).slice(7));
      // acinstall's runtime, from the bundle, runs on every node (none has Node.js either).
      expect((await on(h, '/usr/local/lib/acpack/acinstall --version')).stdout).toMatch(/^\d+\.\d+\.\d+/);
      const hostsToml = (await on(h, `cat /etc/containerd/certs.d/${t.built.upstream}/hosts.toml`)).stdout;
      expect(hostsToml).toContain(`server = "https://${master.ip}:5000"`);
    }
    const calls = async (h: typeof master) => (await on(h, 'cat /var/log/acpack-standins/kubeadm.calls')).stdout;
    expect(await calls(master)).toMatch(/^init --config/m);
    for (const w of [w1, w2]) expect(await calls(w)).toMatch(/^join /m);
    // A worker's containerd (the one acinstall configured) pulls by the original name from the site.
    const ref = imageRef(t.built.upstream, t.built.fx.web);
    await on(w1, `ctr -n acpack-test content fetch --hosts-dir /etc/containerd/certs.d --platform linux/amd64 ${ref} >/dev/null`, 60_000);
    expect((await on(w1, 'ctr -n acpack-test images ls -q')).stdout).toContain(ref);

    const status = (await on(master, `${site}/acinstall status --store ${site}/store`)).stdout;
    expect(status).toMatch(/import\s+done/);
    expect(status).toMatch(new RegExp(`${master.ip.replace(/\./g, '\\.')}\\s+kubeadm-init\\s+done`));
    for (const w of [w1, w2]) expect(status).toMatch(new RegExp(`${w.ip.replace(/\./g, '\\.')}\\s+kubeadm-join\\s+done`));
  });
});
