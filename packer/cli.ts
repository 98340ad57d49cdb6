import { Command } from 'commander';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { rmSync } from 'node:fs';
import { ARCHES, formatPlatform, parsePlatformList, type Platform } from '../arch/platform.js';
import { AcpackError, formatBytes, plural } from '../oci/errors.js';
import { textTable } from '../oci/text-table.js';
import { readHead } from '../oci/bundle-reader.js';
import { generateKey, judgeOrigin, loadTrustKeys, originOf, type Origin } from '../oci/bundle-signature.js';
import { verifyBundle } from '../oci/bundle-verify.js';
import { partialBundles } from '../oci/bundle-writer.js';
import type { BundleDescriptor } from '../oci/bundle-format.js';
import { loadManifest } from '../manifests/index.js';
import { bundle, formatSummary, lock } from './bundle.js';
import { contents, hostPlatform } from './pack.js';
import { carriesKubeadm, incompleteError, lintManifest, uncheckedCharts } from './lint.js';
import { createReporter, reporterMode } from '../ui/progress.js';
import { runProgram } from '../ui/program.js';
import { spdxDocument } from './sbom.js';
import { parseVolumeSize, VOLUME_PRESETS } from './volumes.js';

function defaultCache(): string {
  return join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'acpack');
}

function sourceDateEpoch(): number {
  const v = process.env.SOURCE_DATE_EPOCH;
  if (v === undefined || v === '') return 0;
  if (!/^\d+$/.test(v)) throw new AcpackError('BAD_ARGUMENT', `SOURCE_DATE_EPOCH must be a number of seconds, not "${v}"`);
  return Number(v);
}

interface PlatformFlags {
  arch?: string;
  platform?: string;
}

function platformsFrom(o: PlatformFlags): Platform[] | undefined {
  if (o.arch && o.platform) throw new AcpackError('BAD_ARGUMENT', 'give --arch or --platform, not both');
  const list = o.arch ?? o.platform;
  if (!list) return undefined;
  const platforms = parsePlatformList(list);
  for (const p of platforms) {
    if (!(ARCHES as readonly string[]).includes(p.architecture)) {
      throw new AcpackError('BAD_PLATFORM', `"${formatPlatform(p)}" is not an architecture acpack bundles; use ${ARCHES.join(', ')}`);
    }
  }
  return platforms;
}

const collect = (v: string, prev: string[]) => [...prev, ...v.split(',').filter(Boolean)];

export function buildProgram(): Command {
  const program = new Command('acpack')
    .description('Pack a Kubernetes distribution (images, per-arch binaries, Helm charts) into one deterministic, deduplicated bundle.tar.zst for an air-gapped site.')
    .option('--debug', 'print stack traces on errors')
    .showHelpAfterError();

  const withResolveOptions = (cmd: Command) =>
    cmd
      .requiredOption('-f, --file <manifest>', 'the bundle manifest (kind: Bundle)')
      .option('--arch <list>', 'architectures to bundle, e.g. amd64 or amd64,arm64 (default: the manifest\'s spec.platforms, else this machine\'s)')
      .option('--platform <list>', 'the same as OCI platforms, e.g. linux/arm64')
      .option('--cache <dir>', 'the content store that keeps fetched blobs between runs', defaultCache())
      .option('--insecure-registry <host>', 'reach this registry over plain HTTP or with an unverified certificate (repeatable)', collect, [])
      .option('--json', 'print progress and results as JSON lines on stdout');

  withResolveOptions(program.command('bundle'))
    .description('Resolve every image, binary and chart of a manifest and write bundle format v2')
    .option('-o, --output <file>', 'where to write the bundle', 'bundle.tar.zst')
    .option('--locked', 'use only what the lock file (<manifest>.lock) pins, and fail if anything upstream moved')
    .option('--allow-incomplete', 'write a bundle that carries kubeadm but cannot lay a cluster down (the lint\'s refusals become loud warnings)')
    .option('--volume-size <size>', `write NAME.001.tar.zst, NAME.002.tar.zst, … of at most SIZE each, every one a bundle that verifies alone: bytes, K, M, G (decimal: 4.7G = 4.7·10⁹) or ${Object.keys(VOLUME_PRESETS).join(', ')}`)
    .option('--base <file>', 'write a delta: leave out every blob the site holds, by its inventory (acinstall inventory -o site.json) or a bundle it imported')
    .option('--sign <key>', 'sign bundle.json with this ed25519 private key (acpack keygen -o NAME writes one); sites that trust NAME.pub refuse anything it does not cover')
    .addHelpText(
      'after',
      `
Fetched blobs are kept in the cache: an interrupted run resumes, and a second bundle only fetches what changed.
The bundle is byte-identical for the same manifest and sources (entry times from SOURCE_DATE_EPOCH, default 0).
Beside it, acinstall-linux-<arch> for each bundled arch: acinstall's executable, to go on the medium with it.
A bundle that carries kubeadm carries that executable too, gzipped, as acinstall's runtime for the nodes.
A bundle that carries kubeadm must be able to lay a cluster down: kubeadm and kubelet for every arch,
helm for the charts, the default CNI's chart (hybridnet), every image kubeadm names (asked of the
bundled kubeadm on this machine's arch, by kubeadm's rules for the others); else nothing is written
(see docs/manifest.md). Without lvscare, it warns that clusters with several masters will be refused.

Example:
  acpack bundle -f manifests/ackdistro-v1.22.15.yaml --arch amd64,arm64 -o ackdistro.tar.zst`,
    )
    .action(async (o) => {
      const reporter = createReporter(reporterMode(!!o.json));
      onInterrupt(() => {
        for (const f of partialBundles) rmSync(f, { force: true });
        return `interrupted: nothing was written at ${o.output}; what was downloaded and verified is kept in ${o.cache} and the next run resumes from it`;
      });
      const summary = await bundle({
        manifestFile: o.file,
        platforms: platformsFrom(o),
        cacheDir: o.cache,
        insecure: o.insecureRegistry,
        locked: !!o.locked,
        reporter,
        sourceDateEpoch: sourceDateEpoch(),
        out: o.output,
        allowIncomplete: !!o.allowIncomplete,
        executables: true,
        sign: o.sign,
        ...(o.volumeSize ? { volumeSize: parseVolumeSize(o.volumeSize) } : {}),
        ...(o.base ? { base: o.base } : {}),
      });
      if (o.json) process.stdout.write(`${JSON.stringify({ event: 'summary', ...summary })}\n`);
      else process.stdout.write(`${formatSummary(summary)}\n`);
    });

  withResolveOptions(program.command('lock'))
    .description('Resolve every tag, binary URL and chart to a digest and write <manifest>.lock')
    .addHelpText('after', '\nBinaries without a sha256 in the manifest are pinned to what their URL serves now. Default arches: the manifest\'s, else amd64 and arm64.')
    .action(async (o) => {
      const reporter = createReporter(reporterMode(!!o.json));
      const manifest = await loadManifest(o.file);
      const platforms = platformsFrom(o) ?? manifest.platforms ?? parsePlatformList('linux/amd64,linux/arm64');
      const { path, lock: l } = await lock({ manifestFile: o.file, platforms, cacheDir: o.cache, insecure: o.insecureRegistry, reporter, sourceDateEpoch: sourceDateEpoch() }).finally(() => reporter.end());
      const counts = { images: Object.keys(l.images).length, binaries: Object.keys(l.binaries).length, charts: Object.keys(l.charts).length };
      if (o.json) process.stdout.write(`${JSON.stringify({ event: 'locked', path, ...counts })}\n`);
      else process.stdout.write(`wrote ${path}: ${contents(counts.images, counts.binaries, counts.charts)}\n`);
    });

  program
    .command('validate')
    .description('Check a manifest against the schema, and a manifest carrying kubeadm with acpack bundle\'s lint, without fetching anything')
    .requiredOption('-f, --file <manifest>', 'the bundle manifest')
    .option('--arch <list>', 'the architectures to check for (default: the manifest\'s spec.platforms, else this machine\'s)')
    .option('--platform <list>', 'the same as OCI platforms, e.g. linux/arm64')
    .option('--allow-incomplete', 'say what keeps a kubeadm bundle from laying a cluster down as warnings, and exit 0')
    .action(async (o) => {
      const m = await loadManifest(o.file);
      const summary = `${m.name} ${m.version}: ${contents(m.images.length, m.binaries.length, m.charts.length)}`;
      if (!carriesKubeadm(m)) return void process.stdout.write(`${o.file}: valid (${summary})\n`);
      const platforms = platformsFrom(o) ?? m.platforms ?? [hostPlatform()];
      const { report, pending } = await lintManifest(m, platforms, { images: 'rules' });
      const notChecked = [
        ...uncheckedCharts(pending),
        'the bundled kubeadm itself (acpack bundle asks it on this machine\'s arch; validate fetches nothing, so kubeadm\'s images were checked by acpack\'s copy of its rules)',
        'that every image exists for its platforms in its registry (acpack bundle resolves them)',
      ];
      const lines = [
        ...report.warnings.map((w) => `warning: ${w}`),
        ...report.problems.map((p) => `warning: INCOMPLETE (--allow-incomplete): ${p}`),
        ...report.notes.map((n) => `checked: ${n}`),
        ...notChecked.map((n) => `not checked: ${n}`),
      ];
      if (report.problems.length && !o.allowIncomplete) {
        throw incompleteError(m, report.problems, `${o.file} is valid against the schema${lines.length ? `\n${lines.filter((l) => !l.includes('INCOMPLETE')).join('\n')}` : ''}\nacpack bundle would write nothing`);
      }
      process.stdout.write(`${o.file}: valid (${summary}), checked for ${platforms.map(formatPlatform).join(', ')} as a bundle that lays a cluster down (it carries kubeadm)\n${lines.join('\n')}\n`);
    });

  program
    .command('inspect')
    .description('Show what a bundle holds and who signed it (reads only its header entries, never unpacks)')
    .argument('<bundle>', 'bundle.tar.zst')
    .option('--json', 'print bundle.json')
    .option('--sbom', 'print an SPDX 2.3 JSON document: images with their digest per platform, binaries with their sha256 per arch, charts')
    .option('--trust <key.pub>', 'check the signature against this public key (repeatable; the site\'s trust directory is read too)', collect, [])
    .action(async (file: string, o) => {
      const head = await readHead(file);
      if (o.sbom) return void process.stdout.write(`${JSON.stringify(spdxDocument(head.descriptor, head.descriptorBytes), null, 2)}\n`);
      const keys = await loadTrustKeys(o.trust);
      const origin = originOf(head.descriptorBytes, head.signature, keys);
      process.stdout.write(o.json ? `${JSON.stringify(head.descriptor, null, 2)}\n` : formatInspect(head.descriptor, origin, keys.length, head.volume));
    });

  program
    .command('keygen')
    .description('Write an ed25519 key pair to sign bundles with: NAME (private, mode 0600) and NAME.pub (for the sites)')
    .requiredOption('-o, --output <name>', 'the private key\'s file; the public key goes to NAME.pub')
    .addHelpText('after', '\nKeep NAME where bundles are made; put NAME.pub in /etc/acpack/trust/ on the sites (or pass --trust NAME.pub\nto acinstall import and from). An existing key is never overwritten.')
    .action(async (o) => {
      const k = await generateKey(o.output);
      process.stdout.write(`wrote ${k.privatePath} (private: keep it where bundles are made) and ${k.publicPath} (for the sites' /etc/acpack/trust/)\nkey ${k.keyId}\n`);
    });

  program
    .command('verify')
    .description('Re-hash every blob and check that everything index.json references is present')
    .argument('<bundle>', 'bundle.tar.zst')
    .option('--trust <key.pub>', 'also check who signed it (repeatable; the site\'s trust directory is read too): with any trust key, a bundle not signed by one fails, before its blobs are read', collect, [])
    .option('--json', 'print the result as JSON')
    .action(async (file: string, o) => {
      const keys = await loadTrustKeys(o.trust);
      let origin = { signed: false } as Origin; // set by the callback, which TypeScript's narrowing does not see
      const reporter = createReporter(reporterMode(!!o.json));
      reporter.phase('verify', 0);
      const report = await verifyBundle(
        file,
        (n) => reporter.bytes(n),
        (bytes, signature) => {
          origin = originOf(bytes, signature, keys);
          if (keys.length > 0) judgeOrigin(origin, { keys }, file);
        },
      ).finally(() => reporter.end());
      const signer = origin.signed ? { keyId: origin.keyId, ...(origin.by ? { trusted: origin.by.from } : {}) } : undefined;
      const ok = { ok: true, blobs: report.blobs, bytes: report.bytes, name: report.descriptor.name, version: report.descriptor.version, ...(signer ? { signer } : {}) };
      const of = report.volume ? ` (volume ${report.volume} of ${report.descriptor.volumes})` : '';
      process.stdout.write(o.json ? `${JSON.stringify({ ...ok, ...(report.volume ? { volume: report.volume } : {}) })}\n` : `${file}: OK${of}, ${plural(report.blobs, 'blob')} (${formatBytes(report.bytes)}) verified; ${signedLine(origin, keys.length)}\n`);
    });

  return program;
}

export function formatInspect(d: BundleDescriptor, origin: Origin = { signed: false }, trustKeys = 0, volume?: number): string {
  const set = (d.volumes ?? 1) > 1;
  const out = [
    `${d.name} ${d.version} (bundle format ${d.format}) for ${d.platforms.join(', ')}`,
    `${plural(d.blobs.count, 'blob')}, ${formatBytes(d.blobs.bytes)}${set ? `, in ${d.volumes} volumes; this file is volume ${volume}` : ''}`,
    signedLine(origin, trustKeys),
    '',
  ];
  if (set) {
    const per = new Map<number, { blobs: number; bytes: number }>();
    const add = (v: number, size: number) => {
      const e = per.get(v) ?? { blobs: 0, bytes: 0 };
      per.set(v, { blobs: e.blobs + 1, bytes: e.bytes + size });
    };
    for (const b of d.blobs.list ?? []) {
      if (b.volume) add(b.volume, b.size);
      for (const p of b.parts ?? []) add(p.volume, p.size);
    }
    out.push(`VOLUMES (${d.volumes})`);
    out.push(textTable([['VOLUME', 'ENTRIES', 'SIZE'], ...[...per].sort(([a], [b]) => a - b).map(([v, e]) => [`${v}${v === volume ? ' (this file)' : ''}`, String(e.blobs), formatBytes(e.bytes)])]), '');
  }
  if (d.images.length) {
    out.push(`IMAGES (${d.images.length})`);
    const rows = d.images.map((i) => [i.ref, i.platforms.map((p) => p.platform).join(','), i.platforms.map((p) => formatBytes(p.size)).join(' / '), ...(set ? [i.platforms.map((p) => (p.volumes ?? []).join('+')).join(' / ')] : [])]);
    out.push(textTable([['REFERENCE', 'PLATFORMS', 'SIZE', ...(set ? ['VOLUMES'] : [])], ...rows]), '');
  }
  // Which volumes hold a binary's or a chart's blobs (its file, manifest and index; the chart's manifest and .tgz).
  const volumesOf = new Map((d.blobs.list ?? []).map((b) => [b.digest as string, b.volume ? [b.volume] : (b.parts ?? []).map((p) => p.volume)]));
  const where = (...digests: string[]) => [...new Set(digests.flatMap((x) => volumesOf.get(x) ?? []))].sort((a, b) => a - b).join('+');
  if (d.binaries.length) {
    out.push(`BINARIES (${plural(d.binaries.length, 'file')})`);
    const rows = d.binaries.map((b) => [b.name, b.version, b.arch, formatBytes(b.size), b.install ?? `unpack into ${b.extract}`, ...(set ? [where(b.digest, b.manifest, b.index)] : [])]);
    out.push(textTable([['NAME', 'VERSION', 'ARCH', 'SIZE', 'INSTALL', ...(set ? ['VOLUMES'] : [])], ...rows]), '');
  }
  if (d.charts.length) {
    out.push(`CHARTS (${d.charts.length})`);
    const rows = d.charts.map((c) => [c.name, c.version, formatBytes(c.size), ...(set ? [where(c.digest, c.chart)] : [])]);
    out.push(textTable([['NAME', 'VERSION', 'SIZE', ...(set ? ['VOLUMES'] : [])], ...rows]), '');
  }
  if (d.runtime?.length) {
    out.push(`RUNTIME (acinstall, gzipped; ${plural(d.runtime.length, 'arch', 'arches')})`);
    out.push(textTable([['ARCH', 'VERSION', 'SIZE', 'DIGEST'], ...d.runtime.map((r) => [r.arch, r.version, formatBytes(r.size), r.digest])]), '');
  }
  return `${out.join('\n')}\n`;
}

function signedLine(origin: Origin, trustKeys: number): string {
  if (!origin.signed) return 'not signed';
  if (!origin.by) return `signed by key ${origin.keyId} (${trustKeys ? 'not one of the trusted keys' : 'not checked: no trust key given'})`;
  return origin.valid ? `signed by key ${origin.keyId}: valid, trusted (${origin.by.from})` : `signed by key ${origin.keyId} (${origin.by.from}): THE SIGNATURE DOES NOT MATCH bundle.json`;
}

/** On Ctrl-C or SIGTERM: `cleanup` runs (synchronously) and says what was kept; the process exits 130. */
function onInterrupt(cleanup: () => string): void {
  const stop = () => {
    process.stderr.write(`\n${cleanup()}\n`);
    process.exit(130);
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

export function main(argv: string[]): Promise<number> {
  return runProgram(buildProgram(), argv);
}
