/**
 * Who made a bundle: an ed25519 signature over the exact bytes of its bundle.json, which names
 * index.json's digest and every blob's (format 2), so that one signature covers every byte of every
 * volume. Keys are plain PEM files (PKCS#8 private, SPKI public), as openssl writes and reads them;
 * a key is known by the sha256 of its public key's DER, what `openssl pkey -pubin -outform DER |
 * sha256sum` prints. docs/bundle-format.md says how this relates to cosign.
 */
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { AcpackError } from './errors.js';

/** bundle.json.sig, as the bundle carries it. */
export interface BundleSignature {
  algorithm: 'ed25519';
  /** `sha256:` and the hex sha256 of the signing key's public key (SPKI DER). */
  keyId: string;
  /** base64 of the 64-byte signature over bundle.json's bytes. */
  signature: string;
}

/** Where a site keeps the public keys it trusts (`*.pub`); ACPACK_TRUST_DIR moves it (tests). */
export function trustDir(): string {
  return process.env.ACPACK_TRUST_DIR ?? '/etc/acpack/trust';
}

export function keyIdOf(key: KeyObject): string {
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  return `sha256:${createHash('sha256').update(pub.export({ type: 'spki', format: 'der' })).digest('hex')}`;
}

/** `acpack keygen -o NAME`: NAME (the private key, mode 0600) and NAME.pub. Never overwrites a key. */
export async function generateKey(name: string): Promise<{ keyId: string; privatePath: string; publicPath: string }> {
  const publicPath = `${name}.pub`;
  for (const p of [name, publicPath]) {
    if (existsSync(p)) throw new AcpackError('KEY_EXISTS', `${p} exists: acpack keygen does not overwrite a key (a lost private key cannot sign again); choose another name`);
  }
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  await writeFile(name, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600, flag: 'wx' });
  await writeFile(publicPath, publicKey.export({ type: 'spki', format: 'pem' }), { mode: 0o644, flag: 'wx' });
  return { keyId: keyIdOf(publicKey), privatePath: name, publicPath };
}

async function readKeyFile(path: string, what: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new AcpackError('BAD_KEY', `${what} ${path} cannot be read (${code === 'ENOENT' ? 'no such file' : code})`, { cause: err });
  }
}

/** The private key `acpack bundle --sign` signs with. */
export async function loadSigningKey(path: string): Promise<KeyObject> {
  let key: KeyObject;
  try {
    key = createPrivateKey(await readKeyFile(path, 'the signing key'));
  } catch (err) {
    if (err instanceof AcpackError) throw err;
    throw new AcpackError('BAD_KEY', `${path} is not a PEM private key (acpack keygen -o NAME writes one)`, { cause: err });
  }
  if (key.asymmetricKeyType !== 'ed25519') throw new AcpackError('BAD_KEY', `${path} is a ${key.asymmetricKeyType} key; bundles are signed with ed25519 keys (acpack keygen -o NAME)`);
  return key;
}

export function signDescriptor(descriptorBytes: Buffer, key: KeyObject): Buffer {
  const sig: BundleSignature = { algorithm: 'ed25519', keyId: keyIdOf(key), signature: sign(null, descriptorBytes, key).toString('base64') };
  return Buffer.from(`${JSON.stringify(sig, null, 2)}\n`);
}

/** bundle.json.sig's fields, or a message saying what is wrong with it. */
export function parseSignature(data: Buffer): BundleSignature | string {
  let sig: Partial<BundleSignature>;
  try {
    sig = JSON.parse(data.toString('utf8')) as Partial<BundleSignature>;
  } catch {
    return 'bundle.json.sig is not JSON';
  }
  if (typeof sig !== 'object' || sig === null) return 'bundle.json.sig is not a JSON object';
  if (sig.algorithm !== 'ed25519') return `bundle.json.sig says algorithm ${JSON.stringify(sig.algorithm)?.slice(0, 40)}; acpack signs and checks ed25519`;
  if (typeof sig.keyId !== 'string' || !/^sha256:[a-f0-9]{64}$/.test(sig.keyId)) return 'bundle.json.sig has no keyId of the form sha256:<64 hex digits>';
  if (typeof sig.signature !== 'string' || Buffer.from(sig.signature, 'base64').length !== 64) return 'bundle.json.sig has no 64-byte base64 signature';
  return sig as BundleSignature;
}

export interface TrustKey {
  keyId: string;
  key: KeyObject;
  /** The file it came from, to name it. */
  from: string;
}

/** The keys given with --trust, and every `*.pub` in the site's trust directory. A key that does not load is an error, not a key less. */
export async function loadTrustKeys(files: string[], dir = trustDir()): Promise<TrustKey[]> {
  const paths = [...files];
  if (existsSync(dir)) paths.push(...(await readdir(dir)).filter((f) => f.endsWith('.pub')).sort().map((f) => join(dir, f)));
  const keys: TrustKey[] = [];
  for (const path of paths) {
    let key: KeyObject;
    try {
      key = createPublicKey(await readKeyFile(path, 'the trust key'));
    } catch (err) {
      if (err instanceof AcpackError) throw err;
      throw new AcpackError('BAD_KEY', `the trust key ${path} is not a PEM public key (acpack keygen writes NAME.pub)`, { cause: err });
    }
    if (key.asymmetricKeyType !== 'ed25519') throw new AcpackError('BAD_KEY', `the trust key ${path} is a ${key.asymmetricKeyType} key; acpack bundles are signed with ed25519`);
    keys.push({ keyId: keyIdOf(key), key, from: path });
  }
  return keys;
}

/** What a bundle's signature says, before any policy. */
export type Origin =
  | { signed: false }
  /** `by`: the trusted key with its keyId, when there is one; its signature was then checked (`valid`). */
  | { signed: true; keyId: string; by?: TrustKey; valid?: boolean };

export function originOf(descriptorBytes: Buffer, sig: BundleSignature | undefined, keys: TrustKey[]): Origin {
  if (!sig) return { signed: false };
  const by = keys.find((k) => k.keyId === sig.keyId);
  if (!by) return { signed: true, keyId: sig.keyId };
  return { signed: true, keyId: sig.keyId, by, valid: verify(null, descriptorBytes, by.key, Buffer.from(sig.signature, 'base64')) };
}

export interface TrustPolicy {
  keys: TrustKey[];
  /** Import an unsigned or untrusted bundle anyway (with a warning) even though keys are configured. */
  allowUnsigned?: boolean;
}

/**
 * The site's decision on a bundle: throws when it is refused, returns the warning to print when it
 * is taken with its origin unchecked (undefined when a trusted key signed it). A signature by a
 * trusted key that does not match is refused whatever the flags: bundle.json changed after signing.
 */
export function judgeOrigin(origin: Origin, policy: TrustPolicy, label: string): string | undefined {
  if (origin.signed && origin.by) {
    if (!origin.valid) throw new AcpackError('BAD_SIGNATURE', `${label}: its bundle.json does not match its signature by ${origin.keyId} (trusted: ${origin.by.from}): it was changed after it was signed`);
    return undefined;
  }
  const what = origin.signed ? `signed by ${origin.keyId}, a key this site does not trust` : 'not signed';
  if (policy.keys.length === 0) {
    return `${label} is ${what}, and no trust key is configured (--trust KEY.pub or ${trustDir()}/*.pub): its origin is unchecked`;
  }
  const trusted = policy.keys.map((k) => `${k.keyId} (${k.from})`).join(', ');
  if (policy.allowUnsigned) return `${label} is ${what}; imported anyway (--allow-unsigned). Trusted: ${trusted}`;
  throw new AcpackError('UNTRUSTED_BUNDLE', `${label} is ${what}; this site trusts ${trusted}. Sign it (acpack bundle --sign KEY) or pass --allow-unsigned to import it anyway`);
}
