import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { cp, mkdir, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { importBundle } from '../../registry/index.js';
import { generateKey, loadSigningKey, loadTrustKeys, signDescriptor } from '../../oci/bundle-signature.js';
import { entriesOf, writeEntries, type Entry } from '../helpers/bundle-entries.js';
import { ROOT, runAcinstall, runCli, tempDir } from '../helpers/env.js';
import { writeManifest } from '../helpers/fixtures.js';

/**
 * Who made a bundle: acpack keygen, bundle --sign, inspect, and the site's decision in acinstall
 * import (--trust, the trust directory, --allow-unsigned). The bundle holds a local binary and a
 * local chart, so no registry is needed.
 */

const run = promisify(execFile);
let work: Awaited<ReturnType<typeof tempDir>>;
let manifest: string;
/** Signed with `key`; `other` is a second key pair nobody signed with. */
let signed: string;
let unsigned: string;
let key: string;
let other: string;
let entries: Entry[];


const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

beforeAll(async () => {
  work = await tempDir('acpack-trust-');
  const tool = Buffer.from('a small tool for amd64\n');
  await mkdir(join(work.dir, 'files'), { recursive: true });
  await writeFile(join(work.dir, 'files/tool-amd64'), tool);
  await cp(join(ROOT, 'manifests/demo/charts/hello'), join(work.dir, 'hello'), { recursive: true });
  manifest = await writeManifest(work.dir, {
    binaries: [{ name: 'tool', version: 'v1', url: 'files/tool-{arch}', install: '/usr/bin/tool', sha256: { amd64: sha(tool) } }],
    charts: [{ path: 'hello' }],
  });
  key = join(work.dir, 'release');
  other = join(work.dir, 'stranger');
  const gen = await runCli(['keygen', '-o', key]);
  expect(gen.code, gen.stderr).toBe(0);
  await generateKey(other);
  signed = join(work.dir, 'signed.tar.zst');
  unsigned = join(work.dir, 'unsigned.tar.zst');
  const cache = join(work.dir, 'cache');
  for (const [out, extra] of [
    [signed, ['--sign', key]],
    [unsigned, []],
  ] as const) {
    const r = await runCli(['bundle', '-f', manifest, '--arch', 'amd64', '--cache', cache, '-o', out, ...extra]);
    expect(r.code, r.stderr).toBe(0);
  }
  entries = await entriesOf(signed);
}, 120_000);

afterAll(() => work?.cleanup());

const craft = (name: string, list: Entry[]) => writeEntries(join(work.dir, name), list);

const store = (name: string) => join(work.dir, `store-${name}`);
const blobsIn = async (dir: string) => (existsSync(join(dir, 'blobs/sha256')) ? (await readdir(join(dir, 'blobs/sha256'))).length : 0);

describe('acpack keygen and bundle --sign', () => {
  it('keygen writes an ed25519 pair, the private key readable by root only, and never overwrites one', async () => {
    expect((await stat(key)).mode & 0o777).toBe(0o600);
    // openssl reads both files, and prints the key id acpack shows from the public key's DER.
    const { stdout: der } = await run('openssl', ['pkey', '-in', key, '-pubout', '-outform', 'DER'], { encoding: 'buffer' });
    const keyId = `sha256:${sha(der)}`;
    expect((await loadTrustKeys([`${key}.pub`], join(work.dir, 'none')))[0].keyId).toBe(keyId);
    const again = await runCli(['keygen', '-o', key]);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/release exists: acpack keygen does not overwrite a key/);
  });

  it('a signed bundle carries bundle.json.sig right after bundle.json, and inspect names the key', async () => {
    expect(entries.map((e) => e.name).slice(0, 4)).toEqual(['oci-layout', 'bundle.json', 'bundle.json.sig', 'index.json']);
    const keyId = (await loadTrustKeys([`${key}.pub`], join(work.dir, 'none')))[0].keyId;
    const plain = await runCli(['inspect', signed]);
    expect(plain.stdout).toContain(`signed by key ${keyId} (not checked: no trust key given)`);
    const checked = await runCli(['inspect', signed, '--trust', `${key}.pub`]);
    expect(checked.stdout).toContain(`signed by key ${keyId}: valid, trusted (${key}.pub)`);
    expect((await runCli(['inspect', unsigned])).stdout).toMatch(/^not signed$/m);
  });

  it('inspect --sbom lists the binary per arch by its sha256 and the chart by its .tgz', async () => {
    const d = JSON.parse(entries[1].data.toString());
    const doc = JSON.parse((await runCli(['inspect', signed, '--sbom'])).stdout);
    const summary = doc.packages.map((p: any) => [p.name, p.versionInfo, p.primaryPackagePurpose, p.checksums[0].checksumValue]);
    expect(summary).toEqual([
      ['tool', 'v1', 'APPLICATION', d.binaries[0].digest.slice(7)],
      [d.charts[0].name, d.charts[0].version, 'ARCHIVE', d.charts[0].chart.slice(7)],
    ]);
    expect(doc.packages[0].externalRefs[0].referenceLocator).toBe(`pkg:generic/tool@v1?arch=amd64&checksum=${encodeURIComponent(d.binaries[0].digest)}`);
  });

  it('verify --trust checks who signed it: a valid trusted signature passes, an unsigned, untrusted or forged bundle fails before its blobs are read', async () => {
    const none = { env: { ACPACK_TRUST_DIR: join(work.dir, 'none') } };
    const ok = await runCli(['verify', signed, '--trust', `${key}.pub`], none);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(/: OK, \d+ blobs .* verified; signed by key sha256:[a-f0-9]{64}: valid, trusted \(.*release\.pub\)$/m);
    const unchecked = await runCli(['verify', signed], none);
    expect(unchecked.stdout).toMatch(/verified; signed by key sha256:[a-f0-9]{64} \(not checked: no trust key given\)$/m);

    const untrusted = await runCli(['verify', signed, '--trust', `${other}.pub`], none);
    expect(untrusted.code).toBe(1);
    expect(untrusted.stderr).toMatch(/signed by sha256:[a-f0-9]{64}, a key this site does not trust/);
    const bare = await runCli(['verify', unsigned, '--trust', `${key}.pub`], none);
    expect(bare.code).toBe(1);
    expect(bare.stderr).toContain('is not signed');

    const d = JSON.parse(entries[1].data.toString());
    d.version = 'v9';
    const forged = await craft('forged-verify.tar.zst', entries.map((e) => (e.name === 'bundle.json' ? { name: e.name, data: Buffer.from(JSON.stringify(d, null, 2)) } : e)));
    const caught = await runCli(['verify', forged, '--trust', `${key}.pub`], none);
    expect(caught.code).toBe(1);
    expect(caught.stderr).toContain('its bundle.json does not match its signature');
    // Without a key the forgery is not seen: verify checks bytes against bundle.json, not who wrote it.
    expect((await runCli(['verify', forged], none)).code).toBe(0);
    // The signature is judged before any blob is hashed: a bundle that is also corrupt fails on the signature.
    const last = entries.at(-1)!;
    const rotten = Buffer.from(last.data);
    rotten[0] ^= 1;
    const both = await craft('forged-rotten.tar.zst', entries.map((e) => (e.name === 'bundle.json' ? { name: e.name, data: Buffer.from(JSON.stringify(d, null, 2)) } : e === last ? { name: e.name, data: rotten } : e)));
    expect((await runCli(['verify', both], none)).stderr).toMatch(/blob sha256:[a-f0-9]{64} is corrupt/);
    expect((await runCli(['verify', both, '--trust', `${key}.pub`], none)).stderr).toContain('its bundle.json does not match its signature');
  });

  it('a key that is not ed25519 is refused before anything is fetched', async () => {
    const rsa = join(work.dir, 'rsa.pem');
    await run('openssl', ['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', rsa]);
    const out = join(work.dir, 'rsa.tar.zst');
    const r = await runCli(['bundle', '-f', manifest, '--arch', 'amd64', '--cache', join(work.dir, 'cache-rsa'), '-o', out, '--sign', rsa]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/rsa\.pem is a rsa key; bundles are signed with ed25519 keys/);
    expect(existsSync(out)).toBe(false);
    expect(existsSync(join(work.dir, 'cache-rsa'))).toBe(false);
  });
});

describe("the site's decision (acinstall import)", () => {
  const policy = async (files: string[], allowUnsigned = false) => ({ keys: await loadTrustKeys(files, join(work.dir, 'none')), allowUnsigned });

  it('a bundle signed by a trusted key is imported with no warning', async () => {
    const r = await importBundle(signed, store('trusted'), undefined, undefined, await policy([`${key}.pub`]));
    expect(r.warning).toBeUndefined();
    expect(r.origin).toMatchObject({ signed: true, valid: true, by: { from: `${key}.pub` } });
  });

  it('with no trust key every bundle is imported, with a warning that its origin is unchecked', async () => {
    const a = await importBundle(unsigned, store('nokeys-unsigned'));
    expect(a.warning).toMatch(/is not signed, and no trust key is configured .*: its origin is unchecked/);
    const b = await importBundle(signed, store('nokeys-signed'));
    expect(b.warning).toMatch(/is signed by sha256:[a-f0-9]{64}, a key this site does not trust, and no trust key is configured/);
  });

  it('with a trust key, an unsigned bundle or one signed by another key is refused, the store untouched; --allow-unsigned takes it with a warning', async () => {
    const strangers = await policy([`${other}.pub`]);
    await expect(importBundle(signed, store('wrong-key'), undefined, undefined, strangers)).rejects.toMatchObject({
      code: 'UNTRUSTED_BUNDLE',
      message: expect.stringMatching(/is signed by sha256:[a-f0-9]{64}, a key this site does not trust; this site trusts .*stranger\.pub.*\(nothing was imported\)/),
    });
    await expect(importBundle(unsigned, store('unsigned'), undefined, undefined, await policy([`${key}.pub`]))).rejects.toMatchObject({ code: 'UNTRUSTED_BUNDLE', message: expect.stringContaining('is not signed') });
    expect(await blobsIn(store('wrong-key'))).toBe(0);
    expect(await blobsIn(store('unsigned'))).toBe(0);
    const r = await importBundle(unsigned, store('allowed'), undefined, undefined, await policy([`${key}.pub`], true));
    expect(r.warning).toMatch(/is not signed; imported anyway \(--allow-unsigned\)/);
    expect(await blobsIn(store('allowed'))).toBeGreaterThan(0);
  });

  it('a bundle.json changed after signing is refused even with --allow-unsigned; a changed index.json or blob is refused by what the signed bundle.json names', async () => {
    const trusted = await policy([`${key}.pub`], true);
    const d = JSON.parse(entries[1].data.toString());
    d.charts[0].version = '9.9.9';
    const forged = await craft('forged.tar.zst', entries.map((e) => (e.name === 'bundle.json' ? { name: e.name, data: Buffer.from(JSON.stringify(d, null, 2)) } : e)));
    await expect(importBundle(forged, store('forged'), undefined, undefined, trusted)).rejects.toMatchObject({ code: 'BAD_SIGNATURE', message: expect.stringContaining('it was changed after it was signed') });
    expect(await blobsIn(store('forged'))).toBe(0);

    const index = JSON.parse(entries[3].data.toString());
    index.manifests[0].annotations['org.opencontainers.image.ref.name'] = 'docker.io/library/evil:latest';
    const retagged = await craft('retagged.tar.zst', entries.map((e) => (e.name === 'index.json' ? { name: e.name, data: Buffer.from(JSON.stringify(index)) } : e)));
    await expect(importBundle(retagged, store('retagged'), undefined, undefined, trusted)).rejects.toMatchObject({ code: 'BAD_BUNDLE', message: expect.stringContaining('is not the one bundle.json names') });

    // One more blob (honest totals would need a new bundle.json, which the signature then refuses).
    const last = entries.at(-1)!;
    const flipped = Buffer.from(last.data);
    flipped[0] ^= 1;
    const swapped = await craft('swapped.tar.zst', [...entries.slice(0, -1), { name: `blobs/sha256/${sha(flipped)}`, data: flipped }]);
    await expect(importBundle(swapped, store('swapped'), undefined, undefined, trusted)).rejects.toMatchObject({ code: 'BAD_BUNDLE', message: expect.stringContaining('bundle.json does not list it') });
    expect(await blobsIn(store('swapped'))).toBe(0);
  });

  it('a bundle re-signed by another key after a change is still refused where only the first key is trusted', async () => {
    const d = JSON.parse(entries[1].data.toString());
    d.version = 'v2';
    const bytes = Buffer.from(JSON.stringify(d, null, 2));
    const sig = signDescriptor(bytes, await loadSigningKey(other));
    const resigned = entries.map((e) => (e.name === 'bundle.json' ? { name: e.name, data: bytes } : e.name === 'bundle.json.sig' ? { name: e.name, data: sig } : e));
    const path = await craft('resigned.tar.zst', resigned);
    await expect(importBundle(path, store('resigned'), undefined, undefined, await policy([`${key}.pub`]))).rejects.toMatchObject({ code: 'UNTRUSTED_BUNDLE' });
  });

  it('acinstall from refuses an unsigned bundle where a key is trusted before it touches anything', async () => {
    const site = store('from-refused');
    const r = await runAcinstall(['from', unsigned, '-m', '127.0.0.1', '-p', 'not-used', '--store', site, '--trust', `${key}.pub`]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error: .*unsigned\.tar\.zst is not signed; this site trusts sha256:[a-f0-9]{64} \(.*release\.pub\)/m);
    expect(existsSync(site)).toBe(false);
  });

  it('the CLI reads the trust directory, refuses with one error line, and --allow-unsigned warns on stderr', async () => {
    const dir = join(work.dir, 'trust.d');
    await mkdir(dir);
    await cp(`${key}.pub`, join(dir, 'release.pub'));
    const env = { ACPACK_TRUST_DIR: dir };
    const refused = await runAcinstall(['import', unsigned, '--store', store('cli-refused')], { env });
    expect(refused.code).toBe(1);
    expect(refused.stderr.match(/^error: /gm)).toHaveLength(1);
    expect(refused.stderr).toMatch(/is not signed; this site trusts sha256:[a-f0-9]{64} \(.*trust\.d\/release\.pub\)/);
    const ok = await runAcinstall(['import', signed, '--store', store('cli-ok')], { env });
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(/; signed by trusted key sha256:[a-f0-9]{64} \(.*release\.pub\)$/m);
    const allowed = await runAcinstall(['import', unsigned, '--store', store('cli-allowed'), '--allow-unsigned'], { env });
    expect(allowed.code, allowed.stderr).toBe(0);
    expect(allowed.stderr).toMatch(/^warning: .* is not signed; imported anyway \(--allow-unsigned\)/m);
  });
});
