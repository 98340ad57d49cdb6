import { afterAll, beforeAll, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { appendFile, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { sha256 } from '../../oci/digest.js';
import type { BundleDescriptor } from '../../oci/bundle-format.js';
import { binariesScript, droppedFiles, keptWarnings, removeIfOurs } from '../../installer/node-setup.js';
import { ourFiles, resetScript } from '../../installer/reset.js';
import { loadClusterState, saveClusterState } from '../../installer/cluster-state.js';
import type { ClusterSpec } from '../../installer/cluster-spec.js';

const run = promisify(execFile);

// What an upgrade removes from a node: the files the bundle it replaces installed and the new one
// does not, and only while they still hold the bytes acinstall put there.
let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'acpack-dropped-'));
});
afterAll(() => rm(dir, { recursive: true, force: true }));

const content = (name: string, arch: string) => `${name} ${arch}\n`;
const bundle = (version: string, binaries: { name: string; install?: string; extract?: string }[]): BundleDescriptor =>
  ({
    name: 'b',
    version,
    source: sha256(version),
    platforms: ['linux/amd64', 'linux/arm64'],
    images: [],
    charts: [],
    binaries: binaries.flatMap((b) => ['amd64', 'arm64'].map((arch) => ({ ...b, version, arch, digest: sha256(content(b.name, arch)), ref: `acpack.local/binaries/${b.name}:${version}`, mode: '0755' }))),
  }) as unknown as BundleDescriptor;

it('drops the paths only the old bundle installed, for the node\'s arch', () => {
  const old = bundle('v1', [{ name: 'tool', install: '/usr/bin/tool' }, { name: 'kubelet', install: '/usr/bin/kubelet' }, { name: 'pkg', extract: '/opt/pkg' }]);
  // kubelet moved to another binary's name: its path is still installed, so it stays.
  const next = bundle('v2', [{ name: 'kubelet-new', install: '/usr/bin/kubelet' }]);
  expect([...droppedFiles(old, next, 'arm64')]).toEqual([['/usr/bin/tool', new Set([sha256(content('tool', 'arm64')).slice(7)])]]);
  expect([...droppedFiles(undefined, next, 'amd64')]).toEqual([]); // a node with no known bundle before
  // The removal comes after every install: a failed download leaves the node as it was.
  const script = binariesScript(next, 'amd64', 'https://m:5000', undefined, old);
  expect(script.indexOf("rm -f '/usr/bin/tool'")).toBeGreaterThan(script.lastIndexOf('install -D'));
  expect(script).not.toContain("rm -f '/usr/bin/kubelet'");
});

it('removes a file still holding our bytes, and keeps (and names) one changed since', async () => {
  const node = await mkdtemp(join(dir, 'node-'));
  const ours = join(node, 'ours');
  const changed = join(node, 'changed');
  for (const f of [ours, changed]) await writeFile(f, content('tool', 'amd64'));
  await appendFile(changed, 'x');
  const shas = new Set([sha256(content('tool', 'amd64')).slice(7)]);
  const files = new Map([[ours, shas], [changed, shas], [join(node, 'gone already'), shas]]);
  const { stdout } = await run('sh', ['-ec', removeIfOurs(files).join('\n')]);
  expect(await readdir(node)).toEqual(['changed']);
  expect(keptWarnings('10.0.0.2', stdout)).toEqual([`warning: 10.0.0.2: kept ${changed}: it changed since acinstall installed it (another sha256), so it is not acinstall's to remove`]);
});

it('reset removes the bundle\'s files of any arch with the same lines', () => {
  const d = bundle('v1', [{ name: 'tool', install: '/usr/bin/tool' }]);
  const line = removeIfOurs(new Map([['/usr/bin/tool', new Set(['amd64', 'arm64'].map((a) => sha256(content('tool', a)).slice(7)))]]))[0];
  expect(resetScript(d).split('\n')).toContain(line);
});

it('reset after an upgrade cut off halfway removes the old bundle\'s binaries and a kubelet staged beside the old one', async () => {
  const node = await mkdtemp(join(dir, 'cut-'));
  const at = (name: string) => join(node, name);
  const release = (version: string) => {
    const d = bundle(version, [{ name: 'kubeadm', install: at('kubeadm') }, { name: 'kubelet', install: at('kubelet') }]);
    for (const b of d.binaries) b.digest = sha256(`${b.name} ${b.arch} ${version}\n`);
    return d;
  };
  const [v1, v2] = [release('v1'), release('v2')];
  // The binaries step ran (kubeadm is v2's, v2's kubelet waits beside v1's); the upgrade never came.
  await writeFile(at('kubeadm'), 'kubeadm amd64 v2\n');
  await writeFile(at('kubelet'), 'kubelet amd64 v1\n');
  await writeFile(at('kubelet.acpack-new'), 'kubelet amd64 v2\n');
  await writeFile(at('notes'), 'an admin\'s\n');
  const { stdout } = await run('sh', ['-ec', removeIfOurs(ourFiles(v2, v1)).join('\n')]);
  expect(await readdir(node)).toEqual(['notes']);
  expect(keptWarnings('10.0.0.2', stdout)).toEqual([]);
  // Without the bundle it replaced, v1's kubelet would look like someone else's file.
  await writeFile(at('kubelet'), 'kubelet amd64 v1\n');
  expect(keptWarnings('10.0.0.2', (await run('sh', ['-ec', removeIfOurs(ourFiles(v2, undefined)).join('\n')])).stdout)).toHaveLength(1);
});

it('the cluster record keeps the bundle it replaced, through saves of the same bundle', async () => {
  const store = await mkdtemp(join(dir, 'store-'));
  const spec = { hosts: [{ ip: '10.0.0.1', roles: ['master'], password: 'secret' }] } as unknown as ClusterSpec;
  const [v1, v2] = [bundle('v1', []), bundle('v2', [])];
  await saveClusterState(store, 'b1', v1, spec);
  expect((await loadClusterState(store)).previous).toBeUndefined();
  await saveClusterState(store, 'b2', v2, spec);
  await saveClusterState(store, 'b2', v2, spec); // a join, a delete: the same bundle
  expect((await loadClusterState(store)).previous?.version).toBe('v1');
  expect(await readFile(join(store, 'cluster.json'), 'utf8')).not.toContain('secret');
});
