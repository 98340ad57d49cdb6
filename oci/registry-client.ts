import type { Dispatcher } from 'undici';
import type { Readable } from 'node:stream';
import { AcpackError, formatBytes } from './errors.js';
import { sha256, shortDigest, type Digest, isDigest } from './digest.js';
import { apiHost, formatReference, isLoopbackHost, type Reference } from './reference.js';
import { MANIFEST_ACCEPT, isSchema1 } from './media-types.js';
import { DockerCredentials, mayReceiveCredentials, parseChallenge, type CredentialSource, type Credentials } from './auth.js';
import { agentFor, DEFAULT_RETRY, fetchWithRetry, type HttpResponse, type RetryPolicy } from './http.js';
import type { BlobWriter } from './store.js';
import { downloadInto } from './download.js';

/** Manifests are small; anything bigger is not a manifest and is not read into memory. */
const MAX_MANIFEST_BYTES = 4 << 20;
/** A token response is a few KiB of JSON (a JWT or two): a realm that sends more is cut off here. */
export const MAX_TOKEN_BYTES = 1 << 20;

export interface RegistryClientOptions {
  /** Hosts reached over plain HTTP or with an unverified certificate. Loopback hosts always are. */
  insecure?: Iterable<string>;
  /** Default: docker's and podman's auth files and credential helpers (`DockerCredentials`). */
  credentials?: CredentialSource;
  /** Per registry host, token services on other hosts that may receive its credentials (the manifest's `tokenHosts`). */
  tokenHosts?: Map<string, string[]>;
  retry?: RetryPolicy;
}

export interface FetchedManifest {
  bytes: Buffer;
  mediaType: string;
  digest: Digest;
}

interface HostState {
  base?: string;
  dispatcher: Dispatcher;
  tokens: Map<string, string>;
  basic?: string;
}

/**
 * An OCI distribution client: anonymous, bearer-token (the WWW-Authenticate dance) and basic auth,
 * redirects, retries, Range-resumed blob downloads written into the content store, and pushes
 * (acinstall push) of blobs and manifests.
 */
export class RegistryClient {
  private readonly insecure: Set<string>;
  private readonly credentials: CredentialSource;
  private readonly tokenHosts: Map<string, string[]>;
  private readonly retry: RetryPolicy;
  private readonly hosts = new Map<string, HostState>();

  constructor(opts: RegistryClientOptions = {}) {
    this.insecure = new Set(opts.insecure ?? []);
    this.credentials = opts.credentials ?? new DockerCredentials();
    this.tokenHosts = opts.tokenHosts ?? new Map();
    this.retry = opts.retry ?? DEFAULT_RETRY;
  }

  /** GETs a manifest by tag or digest; checks it against the digest asked for or announced. */
  async getManifest(ref: Reference, digest?: Digest): Promise<FetchedManifest> {
    const target = digest ?? ref.digest ?? ref.tag ?? 'latest';
    const res = await this.send(ref, `manifests/${target}`, { method: 'GET', headers: { accept: MANIFEST_ACCEPT } });
    const name = formatReference(ref);
    if (res.status === 404) {
      await res.discard();
      throw new AcpackError('NOT_FOUND', `${name}: manifest ${target} not found on ${ref.host}`);
    }
    await this.expectOk(res, name);
    const bytes = await res.bytesUpTo(MAX_MANIFEST_BYTES);
    if (!bytes) throw new AcpackError('MANIFEST_TOO_LARGE', `${name}: the manifest is larger than ${formatBytes(MAX_MANIFEST_BYTES)}, more than a manifest can be`);
    const mediaType = manifestMediaType(bytes, res.header('content-type'), res.url);
    if (isSchema1(mediaType)) {
      throw new AcpackError(
        'SCHEMA1',
        `${name} is a Docker schema 1 image, which cannot be stored with its digest; re-push it with a current docker or skopeo to convert it to schema 2`,
      );
    }
    const actual = sha256(bytes);
    const expectedDigest = isDigest(target) ? target : (res.header('docker-content-digest') ?? undefined);
    if (expectedDigest && expectedDigest !== actual) {
      throw new AcpackError(
        'DIGEST_MISMATCH',
        `${name}: the manifest hashes to ${shortDigest(actual)}, but ${ref.host} said ${shortDigest(expectedDigest)}: the source is corrupt or a proxy changed it`,
      );
    }
    return { bytes, mediaType, digest: actual };
  }

  /** The digest a tag points at now (HEAD, falling back to GET when the header is missing). */
  async resolve(ref: Reference): Promise<Digest> {
    const target = ref.tag ?? ref.digest ?? 'latest';
    const res = await this.send(ref, `manifests/${target}`, { method: 'HEAD', headers: { accept: MANIFEST_ACCEPT } });
    const header = res.header('docker-content-digest');
    if (res.ok && header && isDigest(header)) return header;
    return (await this.getManifest(ref)).digest;
  }

  /** Downloads a blob into `writer` (resuming a partial one) and commits it. */
  async fetchBlob(ref: Reference, writer: BlobWriter, onBytes?: (n: number) => void): Promise<void> {
    const digest = writer.expected.digest;
    if (!digest) throw new AcpackError('BAD_DIGEST', 'a registry blob is always fetched by digest');
    const name = `blob ${shortDigest(digest)} of ${formatReference(ref)}`;
    const open = (offset: number) =>
      this.send(ref, `blobs/${digest}`, { method: 'GET', headers: offset > 0 ? { range: `bytes=${offset}-` } : {} });
    await downloadInto(writer, open, name, onBytes);
  }

  /**
   * One request to a repository's API (`path` under /v2/<repository>/, or an absolute URL the
   * registry gave, an upload's Location), authenticated for `access` on the first 401. A body is
   * made by `body()` for each attempt, since a stream is sent only once.
   */
  private async send(
    ref: Reference,
    path: string,
    init: { method: string; headers: Record<string, string>; body?: () => Buffer | Readable },
    access: 'pull' | 'pull,push' = 'pull',
  ): Promise<HttpResponse> {
    const state = await this.hostState(ref.host);
    const scope = `repository:${ref.repository}:${access}`;
    const url = /^https?:\/\//.test(path) ? path : path.startsWith('/') ? `${state.base}${path}` : `${state.base}/v2/${ref.repository}/${path}`;
    const what = `${init.method} ${url}`;
    const attempt = () => {
      const headers = { ...init.headers };
      const token = state.tokens.get(scope);
      if (token) headers.authorization = `Bearer ${token}`;
      else if (state.basic) headers.authorization = `Basic ${state.basic}`;
      return fetchWithRetry(url, { method: init.method, headers, dispatcher: state.dispatcher, ...(init.body ? { body: init.body() } : {}) }, this.retry, what);
    };
    let res = await attempt();
    if (res.status !== 401) return res;
    const challenge = parseChallenge(res.header('www-authenticate') ?? '');
    await res.discard();
    const creds = await this.credentials.get(ref.host);
    let withheldFrom: string | undefined;
    if (challenge?.scheme === 'bearer') {
      const token = await this.fetchToken(ref.host, state, challenge.params, scope, creds);
      state.tokens.set(scope, token.token);
      withheldFrom = token.withheldFrom;
    } else if (challenge?.scheme === 'basic' && creds) {
      // Basic goes to the registry's own URL only; the agent drops it on a redirect to another origin.
      state.basic = Buffer.from(`${creds.username}:${creds.password}`).toString('base64');
    } else {
      throw this.denied(ref, creds);
    }
    res = await attempt();
    if (res.status === 401 || res.status === 403) {
      await res.discard();
      throw this.denied(ref, creds, withheldFrom);
    }
    return res;
  }

  /** Whether the registry has a blob in `ref`'s repository (HEAD). */
  async hasBlob(ref: Reference, digest: Digest): Promise<boolean> {
    const res = await this.send(ref, `blobs/${digest}`, { method: 'HEAD', headers: {} }, 'pull,push');
    await res.discard();
    return res.status === 200;
  }

  /** Whether the registry has a manifest under `reference` (a digest or a tag) in `ref`'s repository. */
  async hasManifest(ref: Reference, reference: string): Promise<Digest | undefined> {
    const res = await this.send(ref, `manifests/${reference}`, { method: 'HEAD', headers: { accept: MANIFEST_ACCEPT } }, 'pull,push');
    await res.discard();
    const digest = res.header('docker-content-digest');
    return res.status === 200 ? ((digest && isDigest(digest) ? digest : reference) as Digest) : undefined;
  }

  /**
   * Uploads a blob to `ref`'s repository: mounted from `mountFrom` (another repository of the same
   * registry that has it) when the registry can, else a POST for an upload and one PUT of the bytes
   * with the digest, which the registry checks.
   */
  async pushBlob(ref: Reference, digest: Digest, size: number, open: () => Readable, mountFrom?: string): Promise<'mounted' | 'uploaded'> {
    const query = mountFrom ? `?mount=${encodeURIComponent(digest)}&from=${encodeURIComponent(mountFrom)}` : '';
    const started = await this.send(ref, `blobs/uploads/${query}`, { method: 'POST', headers: { 'content-length': '0' } }, 'pull,push');
    await started.discard();
    if (started.status === 201) return 'mounted';
    if (started.status !== 202) throw new AcpackError('PUSH_FAILED', `${ref.host}/${ref.repository}: starting the upload of ${shortDigest(digest)} was answered HTTP ${started.status}`);
    const location = started.header('location');
    if (!location) throw new AcpackError('PUSH_FAILED', `${ref.host}/${ref.repository}: the registry started an upload without saying where (no Location)`);
    const url = new URL(location, `https://${apiHost(ref.host)}`);
    url.searchParams.set('digest', digest);
    const target = /^https?:\/\//.test(location) ? url.toString() : `${url.pathname}${url.search}`;
    const put = await this.send(ref, target, { method: 'PUT', headers: { 'content-type': 'application/octet-stream', 'content-length': String(size) }, body: open }, 'pull,push');
    if (put.status !== 201) {
      const text = await put.snippet();
      throw new AcpackError('PUSH_FAILED', `${ref.host}/${ref.repository}: the upload of ${shortDigest(digest)} was answered HTTP ${put.status}${text ? `: ${text}` : ''}`);
    }
    await put.discard();
    return 'uploaded';
  }

  /** PUTs a manifest under `reference` (a tag or its digest). */
  async putManifest(ref: Reference, reference: string, bytes: Buffer, mediaType: string): Promise<void> {
    const res = await this.send(ref, `manifests/${reference}`, { method: 'PUT', headers: { 'content-type': mediaType, 'content-length': String(bytes.length) }, body: () => bytes }, 'pull,push');
    if (res.status !== 201) {
      const text = await res.snippet();
      throw new AcpackError('PUSH_FAILED', `${ref.host}/${ref.repository}:${reference}: the manifest was refused, HTTP ${res.status}${text ? `: ${text}` : ''}`);
    }
    await res.discard();
  }

  /**
   * A bearer token from the realm a challenge names. The registry's credentials go with the request
   * only to a realm they may go to (`mayReceiveCredentials`); elsewhere the token is asked for
   * anonymously (enough for public content), and `withheldFrom` names the realm for the message.
   */
  private async fetchToken(
    host: string,
    state: HostState,
    params: Record<string, string>,
    scope: string,
    creds?: Credentials,
  ): Promise<{ token: string; withheldFrom?: string }> {
    if (!params.realm) throw new AcpackError('AUTH_FAILED', `${host} asked for a bearer token but named no realm`);
    let url: URL;
    try {
      url = new URL(params.realm);
    } catch {
      throw new AcpackError('AUTH_FAILED', `${host} asked for a bearer token at "${params.realm}", which is not a URL`);
    }
    if (params.service) url.searchParams.set('service', params.service);
    url.searchParams.set('scope', scope);
    const send = creds !== undefined && mayReceiveCredentials(url, new URL(state.base!), host, this.tokenHosts.get(host));
    const withheldFrom = creds && !send ? url.host : undefined;
    const headers: Record<string, string> = {};
    if (send) headers.authorization = `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`;
    const res = await fetchWithRetry(url.toString(), { method: 'GET', headers, dispatcher: state.dispatcher }, this.retry, `token from ${url.host}`);
    if (!res.ok) {
      await res.discard();
      const hint = withheldFrom ? `: ${this.withheld(host, withheldFrom)}` : send ? `: check the credentials for ${host}` : '';
      throw new AcpackError('AUTH_FAILED', `${url.host} refused a token for ${scope} (HTTP ${res.status})${hint}`);
    }
    const bytes = await res.bytesUpTo(MAX_TOKEN_BYTES);
    if (!bytes) throw new AcpackError('AUTH_FAILED', `the token from ${url.host} for ${host} is larger than ${formatBytes(MAX_TOKEN_BYTES)}: that is no token; the connection was closed`);
    let body: { token?: unknown; access_token?: unknown };
    try {
      body = JSON.parse(bytes.toString('utf8')) as typeof body;
    } catch {
      throw new AcpackError('AUTH_FAILED', `${url.host} answered the token request for ${host} with something that is not JSON`);
    }
    const token = body?.token ?? body?.access_token;
    if (typeof token !== 'string' || !token) throw new AcpackError('AUTH_FAILED', `${url.host} answered without a token`);
    return { token, withheldFrom };
  }

  private withheld(host: string, realmHost: string): string {
    return `${host} sends token requests to ${realmHost}, another host, so acpack did not send it the credentials for ${host}; if ${realmHost} is ${host}'s token service, list it in the manifest under spec.registries["${host}"].tokenHosts`;
  }

  private denied(ref: Reference, creds?: Credentials, withheldFrom?: string): AcpackError {
    const where = this.credentials.where?.(ref.host) ?? '~/.docker/config.json or REGISTRY_AUTH_FILE';
    let message: string;
    if (withheldFrom) message = `${ref.host} refused access to ${ref.repository}: ${this.withheld(ref.host, withheldFrom)}`;
    else if (creds) message = `${ref.host} refused the credentials for ${ref.repository}: check them in ${where}`;
    else message = `${ref.host} needs credentials for ${ref.repository}: log in (docker login / podman login) or set REGISTRY_AUTH_FILE`;
    return new AcpackError('AUTH_FAILED', message);
  }

  private async expectOk(res: HttpResponse, what: string): Promise<void> {
    if (res.ok) return;
    const text = await res.snippet();
    throw new AcpackError('REGISTRY_ERROR', `${what}: HTTP ${res.status} ${res.statusText}${text ? `: ${text}` : ''}`);
  }

  /**
   * Where a host's API answers. Secure hosts: https. Insecure ones (loopback, configured): https
   * without verification when it answers, else plain http, as docker does.
   */
  private async hostState(host: string): Promise<HostState> {
    let state = this.hosts.get(host);
    if (state?.base) return state;
    const insecure = this.insecure.has(host) || isLoopbackHost(host);
    state = { dispatcher: agentFor(insecure), tokens: new Map() };
    const api = apiHost(host);
    if (!insecure) {
      state.base = `https://${api}`;
    } else {
      state.base = (await answersHttps(api, state.dispatcher)) ? `https://${api}` : `http://${api}`;
    }
    this.hosts.set(host, state);
    return state;
  }
}

async function answersHttps(host: string, dispatcher: Dispatcher): Promise<boolean> {
  try {
    const res = await fetchWithRetry(`https://${host}/v2/`, { method: 'GET', dispatcher }, { attempts: 1, baseDelayMs: 0, maxDelayMs: 0 }, 'probe');
    await res.discard();
    return true;
  } catch {
    return false;
  }
}

/**
 * A manifest's media type: its own `mediaType` field wins over a server's Content-Type (`contentType`;
 * none for a manifest read back from the store, whose own field or shape then says it).
 */
export function manifestMediaType(bytes: Buffer, contentType: string | null, from: string): string {
  try {
    const parsed = JSON.parse(bytes.toString('utf8')) as { mediaType?: string; schemaVersion?: number; manifests?: unknown };
    if (parsed.schemaVersion === 1) return 'application/vnd.docker.distribution.manifest.v1+json';
    if (parsed.mediaType) return parsed.mediaType;
    if (parsed.manifests) return 'application/vnd.oci.image.index.v1+json';
  } catch {
    throw new AcpackError('BAD_MANIFEST', `the manifest from ${from} is not JSON`);
  }
  return (contentType ?? '').split(';')[0].trim() || 'application/vnd.oci.image.manifest.v1+json';
}
