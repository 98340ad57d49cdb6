import { execFile } from 'node:child_process';
import { chmod, copyFile, mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Arch } from '../arch/platform.js';
import { parseReference } from '../oci/reference.js';
import type { ContentStore } from '../oci/store.js';
import type { ResolvedBinary } from './binaries.js';
import type { KubeadmRun } from './lint.js';

const run = promisify(execFile);

// ELF e_machine of this machine's arch (x86-64: EM_X86_64, arm64: EM_AARCH64).
const ELF_MACHINE: Partial<Record<string, number>> = { x64: 62, arm64: 183 };

/**
 * Why a file cannot start here, or undefined when it can: an ELF executable for this machine, or a
 * script (#!). Asked before running it, because execvp hands any other file to /bin/sh, which
 * would run a foreign binary's bytes as shell commands and call that kubeadm's answer.
 */
async function cannotStart(file: string): Promise<string | undefined> {
  const head = Buffer.alloc(20);
  const fh = await open(file, 'r');
  try {
    await fh.read(head, 0, 20, 0);
  } finally {
    await fh.close();
  }
  if (head.subarray(0, 2).toString('latin1') === '#!') return undefined;
  if (head.readUInt32BE(0) !== 0x7f454c46) return 'it is neither an ELF executable nor a script';
  const machine = head[5] === 2 ? head.readUInt16BE(18) : head.readUInt16LE(18);
  if (process.platform !== 'linux' || machine !== ELF_MACHINE[process.arch]) return `it is an ELF executable for another machine (e_machine ${machine})`;
  return undefined;
}

/**
 * Asks the bundle's own kubeadm for `arch` (this machine's) which images a configuration needs —
 * `kubeadm config images list --config`, what acinstall asks it on site — from a copy of the file
 * the bundle carries (the store's blob is never made executable). It reads only its arguments and
 * the configuration: nothing is pulled or written. A kubeadm that cannot start here (another
 * system's binary, a noexec temp dir) is `cannotRun`, and the caller falls back to kubeadm's rules.
 */
export function bundledKubeadm(store: ContentStore, binaries: ResolvedBinary[], arch: Arch): KubeadmRun {
  return async (config) => {
    const file = binaries.find((b) => b.spec.name === 'kubeadm')?.arches.find((a) => a.arch === arch && a.install)?.file;
    if (!file) return { cannotRun: `the bundle carries no kubeadm file for ${arch}` };
    if (!(await store.has(file.digest))) return { cannotRun: "it was not downloaded: the delta's base holds it" };
    const dir = await mkdtemp(join(tmpdir(), 'acpack-kubeadm-'));
    try {
      const bin = join(dir, 'kubeadm');
      await copyFile(store.path(file.digest), bin);
      const why = await cannotStart(bin);
      if (why) return { cannotRun: why };
      await chmod(bin, 0o755);
      await writeFile(join(dir, 'kubeadm.yaml'), config);
      let stdout: string;
      try {
        ({ stdout } = await run(bin, ['config', 'images', 'list', '--config', join(dir, 'kubeadm.yaml')], { timeout: 60_000, maxBuffer: 1 << 20, cwd: dir }));
      } catch (err) {
        const e = err as NodeJS.ErrnoException & { stderr?: string; killed?: boolean; code?: string | number };
        // A string code is the system's refusal to start it (ENOEXEC, EACCES…); a number is kubeadm's own exit.
        if (typeof e.code === 'string') return { cannotRun: e.code };
        if (e.killed) return { cannotRun: 'it did not answer within 60 s' };
        return { refused: `the bundled kubeadm said: ${(e.stderr ?? '').trim().split('\n').slice(-3).join(' / ') || `exit ${e.code}`}` };
      }
      const listed = stdout.split('\n').map((l) => l.trim()).filter(Boolean);
      const garbled = listed.find((l) => {
        try {
          parseReference(l);
          return false;
        } catch {
          return true;
        }
      });
      if (garbled !== undefined || listed.length === 0) return { refused: `the bundled kubeadm's config images list printed what is not an image list (${JSON.stringify(garbled ?? '')})` };
      return { listed, by: 'the bundled kubeadm (config images list) on this machine' };
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  };
}
