import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import bcrypt from 'bcryptjs';
import { freePort } from '../../demo/source-registry.js';
import { runAcinstall, runCli, tempDir } from '../helpers/env.js';
import { bundleSpec } from '../helpers/fixtures.js';
import { kubeadmBinary } from '../hosts/standins/kubeadm-standin.js';
import { readDescriptor } from '../../oci/bundle-reader.js';
import { saveClusterState } from '../../installer/cluster-state.js';
import { specFromFlags } from '../../installer/cluster-spec.js';
import { writeBundle } from '../../oci/bundle-writer.js';
import { ContentStore } from '../../oci/store.js';
import type { BundleDescriptor } from '../../oci/bundle-format.js';
import { ANNOTATION_REF_NAME, MT } from '../../oci/media-types.js';
import { nodeArch } from '../../arch/platform.js';
import { ownVersion } from '../../ui/program.js';

/**
 * The mistakes a new user makes on the command line end in one clear message and exit 1, before
 * anything is fetched, written or reached. Every address here is 127.0.0.1.
 */

let work: Awaited<ReturnType<typeof tempDir>>;
/** A listener on 127.0.0.1 that counts who comes and hangs up: an SSH port or a registry nobody should reach. */
let listener: Server;
let port: number;
let connections = 0;

beforeAll(async () => {
  work = await tempDir('acpack-cli-errors-');
  listener = createServer((s) => {
    connections++;
    s.destroy();
  });
  await new Promise<void>((r) => listener.listen(0, '127.0.0.1', r));
  port = (listener.address() as { port: number }).port;
});

afterAll(async () => {
  await new Promise((r) => listener?.close(r));
  await work?.cleanup();
});

/** A directory that exists, empty. */
async function emptyDir(name: string): Promise<string> {
  const dir = join(work.dir, name);
  await mkdir(dir, { recursive: true });
  return dir;
}

describe('acinstall --ignore-preflight', () => {
  const node = () => ['-m', '127.0.0.1', '--port', String(port), '-p', 'not-used'];
  const valid = /the checks it can skip are kernel, cpu, memory, disk, swap, ports, clock, hostname, br_netfilter, ip_forward, containerd$/m;

  it('rejects an unknown check before reaching any node, naming it and the valid ones', async () => {
    const store = await emptyDir('store-ignore');
    const before = connections;
    for (const args of [
      ['preflight', ...node(), '--store', store, '--ignore-preflight', 'disk,dsk'],
      ['from', join(work.dir, 'b.tar.zst'), ...node(), '--store', store, '--ignore-preflight', 'dsk'],
      ['join', '-n', '127.0.0.1', '--store', store, '--ignore-preflight', 'kernel', '--ignore-preflight', 'dsk'],
    ]) {
      const r = await runAcinstall(args);
      expect(r.code, args[0]).toBe(1);
      expect(r.stderr).toMatch(/^error: --ignore-preflight: there is no check "dsk"; /);
      expect(r.stderr).toMatch(valid);
      expect(r.stderr).not.toContain('unexpected error');
    }
    expect(connections).toBe(before);
    expect(await readdir(store)).toEqual([]);
  });

  it('refuses to skip what the install cannot go without: arch, os, ssh', async () => {
    for (const [check, why] of [['arch', /an arch the bundle carries/], ['os', /systemd units and curl/], ['ssh', /cannot log in to/]] as const) {
      const r = await runAcinstall(['preflight', ...node(), '--store', await emptyDir('store-unskippable'), '--ignore-preflight', check]);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(new RegExp(`--ignore-preflight: "${check}" cannot be skipped: `));
      expect(r.stderr).toMatch(why);
      expect(r.stderr).toMatch(valid);
    }
    const help = await runAcinstall(['preflight', '--help']);
    expect(help.stdout.replace(/\s+/g, ' ')).toContain('checks to skip, comma-separated, of: kernel, cpu, memory, disk, swap, ports, clock, hostname, br_netfilter, ip_forward, containerd');
  });

  it('with known names goes on to the nodes; a node out of reach is not offered as a check to skip', async () => {
    const before = connections;
    const r = await runAcinstall(['preflight', ...node(), '--store', join(work.dir, 'store-reach'), '--ignore-preflight', 'disk,kernel']);
    expect(connections).toBeGreaterThan(before);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error: preflight failed on 1 node:\n/);
    expect(r.stderr).toMatch(/127\.0\.0\.1\s+ssh\s+cannot reach 127\.0\.0\.1:\d+ over SSH/);
    expect(r.stderr).toMatch(/\nfix these\n$/);
    expect(r.stderr).not.toContain('--ignore-preflight');
  });
});

describe('acinstall status', () => {
  it('on a store that does not exist: says so, and creates nothing', async () => {
    const store = join(work.dir, 'no-such-store');
    const r = await runAcinstall(['status', '--store', store]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`error: no store at ${store} (it does not exist): acinstall keeps its state in the store on the first master; run status there, with the --store that from used\n`);
    expect(existsSync(store)).toBe(false);
  });

  it('on a store no install ran with: says how to install, and leaves it untouched', async () => {
    const store = await emptyDir('store-never-installed');
    const r = await runAcinstall(['status', '--store', store]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error: no install has run with the store .*: install with acinstall from <bundle> -m <masters> --store /);
    expect(await readdir(store)).toEqual([]);
  });
});

describe('acinstall serve --store', () => {
  it('on a path that does not exist: refuses, and creates nothing', async () => {
    const store = join(work.dir, 'no-such-served-store');
    const r = await runAcinstall(['serve', '--store', store, '--listen', `127.0.0.1:${await freePort()}`]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error: no store at .*no-such-served-store \(it does not exist\), so there is nothing to serve: import a bundle into it first \(acinstall import <bundle> --store .*\) or check --store/);
    expect(r.stderr).not.toContain('unexpected error');
    expect(existsSync(store)).toBe(false);
  });

  it('on a file: says it is not a directory', async () => {
    const file = join(work.dir, 'a-file');
    await writeFile(file, 'x');
    const r = await runAcinstall(['serve', '--store', file, '--listen', `127.0.0.1:${await freePort()}`, '--tls', 'auto']);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`error: --store ${file} is not a directory: it names the content store that acinstall import fills\n`);
  });

  it('with --htpasswd starts an empty registry there to push into', async () => {
    const store = join(work.dir, 'pushed-into');
    const htpasswd = join(work.dir, 'htpasswd');
    await writeFile(htpasswd, `u:${bcrypt.hashSync('pw', 4)}\n`);
    const listen = `127.0.0.1:${await freePort()}`;
    const serving = runAcinstall(['serve', '--store', store, '--listen', listen, '--htpasswd', htpasswd, '--workers', '1', '--quiet']);
    try {
      // Up to 30 s: node, tsx and a worker start slowly on a busy machine.
      let status = 0;
      for (let i = 0; i < 300 && status === 0; i++) {
        status = await fetch(`http://${listen}/v2/`).then((r) => r.status, () => 0);
        if (status === 0) await sleep(100);
      }
      expect(status).toBe(401); // up, and asking for the user that may push
      expect(existsSync(join(store, 'blobs'))).toBe(true);
    } finally {
      serving.kill('SIGTERM');
      await serving;
    }
  });
});

describe('acpack bundle -o', () => {
  it('an existing directory: refused before any download, nothing written', async () => {
    const out = await emptyDir('out-dir');
    const manifest = join(work.dir, 'm.yaml');
    // The image's registry is the counting listener: a fetch would show as a connection.
    await writeFile(manifest, `apiVersion: acpack/v1\nkind: Bundle\nmetadata: {name: t, version: v1}\nspec:\n  images: [127.0.0.1:${port}/x/y:1]\n`);
    const cache = join(work.dir, 'bundle-cache');
    const before = connections;
    const r = await runCli(['bundle', '-f', manifest, '--arch', 'amd64', '--cache', cache, '-o', out, '--insecure-registry', `127.0.0.1:${port}`]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`error: -o ${out} is a directory: name the bundle file to write, e.g. -o ${join(out, 'bundle.tar.zst')}; nothing was fetched or written\n`);
    expect(connections).toBe(before);
    expect(await readdir(out)).toEqual([]);
    expect(existsSync(cache)).toBe(false);
  });
});

describe('acinstall from with an older release of the bundle the cluster runs', () => {
  it('is refused before any node is reached, naming --allow-downgrade', async () => {
    const store = await emptyDir('store-downgrade');
    const dir = join(work.dir, 'downgrade');
    const kubeadm = await kubeadmBinary(join(dir, 'bin'), 'v1.22.15');
    // A bundle of release v1 (kubeadm only: enough to name its Kubernetes version), over a cluster
    // recorded as running release v2 of the same bundle.
    const bundle = await bundleSpec(dir, { binaries: [kubeadm] }, join(dir, 'v1.tar.zst'), 'amd64', { allowIncomplete: true });
    const d = await readDescriptor(bundle);
    const spec = specFromFlags({ masters: '127.0.0.1', password: 'not-used' });
    spec.hosts[0].port = port;
    await saveClusterState(store, bundle, { ...d, version: 'v2' }, spec);
    const args = ['from', bundle, '-m', '127.0.0.1', '--port', String(port), '-p', 'not-used', '--store', store];
    const before = connections;
    const refused = await runAcinstall(args);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('test v1 is older than test v2, which this cluster runs: add --allow-downgrade to install it anyway');
    expect(connections).toBe(before);
    expect((await readdir(store)).sort()).toEqual(['cluster.json']);
    // Not run with --allow-downgrade here: from would go on to start the site registry on every
    // address of this machine. That the flag lets it through is test/unit/upgrade.test.ts's.
  });
});

describe("acinstall from with a bundle that lacks acinstall's runtime for the first master's arch", () => {
  it('is refused before anything is imported or any node reached, naming the arch and the fix', async () => {
    // What an acpack before the runtime wrote: a bundle carrying kubeadm, without runtime in its bundle.json.
    const dir = await emptyDir('no-runtime');
    const d = (c: string) => `sha256:${c.repeat(64)}` as const;
    const descriptor: BundleDescriptor = {
      format: 1,
      name: 'old',
      version: 'v1',
      source: d('0'),
      platforms: ['linux/amd64', 'linux/arm64'],
      images: [],
      binaries: [{ name: 'kubeadm', version: 'v1.22.15', arch: nodeArch(), digest: d('a'), size: 1, manifest: d('b'), index: d('c'), ref: 'acpack.local/binaries/kubeadm:v1.22.15', mode: '0755' }],
      charts: [],
      // Its blobs are never reached: from reads bundle.json (and index.json) alone before it refuses.
      blobs: { count: 3, bytes: 1 },
    };
    const bundle = join(dir, 'old.tar.zst');
    const index = { schemaVersion: 2 as const, manifests: [{ mediaType: MT.ociIndex, digest: d('c'), size: 1, annotations: { [ANNOTATION_REF_NAME]: descriptor.binaries[0].ref } }] };
    await writeBundle(await ContentStore.open(join(dir, 'cache')), descriptor, index, [], bundle, { mtime: 0 });
    const store = join(work.dir, 'store-no-runtime');
    const before = connections;
    const r = await runAcinstall(['from', bundle, '-m', '127.0.0.1', '--port', String(port), '-p', 'not-used', '--store', store]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      `error: ${bundle} (old v1): the bundle carries no acinstall runtime for ${nodeArch()}: rebuild it with acpack ${ownVersion()}, which puts one in for each arch it bundles. This machine, the first master, is ${nodeArch()}: nothing was imported or touched\n`,
    );
    expect(connections).toBe(before);
    expect(existsSync(store)).toBe(false);
  });
});
