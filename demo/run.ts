import { spawn } from 'node:child_process';
import { cp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { parse as parseYaml, stringify } from 'yaml';
import { bundle, createReporter, formatSummary, reporterMode } from '../packer/index.js';
import { verifyBundle } from '../oci/bundle-verify.js';
import { readDescriptor } from '../oci/bundle-reader.js';
import { formatInspect } from '../packer/cli.js';
import { controlPlaneImages, demoImages, pushImage, type SampleImage } from './samples.js';
import { startSourceRegistry, type SourceRegistry } from './source-registry.js';
import { labUp, ssh, type Lab } from '../test/hosts/lab.js';
import { claimLabState, describeLab, hostCommand, loadLabState, removeLab, saveLabState, type LabState } from '../test/hosts/lab-state.js';
import { kubeadmBinary, kubeletBinary } from '../test/hosts/standins/kubeadm-standin.js';

const HELP = `npm run demo [-- --keep]

The main job end to end on this machine, with no internet:
  1. a sample source registry (Debian's docker-registry, on a free port of 127.0.0.1) with the demo's
     multi-arch images and the small control-plane images kubeadm v1.22.15 asks for;
  2. acpack bundle of manifests/demo.yaml for amd64+arm64, then inspect and verify; beside the
     bundle, acinstall-linux-amd64 and -arm64, the executables that go on the medium with it;
  3. three test hosts (network namespaces with their own sshd, root overlay and a small systemd
     stand-in; unreachable from the rest of the machine), then acinstall (that executable) from
     onto them: the site registry, preflight, binaries, a real containerd on every node, kubeadm
     init and two joins;
  4. a worker's containerd pulls an image by its original name, from the site registry;
  5. acinstall status, then the test hosts are torn down (also on Ctrl-C).
kubeadm and kubelet cannot run here: the bundle carries the test hosts' stand-ins for them
(test/hosts/standins/), which do what the real ones do to the node's files but start no API server.
So the demo's bundle leaves out the chart of manifests/demo.yaml: helm would need that API server.
Without a CNI chart it cannot lay a real cluster down: acpack builds it with --allow-incomplete and
says so.

  --keep   leave the test hosts up until Ctrl-C, and say how to reach them
Must run as root (it creates network namespaces). DEMO_DIR sets the work directory (default demo-out).`;

const ROOT = resolve(import.meta.dirname, '..');
const { values: flags } = parseArgs({ options: { keep: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } });
if (flags.help) {
  process.stdout.write(`${HELP}\n`);
  process.exit(0);
}
if (process.getuid?.() !== 0) {
  process.stderr.write('demo: the test hosts are network namespaces, which only root can create: run it as root (see npm run demo -- --help)\n');
  process.exit(1);
}

const say = (text: string) => process.stdout.write(`\n==> ${text}\n`);
const work = resolve(process.env.DEMO_DIR ?? 'demo-out');
let registry: SourceRegistry | undefined;
let labStarted: Promise<Lab> | undefined;

/**
 * One teardown, however many ask for it: a Ctrl-C both runs the signal handler and ends the install
 * under way, whose failure reaches main's finally; two labDowns at once race on the same files.
 */
let teardown: Promise<void> | undefined;
function cleanUp(): Promise<void> {
  teardown ??= (async () => {
    await registry?.stop();
    // A Ctrl-C while the hosts come up waits for them, or they would outlive the demo.
    const hosts = await labStarted?.catch(() => undefined);
    if (hosts) {
      await removeLab(hosts);
      process.stdout.write(`test hosts ${hosts.id} torn down: namespaces, route and processes removed\n`);
    }
  })().catch((err) => {
    process.stderr.write(`demo: tearing down failed: ${(err as Error).message}; npm run hosts:down removes what is left\n`);
    process.exitCode = 1;
  });
  return teardown;
}

// Ctrl-C under npm reaches this process twice (from the terminal, and relayed by npm): the teardown
// must not be cut short by the second, so the handler stays and only the first one acts. The demo
// runs in node itself (--import tsx), not under tsx's CLI: that one SIGKILLs its child when the
// child has not acknowledged a relayed signal within 30 ms, which a loaded machine misses, and the
// test hosts then outlived the demo.
let stopping = false;
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (stopping) return;
    stopping = true;
    process.stderr.write(`\ndemo: ${signal}, tearing down\n`);
    void cleanUp().finally(() => process.exit(130));
  });
}

/**
 * manifests/demo.yaml, made to install: its registry placeholder (127.0.0.1:5055) replaced by the
 * sample registry's free port, plus the control plane's images and the kubeadm and kubelet stand-ins;
 * the chart left out (see HELP).
 */
async function demoManifest(dir: string, source: string, controlPlane: SampleImage[]): Promise<string> {
  const localize = (text: string) => text.replaceAll('127.0.0.1:5055', source);
  await cp(join(ROOT, 'manifests/demo'), join(dir, 'demo'), { recursive: true });
  await writeFile(join(dir, 'demo/imageList'), localize(await readFile(join(dir, 'demo/imageList'), 'utf8')));
  const spec = parseYaml(localize(await readFile(join(ROOT, 'manifests/demo.yaml'), 'utf8')));
  spec.spec.images.push(...controlPlane.map((i) => `${source}/${i.repository}:${i.tag}`));
  spec.spec.binaries.push(await kubeadmBinary(join(dir, 'standins'), 'v1.22.15'), kubeletBinary());
  delete spec.spec.charts;
  const file = join(dir, 'demo.yaml');
  await writeFile(file, stringify(spec));
  return file;
}

/** Runs a command on a test host with the demo's own terminal, so that its progress shows as it goes. */
function onHost(state: LabState, argv: string[]): Promise<number> {
  const [bin, ...args] = hostCommand(state, state.hosts[0], argv);
  const child = spawn(bin, args, { stdio: 'inherit', cwd: ROOT });
  return new Promise((done) => child.on('exit', (code) => done(code ?? 1)));
}

async function main(): Promise<number> {
  // First: a lab kept up by an earlier demo (--keep) lives in the work directory about to be emptied.
  await claimLabState();
  await rm(work, { recursive: true, force: true });
  await mkdir(work, { recursive: true });

  registry = await startSourceRegistry(join(work, 'registry'));
  say(`sample source registry (docker-registry) on ${registry.host}`);
  const controlPlane = await controlPlaneImages();
  for (const image of [...(await demoImages()), ...controlPlane]) await pushImage(registry.host, image);

  const out = join(work, 'demo.tar.zst');
  const manifest = await demoManifest(join(work, 'manifest'), registry.host, controlPlane);
  say(`acpack bundle -f ${manifest} --arch amd64,arm64 -o ${out} --allow-incomplete`);
  // No CNI chart (see HELP): acpack's lint refuses such a bundle unless told it is meant to be incomplete.
  const summary = await bundle({ manifestFile: manifest, cacheDir: join(work, 'cache'), reporter: createReporter(reporterMode(false)), sourceDateEpoch: 0, out, allowIncomplete: true, executables: true });
  process.stdout.write(`${formatSummary(summary)}\n`);
  say(`acpack inspect ${out}`);
  process.stdout.write(formatInspect(await readDescriptor(out)));
  say(`acpack verify ${out}`);
  process.stdout.write(`OK: ${(await verifyBundle(out)).blobs} blobs verified\n`);
  // The site has no upstream: from here on, that host is only the name images keep.
  const upstream = registry.host;
  await registry.stop();
  registry = undefined;

  say('three test hosts');
  labStarted = labUp(3, { dir: join(work, 'lab') });
  const lab = await labStarted;
  await saveLabState(lab);
  const state = (await loadLabState())!;
  process.stdout.write(`lab ${lab.id} on ${lab.subnet}, unreachable from the rest of the machine:\n${describeLab(state)}`);

  const [master, w1, w2] = lab.hosts;
  const site = join(work, 'site');
  // disk, ip_forward, br_netfilter: a namespace on a small tmpfs is not a node's kernel or disk.
  const from = ['acinstall', 'from', out, '-m', master.ip, '-n', `${w1.ip},${w2.ip}`, '-i', lab.key, '--store', site, '--ignore-preflight', 'disk,ip_forward,br_netfilter'];
  say(`on ${master.name}: ${from.join(' ')}`);
  const code = await onHost(state, from);
  if (code !== 0) throw new Error(`acinstall from failed (exit ${code}); its per-node logs are in ${join(site, 'logs')}`);

  const image = `${upstream}/ecp_builder/coredns:v1.8.4`;
  say(`on ${w1.name}: its containerd (containerd.service, run by the stand-in systemd) fetches ${image} by that name`);
  const ctr = `ctr -n k8s.io content fetch --hosts-dir /etc/containerd/certs.d --platform linux/amd64 ${image} >/dev/null && ctr -n k8s.io images ls -q`;
  process.stdout.write((await ssh(lab, master, w1, ctr, 120_000)).stdout);
  process.stdout.write((await ssh(lab, master, w1, `grep -h server /etc/containerd/certs.d/${upstream}/hosts.toml`)).stdout);

  say('acinstall status');
  await onHost(state, ['acinstall', 'status', '--store', site]);

  if (flags.keep) {
    process.stdout.write(`\nThe test hosts stay up until Ctrl-C. From another shell in ${ROOT}:\n${describeLab(state)}`);
    process.stdout.write(`  e.g. npm run hosts:exec -- acinstall status --store ${site}\n`);
    await new Promise(() => {}); // until a signal
  }
  return 0;
}

try {
  process.exitCode = await main();
} catch (err) {
  process.stderr.write(`demo: ${(err as Error).message}\n`);
  process.exitCode = 1;
} finally {
  if (!flags.keep || process.exitCode) await cleanUp();
}
