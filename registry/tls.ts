import 'reflect-metadata';
import { writeFileAtomic } from '../oci/atomic-file.js';
import * as x509 from '@peculiar/x509';
import { webcrypto } from 'node:crypto';
import { mkdir, readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { AcpackError } from '../oci/errors.js';

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
const DAY = 864e5;

export interface TlsFiles {
  cert: string;
  key: string;
  /** The CA nodes must trust (PEM). */
  ca: string;
}

export function tlsDir(storeRoot: string): string {
  return join(storeRoot, 'tls');
}

async function pemKey(key: CryptoKey): Promise<string> {
  const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', key as webcrypto.CryptoKey));
  return `-----BEGIN PRIVATE KEY-----\n${der.toString('base64').replace(/(.{64})/g, '$1\n').trim()}\n-----END PRIVATE KEY-----\n`;
}

async function importKey(pem: string): Promise<CryptoKey> {
  const der = Buffer.from(pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
  return (await webcrypto.subtle.importKey('pkcs8', der, ALG, true, ['sign'])) as unknown as CryptoKey;
}

async function read(path: string): Promise<string | undefined> {
  return readFile(path, 'utf8').catch(() => undefined);
}

/**
 * `--tls auto`: a site CA (made once, kept in the store) and a server certificate for the names
 * nodes use to reach this registry. A certificate that already covers the names is reused.
 */
export async function ensureTls(storeRoot: string, names: { hostnames: string[]; ips: string[] }): Promise<TlsFiles> {
  const dir = tlsDir(storeRoot);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  for (const ip of names.ips) if (!isIP(ip)) throw new AcpackError('BAD_ARGUMENT', `--ip ${ip} is not an IP address`);
  const hostnames = [...new Set(['localhost', ...names.hostnames])];
  const ips = [...new Set(['127.0.0.1', ...names.ips])];

  let caPem = await read(join(dir, 'ca.crt'));
  let caKeyPem = await read(join(dir, 'ca.key'));
  if (!caPem || !caKeyPem) {
    const keys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as unknown as CryptoKeyPair;
    const ca = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: randomSerial(),
      name: 'CN=acpack site registry CA',
      notBefore: new Date(Date.now() - DAY),
      notAfter: new Date(Date.now() + 3650 * DAY),
      keys,
      signingAlgorithm: ALG,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      ],
    });
    caPem = ca.toString('pem');
    caKeyPem = await pemKey(keys.privateKey);
    await writeFileAtomic(join(dir, 'ca.key'), caKeyPem, 0o600);
    await writeFileAtomic(join(dir, 'ca.crt'), caPem, 0o644);
  }

  const existing = await read(join(dir, 'server.crt'));
  const existingKey = await read(join(dir, 'server.key'));
  if (existing && existingKey && covers(new x509.X509Certificate(existing), hostnames, ips)) return { cert: existing, key: existingKey, ca: caPem };

  const ca = new x509.X509Certificate(caPem);
  const keys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as unknown as CryptoKeyPair;
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerial(),
    subject: `CN=${hostnames[hostnames.length - 1]}`,
    issuer: ca.subject,
    notBefore: new Date(Date.now() - DAY),
    notAfter: new Date(Date.now() + 825 * DAY),
    signingKey: await importKey(caKeyPem),
    publicKey: keys.publicKey,
    signingAlgorithm: ALG,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension([...hostnames.map((value) => ({ type: 'dns' as const, value })), ...ips.map((value) => ({ type: 'ip' as const, value }))]),
    ],
  });
  const certPem = `${cert.toString('pem')}\n${caPem}`;
  const keyPem = await pemKey(keys.privateKey);
  await writeFileAtomic(join(dir, 'server.key'), keyPem, 0o600);
  await writeFileAtomic(join(dir, 'server.crt'), certPem, 0o644);
  return { cert: certPem, key: keyPem, ca: caPem };
}

function covers(cert: x509.X509Certificate, hostnames: string[], ips: string[]): boolean {
  if (cert.notAfter.getTime() < Date.now() + 30 * DAY) return false;
  const san = cert.getExtension(x509.SubjectAlternativeNameExtension);
  if (!san) return false;
  const have = new Set(san.names.items.map((n) => `${n.type}:${n.value}`));
  return hostnames.every((h) => have.has(`dns:${h}`)) && ips.every((ip) => have.has(`ip:${ip}`));
}

function randomSerial(): string {
  const b = webcrypto.getRandomValues(new Uint8Array(12));
  b[0] &= 0x7f;
  return Buffer.from(b).toString('hex');
}
