import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cp, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { importBundle } from '../../registry/index.js';
import { readDescriptor } from '../../oci/bundle-reader.js';
import { runAcinstall, ROOT, tempDir, withRegistry } from '../helpers/env.js';
import { bundleSpec, buildFixture, imageRef, pushFixture, type Fixture } from '../helpers/fixtures.js';
import { startAuthRegistry } from '../helpers/auth-registry.js';

/**
 * acinstall push into a registry a site already runs: Debian's docker-registry (distribution) with
 * htpasswd, credentials from REGISTRY_AUTH_FILE. The bundle holds the amd64 half of a two-arch
 * image, a binary and a chart; skopeo (a real client) reads back what was pushed.
 */

const run = promisify(execFile);
let source: Awaited<ReturnType<typeof withRegistry>>;
let target: { host: string; stop(): Promise<void> };
let work: Awaited<ReturnType<typeof tempDir>>;
let fx: Fixture;
let store: string;
let authFile: string;
let bundlePath: string;
const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

beforeAll(async () => {
  source = await withRegistry();
  fx = await buildFixture('pushto');
  await pushFixture(source.registry.host, fx);
  work = await tempDir('acpack-push-to-');
  const tool = Buffer.from('a tool for amd64\n');
  await mkdir(join(work.dir, 'files'), { recursive: true });
  await writeFile(join(work.dir, 'files/tool-amd64'), tool);
  await cp(join(ROOT, 'manifests/demo/charts/hello'), join(work.dir, 'hello'), { recursive: true });
  bundlePath = await bundleSpec(
    work.dir,
    {
      images: [imageRef(source.registry.host, fx.web)],
      binaries: [{ name: 'tool', version: 'v1', url: 'files/tool-{arch}', install: '/usr/bin/tool', sha256: { amd64: sha(tool) } }],
      charts: [{ path: 'hello' }],
    },
    join(work.dir, 'b.tar.zst'),
    'amd64',
  );
  store = join(work.dir, 'store');
  await importBundle(bundlePath, store);
  await mkdir(join(work.dir, 'target'), { recursive: true });
  target = await startAuthRegistry(join(work.dir, 'target'), { bob: 'hunter2' }, []);
  authFile = join(work.dir, 'auth.json');
  await writeFile(authFile, JSON.stringify({ auths: { [target.host]: { auth: Buffer.from('bob:hunter2').toString('base64') } } }));
}, 120_000);

afterAll(async () => {
  await target?.stop();
  await source?.cleanup();
  await work?.cleanup();
});

const skopeoRaw = async (ref: string) =>
  JSON.parse((await run('skopeo', ['inspect', '--raw', '--tls-verify=false', '--creds', 'bob:hunter2', `docker://${target.host}/${ref}`])).stdout);

describe('acinstall push --to', () => {
  it('refuses without credentials, naming where they are looked for', async () => {
    const r = await runAcinstall(['push', '--to', target.host, '--store', store], { env: { REGISTRY_AUTH_FILE: join(work.dir, 'none.json') } });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/needs credentials for .*: log in \(docker login \/ podman login\) or set REGISTRY_AUTH_FILE/);
  });

  it('pushes every tag under its path and a prefix: the amd64-only index narrowed and named, its platform manifest and the artifacts with their digests', async () => {
    const r = await runAcinstall(['push', '--to', target.host, '--prefix', 'site', '--store', store], { env: { REGISTRY_AUTH_FILE: authFile } });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^pushed 3 tags to /);
    const upstream = JSON.parse(fx.web.top.data.toString());
    const amd64 = upstream.manifests.find((m: { platform: { architecture: string } }) => m.platform.architecture === 'amd64');
    expect(r.stdout).toContain(`note: ${target.host}/site/${fx.web.repository}:${fx.web.tag} is an index of 1 of its 2 platforms`);
    expect(r.stdout).toContain(`not upstream's ${fx.web.top.digest}`);

    const index = await skopeoRaw(`site/${fx.web.repository}:${fx.web.tag}`);
    expect(index.manifests).toEqual([amd64]);
    // The platform's manifest keeps its upstream digest.
    const { stdout: child } = await run('skopeo', ['inspect', '--raw', '--tls-verify=false', '--creds', 'bob:hunter2', `docker://${target.host}/site/${fx.web.repository}@${amd64.digest}`]);
    expect(`sha256:${sha(child)}`).toBe(amd64.digest);
    // skopeo copies the pushed image out again, layers checked against their digests.
    await run('skopeo', ['copy', '--src-tls-verify=false', '--src-creds', 'bob:hunter2', '--override-arch', 'amd64', `docker://${target.host}/site/${fx.web.repository}:${fx.web.tag}`, `oci:${join(work.dir, 'copied')}:x`]);

    const d = await readDescriptor(bundlePath);
    const { stdout: raw } = await run('skopeo', ['inspect', '--raw', '--tls-verify=false', '--creds', 'bob:hunter2', `docker://${target.host}/site/binaries/tool:v1`]);
    expect(`sha256:${sha(raw)}`).toBe(d.binaries[0].index);
    const { stdout: chart } = await run('skopeo', ['inspect', '--raw', '--tls-verify=false', '--creds', 'bob:hunter2', `docker://${target.host}/site/charts/hello:${d.charts[0].version}`]);
    expect(`sha256:${sha(chart)}`).toBe(d.charts[0].digest);
  });

  it('a second run finds everything there and uploads nothing', async () => {
    const r = await runAcinstall(['push', '--to', target.host, '--prefix', 'site', '--store', store], { env: { REGISTRY_AUTH_FILE: authFile } });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^pushed 3 tags to .*: 0 blobs uploaded \(0 bytes\), 0 mounted, \d+ already there; 0 manifests/);
  });
});
