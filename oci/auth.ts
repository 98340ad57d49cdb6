import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { AcpackError } from './errors.js';

export interface Credentials {
  username: string;
  password: string;
}

/** Where the registry client gets a host's credentials (a plain Map will do in tests). */
export interface CredentialSource {
  get(host: string): Credentials | undefined | Promise<Credentials | undefined>;
  /** Where a host's credentials come from, for messages. */
  where?(host: string): string;
}

interface AuthFile {
  auths?: Record<string, { auth?: string; username?: string; password?: string }>;
  credsStore?: string;
  credHelpers?: Record<string, string>;
}

/** A credential helper gets this long (it may ask a keychain, or a cloud's metadata service). */
const HELPER_TIMEOUT_MS = 60_000;

/**
 * Registry credentials the way docker and podman store them: `REGISTRY_AUTH_FILE`
 * (containers-auth.json), else `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`.
 * As docker does: a host's `credHelpers` entry wins, then `credsStore`, then the inline `auths`
 * entry. A helper is run (`docker-credential-<name> get`, the server on stdin, JSON out) only when a
 * registry asks for credentials, once per host.
 */
export class DockerCredentials implements CredentialSource {
  readonly file: string;
  private readonly config: AuthFile;
  private readonly asked = new Map<string, Promise<Credentials | undefined>>();

  constructor(private readonly env: NodeJS.ProcessEnv = process.env) {
    this.file = env.REGISTRY_AUTH_FILE ?? join(env.DOCKER_CONFIG ?? join(homedir(), '.docker'), 'config.json');
    let parsed: AuthFile = {};
    try {
      parsed = JSON.parse(readFileSync(this.file, 'utf8')) as AuthFile;
    } catch {
      // no file, or not JSON: anonymous, as docker is
    }
    this.config = parsed && typeof parsed === 'object' ? parsed : {};
  }

  private helperFor(host: string): string | undefined {
    for (const [key, helper] of Object.entries(this.config.credHelpers ?? {})) if (normalizeAuthKey(key) === host && helper) return helper;
    return this.config.credsStore || undefined;
  }

  where(host: string): string {
    const helper = this.helperFor(host);
    return helper ? `docker-credential-${helper} (named in ${this.file})` : this.file;
  }

  get(host: string): Promise<Credentials | undefined> {
    let p = this.asked.get(host);
    if (!p) {
      const helper = this.helperFor(host);
      p = helper ? runHelper(helper, host, this.file, this.env) : Promise.resolve(this.inline(host));
      this.asked.set(host, p);
    }
    return p;
  }

  private inline(host: string): Credentials | undefined {
    for (const [key, entry] of Object.entries(this.config.auths ?? {})) {
      if (normalizeAuthKey(key) !== host || !entry) continue;
      if (entry.auth) {
        const decoded = Buffer.from(entry.auth, 'base64').toString('utf8');
        const i = decoded.indexOf(':');
        if (i > 0) return { username: decoded.slice(0, i), password: decoded.slice(i + 1) };
      } else if (entry.username && entry.password) {
        return { username: entry.username, password: entry.password };
      }
    }
    return undefined;
  }
}

/** What docker hands a helper for a host: Docker Hub keeps its historical server URL. */
function helperServer(host: string): string {
  return host === 'docker.io' ? 'https://index.docker.io/v1/' : host;
}

/** `docker-credential-<name> get`, as docker runs it; "not found" is no credentials, as in docker. */
function runHelper(helper: string, host: string, file: string, env: NodeJS.ProcessEnv): Promise<Credentials | undefined> {
  const program = `docker-credential-${helper}`;
  return new Promise((resolve, reject) => {
    const child = execFile(program, ['get'], { env, timeout: HELPER_TIMEOUT_MS, maxBuffer: 64 << 10 }, (err, stdout, stderr) => {
      if (err) {
        const e = err as NodeJS.ErrnoException & { killed?: boolean; code?: string | number };
        if (e.code === 'ENOENT') {
          return reject(
            new AcpackError('AUTH_HELPER', `${file} sends the credentials for ${host} to the helper "${helper}", but ${program} is not on the PATH: install it, or remove that credsStore/credHelpers entry`),
          );
        }
        const said = `${stdout}`.trim() || `${stderr}`.trim();
        if (/credentials not found/i.test(said)) return resolve(undefined);
        const why = e.killed ? `did not answer within ${HELPER_TIMEOUT_MS / 1000} s` : `failed${typeof e.code === 'number' ? ` (exit ${e.code})` : ''}${said ? `: ${said.slice(0, 300)}` : ''}`;
        return reject(new AcpackError('AUTH_HELPER', `${program} get (named in ${file}) ${why}, asked for ${host}`));
      }
      let answer: { Username?: unknown; Secret?: unknown };
      try {
        answer = JSON.parse(stdout) as typeof answer;
      } catch {
        return reject(new AcpackError('AUTH_HELPER', `${program} get (named in ${file}) answered for ${host} with something that is not JSON`));
      }
      if (typeof answer?.Secret !== 'string' || typeof answer.Username !== 'string' || !answer.Secret) return resolve(undefined);
      if (answer.Username === '<token>') {
        // An OAuth2 refresh token (docker's "identity token"): it is traded at the token service by a flow acpack does not have.
        return reject(
          new AcpackError('AUTH_HELPER', `${program} holds an identity token for ${host}, which acpack cannot use: give acpack a username and password (or access token) for ${host} in an auth file named by REGISTRY_AUTH_FILE`),
        );
      }
      resolve({ username: answer.Username, password: answer.Secret });
    });
    child.stdin?.on('error', () => {}); // a helper that exits without reading: its answer says why
    child.stdin?.end(helperServer(host));
  });
}

/** `https://index.docker.io/v1/` → `docker.io`; `https://host:5000` → `host:5000`. */
function normalizeAuthKey(key: string): string {
  const host = key.replace(/^https?:\/\//, '').replace(/\/.*$/, '');
  return host === 'index.docker.io' || host === 'registry-1.docker.io' ? 'docker.io' : host;
}

export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/** Parses `Bearer realm="https://auth",service="registry",scope="repository:x:pull"`. */
export function parseChallenge(header: string): Challenge | undefined {
  const m = /^\s*(\w+)\s*(.*)$/s.exec(header);
  if (!m) return undefined;
  const params: Record<string, string> = {};
  const re = /([\w-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))/g;
  for (let p = re.exec(m[2]); p; p = re.exec(m[2])) {
    params[p[1].toLowerCase()] = p[2] !== undefined ? p[2].replace(/\\(.)/g, '$1') : p[3];
  }
  return { scheme: m[1].toLowerCase(), params };
}

/** Token services on another host that are known to be their registry's: Docker Hub's. */
const KNOWN_TOKEN_HOSTS: Record<string, string[]> = { 'docker.io': ['auth.docker.io'] };

/**
 * Whether a registry's credentials may go to the token realm it names: a realm on the registry's own
 * host and port (the effective port: `https://h` is `h:443`), Docker Hub's auth.docker.io, or a host
 * the user listed for that registry. Anything else (a realm on another host, or another port of the
 * same host, where any local user may listen) gets no credentials: a tampered or redirected
 * challenge must not collect them.
 */
export function mayReceiveCredentials(realm: URL, registryBase: URL, registryHost: string, configured: readonly string[] = []): boolean {
  if (realm.hostname === registryBase.hostname && effectivePort(realm) === effectivePort(registryBase)) return true;
  const allowed = [...(KNOWN_TOKEN_HOSTS[registryHost] ?? []), ...configured].map((h) => h.toLowerCase());
  return allowed.includes(realm.host.toLowerCase()) || allowed.includes(`${realm.hostname}:${effectivePort(realm)}`.toLowerCase());
}

function effectivePort(u: URL): string {
  return u.port || (u.protocol === 'https:' ? '443' : u.protocol === 'http:' ? '80' : '');
}
