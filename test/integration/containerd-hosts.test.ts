import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ssh, type LabHost } from '../hosts/lab.js';
import { nodeSteps } from '../hosts/node-steps.js';
import { useLab } from '../helpers/lab.js';
import { ACINSTALL } from '../helpers/env.js';
import { stopChild } from '../../demo/processes.js';
import { tlsDir } from '../../registry/index.js';
import { containerdFiles } from '../../installer/node-setup.js';
import type { BundleDescriptor } from '../../oci/bundle-format.js';

// The hosts.toml acinstall writes, read by the real containerd (Debian's ctr) on a test host, against
// the real site registry (acinstall serve, TLS with its own CA) and its access log.

const t = useLab(2);
let registry: ChildProcess;
let upstream: ChildProcess;
const access: { path: string; status: number }[] = [];
let upstreamConnections = 0;

/** A process in a host's network namespace; resolves once `ready` shows in its output. */
async function inNamespace(host: LabHost, args: string[], ready: RegExp, onLine: (line: string) => void): Promise<ChildProcess> {
  const child = spawn('nsenter', [`--net=/run/netns/${host.netns}`, '--', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let said = '';
  let seen = false;
  const take = (c: Buffer) => {
    said += c.toString();
    for (const line of c.toString().split('\n').filter(Boolean)) onLine(line);
    seen ||= ready.test(said);
  };
  child.stdout!.on('data', take);
  child.stderr!.on('data', take);
  for (let i = 0; i < 600 && !seen; i++) {
    if (child.exitCode !== null) throw new Error(`${args.join(' ')} exited: ${said}`);
    await sleep(100);
  }
  if (!seen) throw new Error(`${args.join(' ')} did not start: ${said}`);
  return child;
}

beforeAll(async () => {
  const [h1, h2] = t.lab.hosts;
  await mkdir(join(t.work.dir, 'site'), { recursive: true }); // an empty store, made on purpose: serve refuses a missing one
  registry = await inNamespace(
    h1,
    [ACINSTALL, 'serve', '--store', join(t.work.dir, 'site'), '--listen', `${h1.ip}:5000`, '--tls', 'auto', '--ip', h1.ip, '--hostname', 'sea.hub', '--workers', '1'],
    /serving/,
    (line) => {
      if (line.startsWith('{')) access.push(JSON.parse(line));
    },
  );
  // The upstream host the images are named after: a listener that only counts who comes.
  const counter = `require('net').createServer((s) => { console.log('connection'); s.destroy(); }).listen(5001, '${h2.ip}', () => console.log('listening'))`;
  upstream = await inNamespace(h2, [process.execPath, '-e', counter], /listening/, (line) => {
    if (line === 'connection') upstreamConnections++;
  });
}, 120_000);

afterAll(async () => {
  if (registry) await stopChild(registry);
  if (upstream) await stopChild(upstream);
});

describe("containerd's hosts.toml", () => {
  it('makes the site registry the only host containerd tries past the node\'s agent: with the agent down, a missing image costs one request there (with ?ns=), none upstream, and no x509 error', async () => {
    const [h1, h2] = t.lab.hosts;
    const origin = `${h2.ip}:5001`;
    const d = { images: [{ ref: `${origin}/library/app:1.0` }], binaries: [] } as unknown as BundleDescriptor;
    const ca = await readFile(join(tlsDir(join(t.work.dir, 'site')), 'ca.crt'), 'utf8');
    const files = containerdFiles(d, `https://${h1.ip}:5000`, ca, 'sea.hub:5000');
    expect(await nodeSteps(t.lab, h1, h2, [{ files }])).toEqual([{ ok: true }]);
    const fetch = await ssh(
      t.lab,
      h1,
      h2,
      [
        'systemctl start containerd',
        `ctr -n acpack content fetch --hosts-dir /etc/containerd/certs.d --platform linux/amd64 ${origin}/library/missing:1.0 2>&1; echo "exit=$?"`,
      ].join(' && '),
      90_000,
    );
    // ctr names the first host's error (the agent's refused connection), after trying the server.
    expect(fetch.stdout).toMatch(/trying next host - response was http.StatusNotFound" host="[\d.]+:5000"/);
    expect(fetch.stdout).not.toMatch(/x509|certificate/);
    expect(fetch.stdout).not.toContain('exit=0');
    // The access log line is written once the response is sent: it may reach this pipe after ctr has its answer.
    for (let i = 0; i < 50 && !access.some((a) => a.path.includes('missing')); i++) await sleep(100);
    const asked = access.filter((a) => a.path.includes('missing'));
    expect(asked.map((a) => a.status)).toEqual([404]);
    expect(decodeURIComponent(asked[0].path)).toBe(`/v2/library/missing/manifests/1.0?ns=${origin}`);
    expect(upstreamConnections).toBe(0);
    // The node's peer cache agent is the one host entry (not running here: containerd went on to the server).
    expect(files[`/etc/containerd/certs.d/${origin}/hosts.toml`].match(/^\[host\b.*$/gm)).toEqual(['[host."http://127.0.0.1:5001"]']);
  });

  it('writes files over standard input: one past 128 KiB (the limit of one argument) arrives whole, beside a small one', async () => {
    const [h1, h2] = t.lab.hosts;
    // Text with multi-byte characters: each file is cut from the stream by its length in bytes.
    const big = `${randomBytes(150 * 1024).toString('base64')}ünïcödé\n`;
    const files = { '/var/tmp/acpack-big.txt': big, '/var/tmp/acpack-small.txt': 'small ✓\n' };
    expect(Buffer.byteLength(big)).toBeGreaterThan(200 * 1024);
    expect(await nodeSteps(t.lab, h1, h2, [{ files }])).toEqual([{ ok: true }]);
    const sums = (await ssh(t.lab, h1, h2, 'sha256sum /var/tmp/acpack-big.txt /var/tmp/acpack-small.txt; ls /var/tmp | grep -c acpack-tmp || true')).stdout;
    const hex = (s: string) => createHash('sha256').update(s).digest('hex');
    expect(sums).toBe(`${hex(big)}  /var/tmp/acpack-big.txt\n${hex(files['/var/tmp/acpack-small.txt'])}  /var/tmp/acpack-small.txt\n0\n`);
  });
});
