import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

export interface Credentials {
  username: string;
  password: string;
}

/**
 * Reads registry credentials the way docker and podman store them: `REGISTRY_AUTH_FILE`
 * (containers-auth.json), else `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`.
 * Only inline `auth` entries are used; credential helpers would mean running programs.
 */
export function loadCredentials(env: NodeJS.ProcessEnv = process.env): Map<string, Credentials> {
  const files = env.REGISTRY_AUTH_FILE
    ? [env.REGISTRY_AUTH_FILE]
    : [join(env.DOCKER_CONFIG ?? join(homedir(), '.docker'), 'config.json')];
  const out = new Map<string, Credentials>();
  for (const file of files) {
    let parsed: { auths?: Record<string, { auth?: string; username?: string; password?: string }> };
    try {
      parsed = JSON.parse(readFileSync(file, 'utf8'));
    } catch {
      continue;
    }
    for (const [key, entry] of Object.entries(parsed.auths ?? {})) {
      const host = normalizeAuthKey(key);
      if (entry.auth) {
        const decoded = Buffer.from(entry.auth, 'base64').toString('utf8');
        const i = decoded.indexOf(':');
        if (i > 0) out.set(host, { username: decoded.slice(0, i), password: decoded.slice(i + 1) });
      } else if (entry.username && entry.password) {
        out.set(host, { username: entry.username, password: entry.password });
      }
    }
  }
  return out;
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
