import { AcpackError } from './errors.js';
import { isDigest, type Digest } from './digest.js';

/**
 * An image reference, normalized the way docker and containerd do it: `nginx` is
 * `docker.io/library/nginx:latest`. `host` is what users write (docker.io); `apiHost` is where
 * the registry API answers (registry-1.docker.io).
 */
export interface Reference {
  host: string;
  repository: string;
  tag?: string;
  digest?: Digest;
}

const COMPONENT = '[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*';
const REPOSITORY_RE = new RegExp(`^${COMPONENT}(?:/${COMPONENT})*$`);
const TAG_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const HOST_RE = /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?$/;

export const DOCKER_HUB = 'docker.io';

export function parseReference(input: string): Reference {
  const s = input.trim();
  const bad = (why: string) => new AcpackError('BAD_REFERENCE', `"${input}" is not a valid image reference: ${why}`);
  if (!s) throw bad('it is empty');

  let rest = s;
  let digest: Digest | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    const d = rest.slice(at + 1);
    if (!isDigest(d)) throw bad(`"${d}" is not a sha256 digest`);
    digest = d;
    rest = rest.slice(0, at);
  }

  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf('/');
  const colon = rest.lastIndexOf(':');
  if (colon > lastSlash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG_RE.test(tag)) throw bad(`tag "${tag}" may hold only letters, digits, _ . - (at most 128)`);
  }

  let host = DOCKER_HUB;
  let repository = rest;
  const slash = rest.indexOf('/');
  const first = slash >= 0 ? rest.slice(0, slash) : '';
  if (first && (first.includes('.') || first.includes(':') || first === 'localhost' || first.startsWith('['))) {
    host = first;
    repository = rest.slice(slash + 1);
    if (!HOST_RE.test(host)) throw bad(`"${host}" is not a registry host`);
  }
  if (host === 'index.docker.io' || host === 'registry-1.docker.io') host = DOCKER_HUB;
  if (host === DOCKER_HUB && !repository.includes('/')) repository = `library/${repository}`;
  if (!REPOSITORY_RE.test(repository)) {
    throw bad(`repository "${repository}" must be lowercase letters and digits separated by . _ __ - or /`);
  }
  if (!tag && !digest) tag = 'latest';
  const ref: Reference = { host, repository };
  if (tag) ref.tag = tag;
  if (digest) ref.digest = digest;
  return ref;
}

/** The full reference: `registry.k8s.io/pause:3.5`, `host/repo:tag@sha256:…`. */
export function formatReference(r: Reference): string {
  let s = `${r.host}/${r.repository}`;
  if (r.tag) s += `:${r.tag}`;
  if (r.digest) s += `@${r.digest}`;
  return s;
}

/** Where the registry API of a host answers. */
export function apiHost(host: string): string {
  return host === DOCKER_HUB ? 'registry-1.docker.io' : host;
}

export function isLoopbackHost(host: string): boolean {
  const name = host.replace(/:[0-9]+$/, '').replace(/^\[|\]$/g, '');
  return name === 'localhost' || name === '::1' || /^127\.\d+\.\d+\.\d+$/.test(name);
}
