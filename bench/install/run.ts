/**
 * bench/install: on 4 test hosts, time `acinstall from` until every node has its binaries and its
 * images (containerd on each node pulling through the written hosts.toml), and count the bytes the
 * master sent; then, in the same run, what sealer does today: every file copied to each node one by
 * one over SFTP with an md5sum before and after. Both from the first master, inside its namespace,
 * on links shaped with tbf (`--rate`, 200mbit by default; `none` for bare veths, where the two race
 * for 2 CPU cores rather than for the network a site has).
 *
 *   npm run build && npx tsx bench/install/run.ts [--images 6] [--mb 40] [--rate 200mbit]
 */
import { execFile } from 'node:child_process';
import { appendFile, mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { promisify } from 'node:util';
import { buildIndexImage, pushImage } from '../../demo/samples.js';
import { startSourceRegistry } from '../../demo/source-registry.js';
import { readDescriptor } from '../../oci/bundle-reader.js';
import { ContentStore } from '../../oci/store.js';
import type { Digest } from '../../oci/digest.js';
import { acinstallOn, inHost, labDown, labUp, shapeLinks, ssh, type Lab } from '../../test/hosts/lab.js';
import { benchBundle, numberOption, randomLayer, ROOT } from '../common.js';
import { pushKubeadmImages } from '../../test/helpers/kubeadm-images.js';

const run = promisify(execFile);
const IMAGES = numberOption('images', 6);
const MB = numberOption('mb', 40);
const RATE = process.argv.includes('--rate') ? process.argv[process.argv.indexOf('--rate') + 1] : '200mbit';

/** Bytes the master's eth0 has sent: /proc/net/dev as seen from inside its namespace. */
async function txBytes(lab: Lab): Promise<number> {
  const dev = (await inHost(lab.hosts[0], 'cat', ['/proc/net/dev'])).stdout;
  const line = dev.split('\n').find((l) => l.trim().startsWith('eth0:'));
  if (!line) throw new Error('no eth0 in the master namespace');
  return Number(line.split(':')[1].trim().split(/\s+/)[8]);
}
const seconds = (t0: bigint) => Math.round((Number(process.hrtime.bigint() - t0) / 1e9) * 100) / 100;

async function main(): Promise<void> {
  const work = join(process.env.BENCH_DIR ?? tmpdir(), `acpack-bench-install-${process.pid}`);
  await rm(work, { recursive: true, force: true });
  await mkdir(join(work, 'bin'), { recursive: true });
  // A distribution: IMAGES multi-arch images, binaries of kubelet's size, the kubeadm stand-in.
  const source = await startSourceRegistry(join(work, 'source'));
  const refs: string[] = [];
  for (let i = 0; i < IMAGES; i++) {
    const img = buildIndexImage(`bench/app${i}`, 'v1', { amd64: [randomLayer(MB << 20)], arm64: [randomLayer(MB << 20)] });
    await pushImage(source.host, img);
    refs.push(`${source.host}/bench/app${i}:v1`);
  }
  const bins = [] as { name: string; url: string; sha256: Record<string, string>; install: string; version: string }[];
  // No kubectl: with one, from would end with a post-check, and no API server runs here.
  for (const name of ['kubelet', 'crictl']) {
    const sums: Record<string, string> = {};
    for (const arch of ['amd64', 'arm64']) {
      const f = join(work, 'bin', `${name}-${arch}`);
      await run('head', ['-c', String(40 << 20), '/dev/urandom'], { encoding: 'buffer', maxBuffer: 64 << 20 }).then((r) => writeFile(f, r.stdout));
      sums[arch] = (await run('sha256sum', [f])).stdout.split(' ')[0];
    }
    bins.push({ name, version: 'v1', url: join(work, 'bin', `${name}-{arch}`), sha256: sums, install: `/usr/bin/${name}` });
  }
  // What kubeadm v1.22.15 asks for: acinstall checks the bundle carries it before kubeadm runs.
  const kubeadmImages = await pushKubeadmImages(source.host);
  const kubeadm = join(ROOT, 'test/hosts/standins/kubeadm');
  const kubeadmSha = (await run('sha256sum', [kubeadm])).stdout.split(' ')[0];
  // No kubelet or CNI chart: the install's own steps and the pulls are what is timed (allowIncomplete).
  const bundlePath = await benchBundle(work, 'bench', { images: [...refs, ...kubeadmImages], binaries: [...bins, { name: 'kubeadm', version: 'v1.22.15', url: kubeadm, sha256: kubeadmSha, install: '/usr/bin/kubeadm' }] }, 'amd64,arm64', true);
  await source.stop();

  // The files a node needs for its arch (amd64 here): binaries and every blob of its images.
  const d = await readDescriptor(bundlePath);
  const cache = await ContentStore.open(join(work, 'cache'));
  const files = new Set<string>();
  for (const i of d.images) {
    for (const p of i.platforms.filter((x) => x.platform === 'linux/amd64')) {
      files.add(cache.path(p.digest as Digest));
      const m = JSON.parse((await cache.readBytes(p.digest as Digest)).toString()) as { config: { digest: Digest }; layers: { digest: Digest }[] };
      for (const b of [m.config, ...m.layers]) files.add(cache.path(b.digest));
    }
  }
  for (const b of d.binaries.filter((x) => x.arch === 'amd64')) files.add(cache.path(b.digest as Digest));
  const fileList = join(work, 'files');
  await writeFile(fileList, [...files].join('\n'));
  const payload = (await Promise.all([...files].map((f) => run('stat', ['-c', '%s', f]).then((r) => Number(r.stdout))))).reduce((a, b) => a + b, 0);

  const lab = await labUp(4, { dir: join(work, 'lab') });
  try {
    const [master, ...nodes] = lab.hosts;
    if (RATE !== 'none') await shapeLinks(lab, RATE);
    // acpack: from, then every node pulls its images through containerd and the written hosts.toml.
    let tx0 = await txBytes(lab);
    let t0 = process.hrtime.bigint();
    const r = await acinstallOn(master, ['from', bundlePath, '-m', master.ip, '-n', nodes.map((n) => n.ip).join(','), '-i', lab.key, '--store', join(work, 'site'), '--ignore-preflight', 'disk,ip_forward,br_netfilter,memory,cpu'], ROOT);
    if (r.code !== 0) throw new Error(`acinstall from failed: ${r.stderr}`);
    const fromSeconds = seconds(t0);
    const dir = '/tmp/acpack-ctrd';
    await Promise.all(
      nodes.map(async (n) => {
        await ssh(lab, master, n, `mkdir -p ${dir}; printf 'version = 2\\nroot = "${dir}/root"\\nstate = "${dir}/state"\\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\\n[grpc]\\n  address = "${dir}/sock"\\n[ttrpc]\\n  address = "${dir}/sock.ttrpc"\\n' > ${dir}/config.toml; { containerd --config ${dir}/config.toml > ${dir}/log 2>&1 < /dev/null & echo $! > ${dir}/pid; }; for i in $(seq 50); do [ -S ${dir}/sock ] && break; sleep 0.1; done`);
        // As the kubelet does by default (serializeImagePulls): one image after another.
        await ssh(lab, master, n, refs.map((ref) => `ctr --address ${dir}/sock -n k8s.io content fetch --hosts-dir /etc/containerd/certs.d --platform linux/amd64 ${ref} > /dev/null`).join(' && '), 1_800_000);
      }),
    );
    const acpackSeconds = seconds(t0);
    const acpackSent = (await txBytes(lab)) - tx0;
    await Promise.all(nodes.map((n) => ssh(lab, master, n, `kill $(cat ${dir}/pid)`).catch(() => {})));

    // sealer: the same files, node after node, file after file, md5 before and after.
    tx0 = await txBytes(lab);
    t0 = process.hrtime.bigint();
    await inHost(master, process.execPath, ['--import', 'tsx', join(ROOT, 'bench/install/sftp-copy.ts'), lab.key, fileList, ...nodes.map((n) => n.ip)], 1_800_000);
    const sealerSeconds = seconds(t0);
    const sealerSent = (await txBytes(lab)) - tx0;

    const result = {
      bench: 'install',
      date: new Date().toISOString(),
      nodes: lab.hosts.length,
      rate: RATE,
      payloadBytesPerNode: payload,
      acpackSeconds,
      acpackFromSeconds: fromSeconds,
      sealerSeconds,
      ratio: Math.round((acpackSeconds / sealerSeconds) * 100) / 100,
      acpackMasterSentBytes: acpackSent,
      sealerMasterSentBytes: sealerSent,
    };
    process.stdout.write(
      [
        `4 test hosts (1 master + 3 workers), links ${RATE === 'none' ? 'unshaped' : `shaped to ${RATE}`}, ${(payload / 1e6).toFixed(0)} MB of binaries and image blobs per node`,
        `acinstall from + image pulls: ${acpackSeconds} s (from: ${fromSeconds} s, with the import of the ${((d.blobs.bytes) / 1e6).toFixed(0)} MB two-arch bundle and kubeadm steps), master sent ${(acpackSent / 1e6).toFixed(0)} MB`,
        `sealer-style SFTP + md5sum:   ${sealerSeconds} s, master sent ${(sealerSent / 1e6).toFixed(0)} MB`,
        `ratio acpack/sealer: ${result.ratio}`,
      ].join('\n') + '\n',
    );
    await mkdir(join(ROOT, 'bench/results'), { recursive: true });
    await appendFile(join(ROOT, 'bench/results/install.jsonl'), `${JSON.stringify(result)}\n`);
  } finally {
    await labDown(lab);
    await rm(work, { recursive: true, force: true });
  }
}

await main();
