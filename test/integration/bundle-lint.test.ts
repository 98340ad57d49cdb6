import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { ROOT, runCli, tempDir, withRegistry, type CliResult } from '../helpers/env.js';
import { localBinary, writeManifest } from '../helpers/fixtures.js';
import { pushKubeadmImages } from '../helpers/kubeadm-images.js';
import { buildIndexImage, buildLayer, pushImage } from '../../demo/samples.js';
import { kubeadmBinary } from '../hosts/standins/kubeadm-standin.js';
import { hostPlatform } from '../../packer/index.js';
import { readDescriptor } from '../../oci/bundle-reader.js';
import { bundleIdentity } from '../../oci/bundle-format.js';
import { Journal } from '../../installer/journal.js';

/**
 * acpack's lint of a bundle that carries kubeadm (issue 10, "catch it before the air gap"): the CLI
 * against Debian's docker-registry, with the test hosts' kubeadm stand-in of v1.22.15 as the bundled
 * kubeadm (it runs here: this machine's arch is asked of it, the other arch goes by kubeadm's rules).
 */
let env: Awaited<ReturnType<typeof withRegistry>>;
let work: Awaited<ReturnType<typeof tempDir>>;
let host: string;
/** Every image kubeadm v1.22.15 names for imageRepository <host>/ecp_builder, for amd64 and arm64. */
let kubeImages: string[];
let lvscare: string;
let bins: Record<'kubeadm' | 'kubelet' | 'helm' | 'notRunnable', Record<string, unknown>>;
let charts: { hybridnet: string; calico: string };

const HOST = hostPlatform().architecture;
const OTHER = HOST === 'amd64' ? 'arm64' : 'amd64';

async function chartDir(name: string): Promise<string> {
  const dir = join(work.dir, 'charts', name);
  await mkdir(join(dir, 'templates'), { recursive: true });
  await writeFile(join(dir, 'Chart.yaml'), stringify({ apiVersion: 'v2', name, version: '0.6.8' }));
  await writeFile(join(dir, 'templates', 'cm.yaml'), `apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ${name}\n`);
  return dir;
}

beforeAll(async () => {
  env = await withRegistry();
  host = env.registry.host;
  work = await tempDir('acpack-lint-');
  kubeImages = await pushKubeadmImages(host);
  const layer = async (arch: string) => [await buildLayer([{ path: 'usr/bin/lvscare', content: `lvscare ${arch}`, mode: 0o755 }])];
  await pushImage(host, buildIndexImage('sealerio/lvscare', 'v1.1.3', { amd64: await layer('amd64'), arm64: await layer('arm64') }));
  lvscare = `${host}/sealerio/lvscare:v1.1.3`;
  const helm = join(work.dir, 'helm');
  await writeFile(helm, '#!/bin/sh\necho helm\n');
  // A kubeadm that cannot start on this machine: neither an ELF executable nor a script.
  const notRunnable = join(work.dir, 'kubeadm-elsewhere');
  await writeFile(notRunnable, 'kubeadm for another system\n');
  bins = {
    kubeadm: await kubeadmBinary(join(work.dir, 'bin'), 'v1.22.15'),
    kubelet: localBinary('kubelet', 'v1.22.15', join(ROOT, 'test/hosts/standins/kubelet'), '/usr/bin/kubelet'),
    helm: localBinary('helm', 'v3.9.4', helm, '/usr/bin/helm'),
    notRunnable: localBinary('kubeadm', 'v1.22.15', notRunnable, '/usr/bin/kubeadm'),
  };
  charts = { hybridnet: await chartDir('hybridnet'), calico: await chartDir('calico') };
});

afterAll(async () => {
  await env?.cleanup();
  await work?.cleanup();
});

/** What a bundle that lays a cluster down carries, for amd64 and arm64. */
const complete = () => ({
  images: [...kubeImages, lvscare],
  binaries: [bins.kubeadm, bins.kubelet, bins.helm],
  charts: [{ path: charts.hybridnet }],
});

let n = 0;
/** `acpack bundle` of `spec` for amd64 and arm64, each run in its own directory with its own cache. */
async function bundleOf(spec: Record<string, unknown>, extra: string[] = []): Promise<CliResult & { out: string; dir: string; cache: string }> {
  const dir = join(work.dir, `case${n++}`);
  const m = await writeManifest(dir, spec);
  const out = join(dir, 'b.tar.zst');
  const cache = join(dir, 'cache');
  const r = await runCli(['bundle', '-f', m, '--arch', 'amd64,arm64', '--cache', cache, '-o', out, ...extra], { timeoutMs: 120_000 });
  return { ...r, out, dir, cache };
}

/** Nothing at -o, and no partial bundle beside it. */
async function nothingWritten(r: { out: string; dir: string }): Promise<void> {
  expect(existsSync(r.out)).toBe(false);
  expect((await readdir(r.dir)).filter((f) => f.startsWith('b.tar.zst'))).toEqual([]);
}

/** Blobs in a build cache (0 when the run stopped before fetching anything). */
const cachedBlobs = async (cache: string) => (await readdir(join(cache, 'blobs', 'sha256')).catch(() => [])).length;

describe('acpack bundle: a bundle that carries kubeadm must be able to lay a cluster down', () => {
  it("writes a complete one, asking the bundled kubeadm for this machine's arch and kubeadm's rules for the other", async () => {
    const r = await bundleOf(complete());
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain(`kubeadm's images for linux/${HOST}: asked of the bundled kubeadm (config images list) on this machine`);
    expect(r.stderr).toContain(`kubeadm's images for linux/${OTHER}: asked of acpack's copy of kubeadm v1.22.15's image rules`);
    expect(r.stderr).not.toContain('warning');
    expect(r.stdout).not.toContain('CANNOT LAY A CLUSTER DOWN');
    expect(existsSync(r.out)).toBe(true);
  });

  it('refuses charts without helm before anything is fetched', async () => {
    const r = await bundleOf({ ...complete(), binaries: [bins.kubeadm, bins.kubelet] });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('carries kubeadm, so it is meant to lay a cluster down, and it cannot');
    expect(r.stderr).toContain('it carries 1 chart but no helm binary to install them with');
    expect(r.stderr).toContain(`nothing was written at ${r.out}; nothing was fetched`);
    await nothingWritten(r);
    expect(await cachedBlobs(r.cache)).toBe(0);
  });

  it('refuses a bundle without the default CNI chart (hybridnet), and says it checked the default', async () => {
    const other = await bundleOf({ ...complete(), charts: [{ path: charts.calico }] });
    expect(other.code).toBe(1);
    expect(other.stderr).toContain('no hybridnet chart: acinstall installs the CNI that the site\'s cluster file names (network.cni), hybridnet when it names none, and acpack cannot see that file, so it checks the default');
    expect(other.stderr).toContain("the bundle's calico serves only a cluster file with network.cni: calico");
    await nothingWritten(other);
    expect(await cachedBlobs(other.cache)).toBe(0);

    const none = await bundleOf({ ...complete(), charts: [] });
    expect(none.code).toBe(1);
    expect(none.stderr).toContain('no CNI chart (without one, nodes never become Ready)');
    await nothingWritten(none);
  });

  it('refuses a requested platform without kubeadm or kubelet, naming each, before anything is fetched', async () => {
    const r = await bundleOf({ ...complete(), binaries: [{ ...bins.kubeadm, platforms: [`linux/${HOST}`] }, bins.helm] });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`no kubeadm for linux/${OTHER}, to run kubeadm init or join there`);
    expect(r.stderr).toContain('no kubelet for linux/amd64, linux/arm64, to run a kubelet there');
    await nothingWritten(r);
    expect(await cachedBlobs(r.cache)).toBe(0);
  });

  it("refuses kubeadm's missing images once references are resolved, per arch: the bundled kubeadm's answer here, the rules' for the other", async () => {
    const etcd = kubeImages.find((i) => i.includes('/etcd:'))!;
    const proxy = kubeImages.find((i) => i.includes('/kube-proxy:'))!;
    const images = [...kubeImages.filter((i) => i !== etcd && i !== proxy), { ref: proxy, platforms: [`linux/${HOST}`] }, lvscare];
    const r = await bundleOf({ ...complete(), images });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`kubeadm's images for linux/${HOST}: asked of the bundled kubeadm (config images list) on this machine`);
    expect(r.stderr).toContain(`kubeadm v1.22.15 needs 1 image to install Kubernetes v1.22.15 that the bundle does not carry for linux/${HOST}:\n      ${etcd}\n`);
    expect(r.stderr).toContain(`kubeadm v1.22.15 needs 2 images to install Kubernetes v1.22.15 that the bundle does not carry for linux/${OTHER}:\n      ${proxy}\n      ${etcd}\n`);
    expect(r.stderr).toContain(`nothing was written at ${r.out}; image layers were not downloaded`);
    await nothingWritten(r);
  });

  it('checks the images by the rules when the bundled kubeadm cannot run here, and says so', async () => {
    const r = await bundleOf({ ...complete(), binaries: [bins.notRunnable, bins.kubelet, bins.helm] });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain(`the bundled kubeadm for linux/${HOST} cannot run here (it is neither an ELF executable nor a script): kubeadm's images were checked by acpack's copy of its rules instead`);
    expect(r.stderr).toContain("kubeadm's images for linux/amd64, linux/arm64: asked of acpack's copy of kubeadm v1.22.15's image rules");

    const lacking = await bundleOf({ ...complete(), images: [lvscare], binaries: [bins.notRunnable, bins.kubelet, bins.helm] });
    expect(lacking.code).toBe(1);
    expect(lacking.stderr).toContain('kubeadm v1.22.15 needs 7 images to install Kubernetes v1.22.15 that the bundle does not carry for linux/amd64, linux/arm64:\n      k8s.gcr.io/kube-apiserver:v1.22.15');
    await nothingWritten(lacking);
  });

  it('a delta whose base holds the bundled kubeadm does not download it, and checks the images by the rules', async () => {
    const base = await bundleOf(complete());
    expect(base.code, base.stderr).toBe(0);
    const delta = await bundleOf(complete(), ['--base', base.out]);
    expect(delta.code, delta.stderr).toBe(0);
    expect(delta.stderr).toContain(`the bundled kubeadm for linux/${HOST} cannot run here (it was not downloaded: the delta's base holds it): kubeadm's images were checked by acpack's copy of its rules instead`);
    expect(await readdir(join(delta.cache, 'blobs', 'sha256'))).not.toContain(String(bins.kubeadm.sha256));
  });

  it('--allow-incomplete writes it anyway, with a loud warning in the log and the summary', async () => {
    const r = await bundleOf({ ...complete(), binaries: [bins.kubeadm, bins.kubelet] }, ['--allow-incomplete']);
    expect(r.code, r.stderr).toBe(0);
    expect(existsSync(r.out)).toBe(true);
    expect(r.stderr).toContain('warning: INCOMPLETE (--allow-incomplete): it carries 1 chart but no helm binary to install them with');
    expect(r.stdout).toContain(`WARNING: ${r.out} CANNOT LAY A CLUSTER DOWN as it is (written with --allow-incomplete):\n  - it carries 1 chart but no helm binary`);

    const json = await bundleOf({ ...complete(), charts: [] }, ['--allow-incomplete', '--json']);
    expect(json.code, json.stderr).toBe(0);
    const summary = JSON.parse(json.stdout.trim().split('\n').at(-1)!);
    expect(summary.event).toBe('summary');
    expect(summary.incomplete).toEqual([expect.stringContaining('no CNI chart')]);
  });

  it('warns, and writes, without an lvscare image: clusters with several masters will be refused', async () => {
    const r = await bundleOf({ ...complete(), images: kubeImages });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('warning: no lvscare image: acinstall will refuse clusters with several masters and workers');
    expect(r.stdout).toContain('warning: no lvscare image');
    expect(existsSync(r.out)).toBe(true);
  });

  it('holds a bundle without kubeadm to none of it: a plain content bundle', async () => {
    const r = await bundleOf({ images: [kubeImages[0]], binaries: [bins.kubelet], charts: [{ path: charts.calico }] });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).not.toContain('warning');
    expect(existsSync(r.out)).toBe(true);
  });
});

describe('acpack validate runs the same lint, without fetching', () => {
  const validate = async (spec: Record<string, unknown>, extra: string[] = []) => runCli(['validate', '-f', await writeManifest(join(work.dir, `v${n++}`), spec), '--arch', 'amd64,arm64', ...extra]);

  it('passes a complete manifest and says what it could not check', async () => {
    // Its images are named on a port nothing listens on: validate never reaches a registry.
    const r = await validate({ ...complete(), images: [...kubeImages.map((i) => i.replace(host, '127.0.0.1:9')), '127.0.0.1:9/sealerio/lvscare:v1'] });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('valid (test v1: 8 images, 3 binaries, 1 chart), checked for linux/amd64, linux/arm64 as a bundle that lays a cluster down (it carries kubeadm)');
    expect(r.stdout).toContain("checked: kubeadm's images for linux/amd64, linux/arm64: asked of acpack's copy of kubeadm v1.22.15's image rules");
    expect(r.stdout).toContain('not checked: the bundled kubeadm itself');
    expect(r.stdout).toContain('not checked: that every image exists for its platforms in its registry');
  });

  it('refuses what acpack bundle refuses, and says what it could not check (a local chart it cannot read)', async () => {
    const r = await validate({ images: kubeImages.slice(1), binaries: [bins.kubeadm], charts: [{ path: join(work.dir, 'not-cloned') }] });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('it carries 1 chart but no helm binary');
    expect(r.stderr).toContain('no kubelet for linux/amd64, linux/arm64');
    // Without the kube-apiserver image, kubeadm takes its own default repository for the control plane and pause.
    expect(r.stderr).toContain('kubeadm v1.22.15 needs 5 images to install Kubernetes v1.22.15 that the bundle does not carry for linux/amd64, linux/arm64:\n      k8s.gcr.io/kube-apiserver:v1.22.15');
    expect(r.stderr).toContain('warning: no lvscare image');
    expect(r.stderr).toContain('not checked: the hybridnet chart was not looked for: 1 local chart');
    expect(r.stderr).toContain('acpack bundle would write nothing');

    const allowed = await validate({ images: kubeImages.slice(1), binaries: [bins.kubeadm], charts: [{ path: join(work.dir, 'not-cloned') }] }, ['--allow-incomplete']);
    expect(allowed.code, allowed.stderr).toBe(0);
    expect(allowed.stdout).toContain('warning: INCOMPLETE (--allow-incomplete): no kubelet for linux/amd64, linux/arm64');
  });
});

describe("a bundle's identity on site includes its platforms", () => {
  it('the same manifest bundled for more arches is another bundle: the journal does not take its steps as done', async () => {
    const dir = join(work.dir, 'identity');
    const m = await writeManifest(dir, { images: [kubeImages[0]] });
    const build = async (arch: string, out: string) => {
      const r = await runCli(['bundle', '-f', m, '--arch', arch, '--cache', join(dir, 'cache'), '-o', join(dir, out)]);
      expect(r.code, r.stderr).toBe(0);
      return readDescriptor(join(dir, out));
    };
    const amd64 = await build('amd64', 'a.tar.zst');
    const both = await build('amd64,arm64', 'b.tar.zst');
    const again = await build('arm64,amd64', 'c.tar.zst');
    expect(amd64.source).toBe(both.source);
    expect(bundleIdentity(amd64)).not.toBe(bundleIdentity(both));
    expect(bundleIdentity(again)).toBe(bundleIdentity(both));

    const journal = new Journal(dir);
    try {
      journal.record('10.0.0.2', 'binaries', 'done', '1 binary for amd64', bundleIdentity(amd64));
      expect(journal.isDone('10.0.0.2', 'binaries', bundleIdentity(amd64))).toBe(true);
      expect(journal.isDone('10.0.0.2', 'binaries', bundleIdentity(both))).toBe(false);
    } finally {
      journal.close();
    }
  });
});
