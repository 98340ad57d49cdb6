import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { writeKubeadmStandin } from '../hosts/standins/kubeadm-standin.js';

const run = promisify(execFile);

/**
 * The kubeadm stand-in's `upgrade apply`, held to what the real one does before it changes anything
 * (a version to upgrade to; kubeadm's version policy, policy.go's EnforceVersionPolicies: a patch
 * past its own version only with --force, never a minor past its own or two minors away; the same
 * version again is applied, which is how a cut upgrade is recovered) and to what it changes (the
 * control plane's static pods move to the new version's images).
 */
let dir: string;
let standin: string;
const root = () => join(dir, 'root');
const manifest = (name: string) => join(root(), 'etc/kubernetes/manifests', `${name}.yaml`);
const apply = (...args: string[]) => run(standin, ['upgrade', 'apply', ...args], { env: { ...process.env, ACPACK_STANDIN_ROOT: root() } });

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'acpack-standin-upgrade-'));
  standin = (await writeKubeadmStandin(join(dir, 'bin'), 'v1.22.16')).file;
  await mkdir(join(root(), 'etc/kubernetes/manifests'), { recursive: true });
  await writeFile(join(root(), 'etc/kubernetes/admin.conf'), 'server: https://apiserver.cluster.local:6443\n');
  for (const name of ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler']) {
    await writeFile(manifest(name), `apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - name: ${name}\n    image: 10.0.0.1:5000/ecp_builder/${name}:v1.22.15\n`);
  }
});
afterAll(() => rm(dir, { recursive: true, force: true }));

describe('the kubeadm stand-in upgrades as kubeadm v1.22.16 does', () => {
  it('refuses what kubeadm\'s version policy refuses, changing nothing: no version, a patch past its own (unless --force), a minor past its own or two minors away', async () => {
    await expect(apply('-y')).rejects.toMatchObject({ stderr: expect.stringContaining('Required arguments: [version]') });
    await expect(apply('v1.22.17', '-y')).rejects.toMatchObject({ stderr: expect.stringContaining('is higher than the kubeadm version "v1.22.16"') });
    await expect(apply('v1.23.0', '-y', '--force')).rejects.toMatchObject({ stderr: expect.stringContaining('at least one minor release higher than the kubeadm minor release (23 > 22)') });
    await expect(apply('v1.20.0', '-y', '--force')).rejects.toMatchObject({ stderr: expect.stringContaining('kubeadm can downgrade only 1 minor version at a time') });
    expect(await readFile(manifest('kube-apiserver'), 'utf8')).toContain('/kube-apiserver:v1.22.15\n');
  });

  it('moves every control-plane static pod to the new version, and applies it again (what recovers a cut upgrade)', async () => {
    const r = await apply('v1.22.16', '-y');
    expect(r.stdout).toContain('SUCCESS! Your cluster was upgraded to "v1.22.16"');
    for (const name of ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler']) {
      expect(await readFile(manifest(name), 'utf8')).toContain(`image: 10.0.0.1:5000/ecp_builder/${name}:v1.22.16\n`);
    }
    await expect(apply('v1.22.16', '-y')).resolves.toMatchObject({ stdout: expect.stringContaining('SUCCESS') });
  });
});
