import { execFile } from 'node:child_process';
import { chmod, copyFile, mkdir, mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { nodeArch } from '../arch/platform.js';
import type { BundleDescriptor, BundledChart } from '../oci/bundle-format.js';
import { AcpackError } from '../oci/errors.js';
import { parseReference } from '../oci/reference.js';
import { ContentStore } from '../oci/store.js';

// The images the charts run, for the nodes to pull ahead (prepull.ts) while the cluster is laid
// down: which images a chart runs is known only once it is rendered, so `from` renders each chart it
// will install with the bundle's own helm, here on the first master, from the imported store.

const run = promisify(execFile);

/** `image:` values in rendered YAML (a list item's too), quotes dropped. */
const IMAGE_LINE = /^\s*(?:-\s+)?image:\s*["']?([^"'\s#]+)["']?\s*(?:#.*)?$/gm;

/** Every image reference the rendered YAML names, once each. */
export function imagesInRendered(yaml: string): string[] {
  return [...new Set([...yaml.matchAll(IMAGE_LINE)].map((m) => m[1]))];
}

/**
 * The bundle's images that `rendered` references name: matched by repository path and tag (or
 * digest), whatever the host, since charts name images under the site's name (ACK Distro's
 * `{{ .Values.global.RegistryURL }}/ecp_builder/...`) and the bundle under their upstream one. The
 * bundle's own references come back: those are what containerd's hosts.toml knows how to pull.
 */
export function bundleImagesNamed(d: BundleDescriptor, rendered: string[]): string[] {
  const wanted = new Set<string>();
  for (const ref of rendered) {
    try {
      const r = parseReference(ref);
      wanted.add(r.digest ? `${r.repository}@${r.digest}` : `${r.repository}:${r.tag ?? 'latest'}`);
    } catch {
      // a template's placeholder, not a reference
    }
  }
  return d.images
    .filter((i) => {
      const r = parseReference(i.ref);
      const names = [`${r.repository}:${r.tag ?? 'latest'}`, `${r.repository}@${i.digest}`, ...i.platforms.map((p) => `${r.repository}@${p.digest}`)];
      return names.some((n) => wanted.has(n));
    })
    .map((i) => i.ref);
}

/**
 * Renders `charts` with the bundle's helm for this machine's arch (`helm template`, as `from` will
 * install them: default values, namespace kube-system) and returns the bundle's images they run.
 */
export async function chartImages(storeRoot: string, d: BundleDescriptor, charts: BundledChart[]): Promise<string[]> {
  if (charts.length === 0) return [];
  const arch = nodeArch();
  const helm = d.binaries.find((b) => b.name === 'helm' && b.arch === arch);
  if (!helm) throw new AcpackError('NO_HELM', `the bundle has no helm for ${arch}, this machine's arch, to render its charts with`);
  const store = await ContentStore.open(storeRoot);
  const dir = await mkdtemp(join(tmpdir(), 'acpack-charts-'));
  try {
    const bin = await helmFile(store.path(helm.digest), helm.extract !== undefined, dir);
    const rendered: string[] = [];
    for (const c of charts) {
      const { stdout } = await run(bin, ['template', c.name, store.path(c.chart), '--namespace', 'kube-system'], { maxBuffer: 64 << 20, timeout: 60_000, env: { ...process.env, HELM_CACHE_HOME: dir, HELM_CONFIG_HOME: dir, HELM_DATA_HOME: dir } }).catch((err: Error & { stderr?: string }) => {
        throw new AcpackError('CHART_RENDER', `chart ${c.name} ${c.version}: helm template failed: ${(err.stderr || err.message).trim().split('\n').slice(-2).join(' ')}`);
      });
      rendered.push(...imagesInRendered(stdout));
    }
    return bundleImagesNamed(d, rendered);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** The helm executable: the blob itself, or the `helm` file in its tarball (ACK Distro's holds linux-<arch>/helm). */
async function helmFile(blob: string, tarball: boolean, dir: string): Promise<string> {
  const bin = join(dir, 'helm');
  if (!tarball) {
    await copyFile(blob, bin);
    await chmod(bin, 0o755);
    return bin;
  }
  const unpacked = join(dir, 'unpacked');
  await mkdir(unpacked);
  await run('tar', ['-xzf', blob, '-C', unpacked]);
  const found = await findFile(unpacked, 'helm');
  if (!found) throw new AcpackError('NO_HELM', `the bundle's helm tarball holds no file named helm`);
  return found;
}

async function findFile(dir: string, name: string): Promise<string | undefined> {
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) {
      const found = await findFile(p, name);
      if (found) return found;
    } else if (e.name === name && (await stat(p)).isFile()) return p;
  }
  return undefined;
}
