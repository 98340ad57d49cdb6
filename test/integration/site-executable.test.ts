import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import type { Arch } from '../../arch/platform.js';
import { freePort } from '../../demo/source-registry.js';
import { stopChild } from '../../demo/processes.js';
import { pushImage } from '../../demo/samples.js';
import { sha256 } from '../../oci/digest.js';
import { siteAddon, siteExecutable } from '../../runtime/site-runtime.js';
import { buildAddon } from '../../scripts/build-site.js';
import { ROOT, tempDir, withRegistry } from '../helpers/env.js';
import { buildFixture, bundleSpec, imageRef, type Fixture } from '../helpers/fixtures.js';

/**
 * acinstall's single executables as they ship (test/global-site.ts keeps dist/site built): what they
 * need from the system's libraries, and the arm64 one doing a site's work under qemu-user. binfmt_misc
 * is not set up in the test container, so qemu is called by name, over Debian's arm64 cross libraries
 * (scripts/setup.sh installs both).
 */

const run = promisify(execFile);
const QEMU = 'qemu-aarch64-static';
const ARM64_ROOT = '/usr/aarch64-linux-gnu';
const ARM64_LOADER = join(ARM64_ROOT, 'lib', 'ld-linux-aarch64.so.1');
const VERSION = (JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
/** qemu emulates every instruction of V8 compiling a 5 MB bundle: minutes, not seconds, on a loaded box. */
const QEMU_MS = 600_000;

/**
 * The oldest systems acinstall runs on, RHEL 8 and Debian 10: glibc 2.28, and gcc 8's libstdc++
 * (GLIBCXX_3.4.25, CXXABI_1.3.11). No symbol version beyond these may be needed.
 */
const BOUNDS = { GLIBC: '2.28', GLIBCXX: '3.4.25', CXXABI: '1.3.11' } as const;
/** Libraries every glibc system has (libstdc++ and libgcc_s included): nothing else may be NEEDED. */
const SYSTEM_LIBS = ['libc.so.6', 'libm.so.6', 'libdl.so.2', 'libpthread.so.0', 'libstdc++.so.6', 'libgcc_s.so.1'];
const LOADER: Record<Arch, string> = { amd64: '/lib64/ld-linux-x86-64.so.2', arm64: '/lib/ld-linux-aarch64.so.1' };

/** The executable for `arch` and the arguments, as this machine runs it (arm64 through qemu-user). */
function command(arch: Arch, args: string[]): [string, string[]] {
  const exe = siteExecutable(arch);
  return arch === 'arm64' ? [QEMU, ['-L', ARM64_ROOT, exe, ...args]] : [exe, args];
}

/** Fails with what to install when qemu-user or the arm64 libraries are missing; nothing is skipped. */
async function requireQemu(): Promise<void> {
  const setup = 'run scripts/setup.sh (qemu-user-static libc6-arm64-cross libstdc++6-arm64-cross libgcc-s1-arm64-cross)';
  await run(QEMU, ['--version']).catch((e: Error) => {
    throw new Error(`${QEMU} does not run (${e.message.split('\n')[0]}): ${setup}`);
  });
  for (const lib of [ARM64_LOADER, join(ARM64_ROOT, 'lib', 'libstdc++.so.6'), join(ARM64_ROOT, 'lib', 'libgcc_s.so.1')]) {
    if (!existsSync(lib)) throw new Error(`${lib} is missing: ${setup}`);
  }
}

function compareVersions(a: string, b: string): number {
  const x = a.split('.').map(Number);
  const y = b.split('.').map(Number);
  for (let i = 0; i < Math.max(x.length, y.length); i++) if ((x[i] ?? 0) !== (y[i] ?? 0)) return (x[i] ?? 0) - (y[i] ?? 0);
  return 0;
}

/** The highest version of each family (GLIBC_, GLIBCXX_, CXXABI_, GCC_) that objdump -T names. */
async function neededVersions(exe: string): Promise<Record<string, string>> {
  const { stdout } = await run('objdump', ['-T', exe], { maxBuffer: 256 << 20 });
  const top: Record<string, string> = {};
  for (const [, family, version] of stdout.matchAll(/\b(GLIBC|GLIBCXX|CXXABI|GCC)_([0-9][0-9.]*[0-9]|[0-9])\b/g)) {
    if (!top[family] || compareVersions(version, top[family]) > 0) top[family] = version;
  }
  return top;
}

/** Runs to the end within `timeoutMs`; the wall time is measured around the whole process. */
async function timed(bin: string, args: string[], timeoutMs: number): Promise<{ stdout: string; ms: number }> {
  const start = performance.now();
  const { stdout } = await run(bin, args, { timeout: timeoutMs, killSignal: 'SIGKILL' });
  return { stdout, ms: performance.now() - start };
}

describe('what the executables need from the system', () => {
  for (const arch of ['amd64', 'arm64'] as const) {
    it(`${arch}: no GLIBC_ newer than ${BOUNDS.GLIBC}, GLIBCXX_ than ${BOUNDS.GLIBCXX}, CXXABI_ than ${BOUNDS.CXXABI}`, async () => {
      const exe = siteExecutable(arch);
      const top = await neededVersions(exe);
      console.log(`${arch} needs at most: ${Object.entries(top).map(([f, v]) => `${f}_${v}`).join(' ')}`);
      for (const [family, bound] of Object.entries(BOUNDS)) {
        // A family objdump did not report at all would be a misread binary, not a pass.
        expect(top[family], `${family}_ in objdump -T ${exe}`).toBeDefined();
        expect(compareVersions(top[family], bound), `${family}_${top[family]} > ${family}_${bound}`).toBeLessThanOrEqual(0);
      }
    });

    it(`${arch}: needs only the libraries every glibc system has, through the standard loader`, async () => {
      const { stdout } = await run('readelf', ['-d', '-l', '-W', siteExecutable(arch)], { maxBuffer: 16 << 20 });
      const needed = [...stdout.matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1]);
      expect(needed).toContain('libc.so.6');
      expect(needed.filter((l) => !SYSTEM_LIBS.includes(l) && `/lib/${l}` !== LOADER[arch] && `/lib64/${l}` !== LOADER[arch])).toEqual([]);
      expect(stdout).toContain(`[Requesting program interpreter: ${LOADER[arch]}]`);
    });
  }
});

describe('the mmap addon each executable carries', () => {
  for (const arch of ['amd64', 'arm64'] as const) {
    it(`${arch}: needs no GLIBC_ newer than ${BOUNDS.GLIBC}, and only libc`, async () => {
      const addon = siteAddon(arch);
      const top = await neededVersions(addon);
      console.log(`map_file-linux-${arch}.node needs at most: ${Object.entries(top).map(([f, v]) => `${f}_${v}`).join(' ')}`);
      expect(Object.keys(top)).toEqual(['GLIBC']);
      expect(compareVersions(top.GLIBC, BOUNDS.GLIBC), `GLIBC_${top.GLIBC} > GLIBC_${BOUNDS.GLIBC}`).toBeLessThanOrEqual(0);
      const { stdout } = await run('readelf', ['-d', '-h', '-W', addon]);
      expect([...stdout.matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1])).toEqual(['libc.so.6']);
      expect(stdout).toMatch(new RegExp(`Machine:\\s+${arch === 'amd64' ? 'Advanced Micro Devices X86-64' : 'AArch64'}`));
    });

    it(`${arch}: is in the executable, and the same bytes when built again`, async () => {
      const addon = await readFile(siteAddon(arch));
      const exe = await readFile(siteExecutable(arch));
      expect(exe.includes(addon)).toBe(true);
      // Nothing of where it was built: the same sources built in another checkout give the same bytes.
      expect(exe.includes(dirname(siteExecutable(arch)))).toBe(false);
      const again = join(work.dir, `again-${arch}.node`);
      await buildAddon(arch, again);
      expect((await readFile(again)).equals(addon)).toBe(true);
    });
  }

  let work: Awaited<ReturnType<typeof tempDir>>;
  beforeAll(async () => {
    work = await tempDir('acpack-addon-');
  });
  afterAll(() => work?.cleanup());
});

describe('--version', () => {
  it('amd64, natively, prints package.json\'s version', async () => {
    const [bin, args] = command('amd64', ['--version']);
    const { stdout, ms } = await timed(bin, args, 60_000);
    console.log(`acinstall-linux-amd64 --version: ${Math.round(ms)} ms`);
    expect(stdout.trim()).toBe(VERSION);
  });

  it('arm64, under qemu-user, prints package.json\'s version', { timeout: QEMU_MS + 30_000 }, async () => {
    await requireQemu();
    const [bin, args] = command('arm64', ['--version']);
    const { stdout, ms } = await timed(bin, args, QEMU_MS);
    console.log(`acinstall-linux-arm64 --version under ${QEMU}: ${Math.round(ms)} ms`);
    expect(stdout.trim()).toBe(VERSION);
  });
});

describe('arm64 under qemu-user: import, serve, and skopeo pulls by the original name', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let fx: Fixture;
  let upstream: string; // where the image was bundled from: stopped before anything is pulled
  let bundlePath: string;
  let store: string;
  let serve: ChildProcess | undefined;
  let accessLog = '';
  let serveStderr = '';

  beforeAll(async () => {
    await requireQemu();
    work = await tempDir('acpack-arm64-');
    const source = await withRegistry();
    try {
      upstream = source.registry.host;
      fx = await buildFixture('arm64-site');
      await pushImage(upstream, fx.web);
      bundlePath = await bundleSpec(work.dir, { images: [imageRef(upstream, fx.web)] }, join(work.dir, 'b.tar.zst'), 'arm64');
    } finally {
      await source.cleanup(); // the site has no upstream: whatever skopeo gets comes from acinstall
    }
    store = join(work.dir, 'store');
  }, 120_000);

  afterAll(async () => {
    if (serve) await stopChild(serve, 10_000); // by its PID: qemu-user is the process, the guest is in it
    await work?.cleanup();
  }, 60_000);

  it('imports the bundle', { timeout: QEMU_MS + 30_000 }, async () => {
    const [bin, args] = command('arm64', ['import', bundlePath, '--store', store]);
    const { stdout, ms } = await timed(bin, args, QEMU_MS);
    console.log(`acinstall-linux-arm64 import under ${QEMU}: ${Math.round(ms)} ms`);
    expect(stdout).toMatch(/^imported test v1: 1 reference, \d+ blobs \(\d+ new, /m);
  });

  it('serves it, and skopeo inspects and copies the image by its original name through a mirror', { timeout: QEMU_MS + 120_000 }, async () => {
    expect(existsSync(join(store, 'blobs', 'sha256')), 'the import before this made the store').toBe(true);
    const port = await freePort();
    const site = `127.0.0.1:${port}`;
    const [bin, args] = command('arm64', ['serve', '--store', store, '--listen', site, '--workers', '1']);
    const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    serve = child;
    child.stdout!.on('data', (c: Buffer) => (accessLog += c.toString()));
    child.stderr!.on('data', (c: Buffer) => (serveStderr = (serveStderr + c.toString()).slice(-4000)));
    const deadline = performance.now() + QEMU_MS;
    const start = performance.now();
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`acinstall serve exited (${child.exitCode ?? child.signalCode}): ${serveStderr.trim()}`);
      if ((await fetch(`http://${site}/v2/`, { signal: AbortSignal.timeout(10_000) }).then((r) => r.status, () => 0)) === 200) break;
      if (performance.now() > deadline) throw new Error(`acinstall serve did not answer on ${site} within ${QEMU_MS / 1000} s: ${serveStderr.trim()}`);
      await sleep(250);
    }
    console.log(`acinstall-linux-arm64 serve under ${QEMU}: answering after ${Math.round(performance.now() - start)} ms`);
    expect(serveStderr).toContain(`serving ${store} on http://${site}`);
    // It maps blobs with its own arm64 addon, written into the store, rather than reading files.
    expect(serveStderr).not.toContain('not mapped');
    expect(await readdir(join(store, '.runtime'))).toEqual([`map_file-${sha256(await readFile(siteAddon('arm64'))).slice(7)}.node`]);

    // The image is asked for by the name it was bundled under; registries.conf sends that host to the
    // site registry, host-prefixed (a port is written host_port). The upstream itself is stopped.
    const conf = join(work.dir, 'registries.conf');
    await writeFile(
      conf,
      `[[registry]]\nprefix = "${upstream}"\nlocation = "${upstream}"\ninsecure = true\n\n[[registry.mirror]]\nlocation = "${site}/${upstream.replace(':', '_')}"\ninsecure = true\n`,
    );
    // skopeo 1.9 (Debian 12) ignores CONTAINERS_REGISTRIES_CONF; its (hidden) --registries-conf is read.
    const original = `docker://${imageRef(upstream, fx.web)}`;
    const skopeo = { timeout: 300_000, killSignal: 'SIGKILL' as const, maxBuffer: 16 << 20 };

    const raw = await run('skopeo', ['--registries-conf', conf, 'inspect', '--raw', original], skopeo);
    expect(sha256(raw.stdout)).toBe(fx.web.top.digest);

    const arm64 = (JSON.parse(fx.web.top.data.toString()) as { manifests: { digest: string; platform: { architecture: string } }[] }).manifests.find(
      (m) => m.platform.architecture === 'arm64',
    )!;
    const dir = join(work.dir, 'copy');
    await mkdir(dir);
    await run('skopeo', ['--registries-conf', conf, 'copy', '--override-arch', 'arm64', '--preserve-digests', original, `oci:${dir}:web`], skopeo);
    const index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as { manifests: { digest: string }[] };
    expect(index.manifests.map((m) => m.digest)).toEqual([arm64.digest]);
    expect(existsSync(join(dir, 'blobs', 'sha256', fx.base.descriptor.digest.slice(7)))).toBe(true);

    // It came through the mirror, under the host-prefixed name.
    const requests = accessLog
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { path: string; status: number });
    const prefixed = `/v2/${upstream.replace(':', '_')}/${fx.web.repository}/manifests/`;
    expect(requests.some((r) => r.path === `${prefixed}${fx.web.tag}` && r.status === 200)).toBe(true);
    expect(requests.some((r) => r.path === `${prefixed}${arm64.digest}` && r.status === 200)).toBe(true);
  });
});
