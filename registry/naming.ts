import { parseReference } from '../oci/reference.js';

/**
 * How a request's repository name maps to the upstream name an image was bundled under
 * (`registry.k8s.io/pause`). Three ways, see DESIGN.md "Naming on site":
 *   mirror mode    GET /v2/pause/manifests/3.5?ns=registry.k8s.io   (containerd's hosts.toml mirror)
 *   host-prefixed  /v2/registry.k8s.io/pause/…, a port written with _  (10.0.0.5_5000/app)
 *   re-rooted      /v2/pause/…, when exactly one upstream has that path (sealer style)
 */
export type NameQuery = { kind: 'exact'; repo: string } | { kind: 'path'; path: string };

/** `10.0.0.5:5000` ↔ `10.0.0.5_5000`: a colon is not allowed in a repository name. */
export function encodeHost(host: string): string {
  return host.replace(/:(\d+)$/, '_$1');
}

export function decodeHost(component: string): string {
  return component.replace(/_(\d+)$/, ':$1');
}

function looksLikeHost(component: string): boolean {
  return component.includes('.') || component === 'localhost' || /_\d+$/.test(component);
}

/**
 * The lookups to try for a request, in order. `siteNames`: the names this registry itself goes by
 * (sealer's `sea.hub`): an image named `sea.hub:5000/ecp_builder/x`, asked for in mirror mode, is
 * looked up re-rooted, as `ecp_builder/x`. Any other upstream host is looked up exactly: a path that
 * matches under another host is a different image.
 */
export function queriesFor(name: string, ns?: string, siteNames: string[] = []): NameQuery[] {
  if (ns && siteNames.includes(ns.replace(/:\d+$/, ''))) ns = undefined;
  if (ns) {
    // Normalized the way the image was: docker.io/nginx is docker.io/library/nginx.
    try {
      const r = parseReference(`${ns}/${name}`);
      return [{ kind: 'exact', repo: `${r.host}/${r.repository}` }];
    } catch {
      return [];
    }
  }
  const slash = name.indexOf('/');
  const first = slash > 0 ? name.slice(0, slash) : '';
  const out: NameQuery[] = [];
  if (first && looksLikeHost(first)) {
    const host = decodeHost(first);
    const path = name.slice(slash + 1);
    out.push({ kind: 'exact', repo: `${host}/${host === 'docker.io' && !path.includes('/') ? `library/${path}` : path}` });
  }
  out.push({ kind: 'path', path: name });
  if (!name.includes('/')) out.push({ kind: 'path', path: `library/${name}` });
  return out;
}

/** The name a repository is listed under in the catalog: host-prefixed, port encoded. */
export function catalogName(repo: string): string {
  const slash = repo.indexOf('/');
  return `${encodeHost(repo.slice(0, slash))}${repo.slice(slash)}`;
}

/** Splits a stored reference name (`registry.k8s.io/pause:3.5`) into repository and tag. */
export function splitRefName(refName: string): { repo: string; path: string; tag?: string; digest?: string } {
  const r = parseReference(refName);
  return { repo: `${r.host}/${r.repository}`, path: r.repository, tag: r.tag, digest: r.digest };
}
