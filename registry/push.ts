import type { Request, Response } from 'express';
import { randomUUID } from 'node:crypto';
import { AcpackError } from '../oci/errors.js';
import { isDigest, sha256, type Digest } from '../oci/digest.js';
import { isIndexType, isManifestType, type ImageIndex, type ImageManifest } from '../oci/media-types.js';
import type { ContentStore } from '../oci/store.js';
import type { IndexDb } from './index-db.js';
import { sendError } from './errors.js';
import { TAG_RE } from './pull.js';

/** Manifests are small documents; a bigger body is refused before it is read. */
const MAX_MANIFEST_BYTES = 4 << 20;
const UUID_RE = /^[0-9a-f-]{36}$/;

const uploadRef = (uuid: string) => `upload-${uuid}`;

/**
 * Blob uploads, in every mode of the spec: monolithic (POST or PUT with the body), chunked (PATCH
 * with Content-Range), streamed (PATCH without), out of order (416 + the upload's range), cancel,
 * cross-repository mount. An upload lives in the store's ingest area, so any worker process can
 * take the next chunk, and nothing is visible until its digest is checked.
 */
export class UploadHandlers {
  constructor(
    private readonly store: ContentStore,
    private readonly db: IndexDb,
  ) {}

  private location(name: string, uuid: string): string {
    return `/v2/${name}/blobs/uploads/${uuid}`;
  }

  private accepted(res: Response, name: string, uuid: string, offset: number): void {
    res.status(202);
    res.setHeader('Location', this.location(name, uuid));
    res.setHeader('Docker-Upload-UUID', uuid);
    res.setHeader('Range', `0-${Math.max(offset - 1, 0)}`);
    res.setHeader('Content-Length', 0);
    res.end();
  }

  private created(res: Response, name: string, digest: Digest): void {
    res.status(201);
    res.setHeader('Location', `/v2/${name}/blobs/${digest}`);
    res.setHeader('Docker-Content-Digest', digest);
    res.setHeader('Content-Length', 0);
    res.end();
  }

  /** POST /v2/<name>/blobs/uploads/[?digest=…][?mount=…&from=…] */
  async start(req: Request, res: Response, name: string): Promise<void> {
    const mount = typeof req.query.mount === 'string' ? req.query.mount : undefined;
    if (mount && isDigest(mount) && (await this.store.has(mount))) {
      await this.store.touch(mount); // about to be named by a manifest: a collection must spare it
      return this.created(res, name, mount);
    }
    if (!(await this.checkLength(req, res))) return;
    const uuid = randomUUID();
    const digest = typeof req.query.digest === 'string' ? req.query.digest : undefined;
    if (digest !== undefined) {
      if (!isDigest(digest)) return sendError(res, 'DIGEST_INVALID', `"${digest}" is not a digest`);
      return this.finishWith(req, res, name, uuid, digest);
    }
    const w = await this.store.writer(uploadRef(uuid), {});
    await w.close();
    this.accepted(res, name, uuid, 0);
  }

  /** GET /v2/<name>/blobs/uploads/<uuid>: where the upload stands. */
  async status(res: Response, name: string, uuid: string): Promise<void> {
    const size = await this.existing(uuid);
    if (size === undefined) return sendError(res, 'BLOB_UPLOAD_UNKNOWN', `upload ${uuid} is unknown`);
    res.status(204);
    res.setHeader('Location', this.location(name, uuid));
    res.setHeader('Range', `0-${Math.max(size - 1, 0)}`);
    res.setHeader('Docker-Upload-UUID', uuid);
    res.end();
  }

  /** PATCH: a chunk (with Content-Range) or a stream (without). */
  async patch(req: Request, res: Response, name: string, uuid: string): Promise<void> {
    const size = await this.existing(uuid);
    if (size === undefined) return sendError(res, 'BLOB_UPLOAD_UNKNOWN', `upload ${uuid} is unknown`);
    const range = req.headers['content-range'];
    if (range) {
      const m = /^(?:bytes )?(\d+)-(\d+)$/.exec(range);
      if (!m || Number(m[1]) !== size) {
        res.status(416);
        res.setHeader('Location', this.location(name, uuid));
        res.setHeader('Range', `0-${Math.max(size - 1, 0)}`);
        return sendError(res, 'RANGE_INVALID', `this chunk starts at ${m?.[1] ?? '?'}, the upload holds ${size} bytes`);
      }
    }
    if (!(await this.checkLength(req, res))) return;
    // Append only: the digest is checked once, at the PUT, not re-hashed from disk for every chunk.
    const w = await this.store.writer(uploadRef(uuid), {}, { appendOnly: true });
    try {
      for await (const chunk of req) await w.write(chunk as Buffer);
    } finally {
      await w.close();
    }
    this.accepted(res, name, uuid, w.offset);
  }

  /** PUT ?digest=: the last chunk (maybe empty), then the digest check that makes the blob visible. */
  async finish(req: Request, res: Response, name: string, uuid: string): Promise<void> {
    if ((await this.existing(uuid)) === undefined) return sendError(res, 'BLOB_UPLOAD_UNKNOWN', `upload ${uuid} is unknown`);
    const digest = req.query.digest;
    if (typeof digest !== 'string' || !isDigest(digest)) return sendError(res, 'DIGEST_INVALID', `PUT needs ?digest=sha256:…`);
    if (!(await this.checkLength(req, res))) return;
    await this.finishWith(req, res, name, uuid, digest);
  }

  private async finishWith(req: Request, res: Response, name: string, uuid: string, digest: Digest): Promise<void> {
    const w = await this.store.writer(uploadRef(uuid), { digest, source: `a push to ${name}` });
    try {
      for await (const chunk of req) await w.write(chunk as Buffer);
      await w.commit();
    } catch (err) {
      await w.discard();
      if (err instanceof AcpackError && err.code === 'DIGEST_MISMATCH') return sendError(res, 'DIGEST_INVALID', err.message);
      throw err;
    } finally {
      await w.close();
    }
    this.created(res, name, digest);
  }

  async cancel(res: Response, uuid: string): Promise<void> {
    if ((await this.existing(uuid)) === undefined) return sendError(res, 'BLOB_UPLOAD_UNKNOWN', `upload ${uuid} is unknown`);
    await this.store.abandon(uploadRef(uuid));
    res.status(204).end();
  }

  private async existing(uuid: string): Promise<number | undefined> {
    return UUID_RE.test(uuid) ? this.store.ingestSize(uploadRef(uuid)) : undefined;
  }

  /** An absurd Content-Length (more than the disk can take) is refused before a byte is read. */
  private async checkLength(req: Request, res: Response): Promise<boolean> {
    const declared = req.headers['content-length'];
    if (declared === undefined) return true;
    const n = Number(declared);
    if (!Number.isSafeInteger(n) || n < 0 || n > (await this.store.freeBytes())) {
      sendError(res, 'SIZE_INVALID', `Content-Length ${declared} is more than this registry can store`);
      req.resume();
      return false;
    }
    return true;
  }

  /** PUT /v2/<name>/manifests/<tag|digest>: exact bytes kept, every reference checked. */
  async putManifest(req: Request, res: Response, name: string, repo: string, reference: string): Promise<void> {
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > MAX_MANIFEST_BYTES) {
      req.resume();
      return sendError(res, 'SIZE_INVALID', `a manifest of ${declared} bytes is larger than ${MAX_MANIFEST_BYTES}`);
    }
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const c of req) {
      size += (c as Buffer).length;
      if (size > MAX_MANIFEST_BYTES) return sendError(res, 'SIZE_INVALID', `the manifest is larger than ${MAX_MANIFEST_BYTES} bytes`);
      chunks.push(c as Buffer);
    }
    const bytes = Buffer.concat(chunks);
    const digest = sha256(bytes);
    const isTag = !reference.includes(':');
    if (isTag ? !TAG_RE.test(reference) : reference !== digest) {
      return sendError(res, isTag ? 'MANIFEST_INVALID' : 'DIGEST_INVALID', isTag ? `"${reference}" is not a valid tag` : `the body hashes to ${digest}, not ${reference}`);
    }
    let parsed: ImageManifest & ImageIndex;
    try {
      parsed = JSON.parse(bytes.toString('utf8'));
    } catch {
      return sendError(res, 'MANIFEST_INVALID', 'the manifest is not JSON');
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return sendError(res, 'MANIFEST_INVALID', 'the manifest is not a JSON object');
    for (const list of ['layers', 'manifests'] as const) {
      if (parsed[list] !== undefined && !Array.isArray(parsed[list])) return sendError(res, 'MANIFEST_INVALID', `"${list}" is not an array`);
    }
    const mediaType = parsed.mediaType ?? String(req.headers['content-type'] ?? '').split(';')[0];
    if (!isManifestType(mediaType) && !isIndexType(mediaType)) return sendError(res, 'MANIFEST_INVALID', `unsupported manifest media type "${mediaType}"`);
    if (isManifestType(mediaType)) {
      for (const d of [parsed.config, ...(parsed.layers ?? [])]) {
        if (!d?.digest || !isDigest(d.digest)) return sendError(res, 'MANIFEST_INVALID', 'the manifest has a descriptor without a valid digest');
        if (!(await this.store.has(d.digest))) return sendError(res, 'MANIFEST_BLOB_UNKNOWN', `blob ${d.digest} is not in this registry: push it first`, { digest: d.digest });
      }
    } else {
      for (const d of parsed.manifests ?? []) {
        if (typeof d?.digest !== 'string' || !isDigest(d.digest)) return sendError(res, 'MANIFEST_INVALID', 'the index has a child without a valid digest');
        if (!this.db.manifest(repo, d.digest)) return sendError(res, 'MANIFEST_BLOB_UNKNOWN', `manifest ${d.digest} is not in ${name}: push it first`, { digest: d.digest });
      }
    }
    await this.store.put(bytes, { digest, source: `a push to ${name}` });
    this.db.putManifest(repo, repo.slice(repo.indexOf('/') + 1), { digest, mediaType, size: bytes.length }, isTag ? reference : undefined);
    res.status(201);
    res.setHeader('Location', `/v2/${name}/manifests/${digest}`);
    res.setHeader('Docker-Content-Digest', digest);
    if (parsed.subject?.digest && isDigest(parsed.subject.digest)) {
      const artifactType = parsed.artifactType ?? (isManifestType(mediaType) ? parsed.config?.mediaType : undefined);
      this.db.putReferrer(repo, parsed.subject.digest, {
        mediaType,
        digest,
        size: bytes.length,
        ...(artifactType ? { artifactType } : {}),
        ...(parsed.annotations ? { annotations: parsed.annotations } : {}),
      });
      res.setHeader('OCI-Subject', parsed.subject.digest);
    }
    res.setHeader('Content-Length', 0);
    res.end();
  }

  /** DELETE /v2/<name>/manifests/<digest|tag>. */
  deleteManifest(res: Response, repo: string, reference: string): void {
    const gone = isDigest(reference) ? this.db.deleteManifest(repo, reference) : this.db.deleteTag(repo, reference);
    if (!gone) return sendError(res, 'MANIFEST_UNKNOWN', `${reference} is not in ${repo}`);
    res.status(202).setHeader('Content-Length', 0);
    res.end();
  }
}
