import type { Request, Response } from 'express';
import { randomUUID } from 'node:crypto';
import { AcpackError } from '../oci/errors.js';
import { isDigest, sha256, type Digest } from '../oci/digest.js';
import { isIndexType, isManifestType, type ImageIndex, type ImageManifest } from '../oci/media-types.js';
import { manifestShapeProblem } from '../oci/manifest-shape.js';
import type { BlobWriter, ContentStore } from '../oci/store.js';
import { PIECE_SIZE } from '../p2p/pieces.js';
import { childrenOf, type IndexDb } from './index-db.js';
import { sendError } from './errors.js';
import { TAG_RE } from './pull.js';

/** Manifests are small documents; a bigger body is refused before it is read. */
const MAX_MANIFEST_BYTES = 4 << 20;
const UUID_RE = /^[0-9a-f-]{36}$/;

const uploadRef = (uuid: string) => `upload-${uuid}`;

/** Who may go on with an upload: the repository it was started in and the user who started it. */
export interface Pusher {
  repo: string;
  user: string;
}

/**
 * Blob uploads, in every mode of the spec: monolithic (POST or PUT with the body), chunked (PATCH
 * with Content-Range), streamed (PATCH without), out of order (416 + the upload's range), cancel,
 * cross-repository mount. An upload lives in the store's ingest area, so any worker process can
 * take the next chunk, and nothing is visible until its digest is checked. An upload belongs to the
 * repository and user that started it; a committed blob is linked to that repository only.
 */
export class UploadHandlers {
  constructor(
    private readonly store: ContentStore,
    private readonly db: IndexDb,
    /** The repository a client's name means for reading (a mount's `from`), or undefined. */
    private readonly readRepo: (name: string) => string | undefined,
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
  async start(req: Request, res: Response, name: string, who: Pusher): Promise<void> {
    const mount = typeof req.query.mount === 'string' ? req.query.mount : undefined;
    const fromName = typeof req.query.from === 'string' ? req.query.from : undefined;
    // A mount needs the blob linked in the `from` repository; otherwise (or without `from`) this is
    // an ordinary upload, as the spec asks.
    if (mount && fromName && isDigest(mount) && (await this.mount(mount, fromName, who.repo))) return this.created(res, name, mount);
    if (!(await this.checkLength(req, res))) return;
    const uuid = randomUUID();
    const digest = typeof req.query.digest === 'string' ? req.query.digest : undefined;
    if (digest !== undefined) {
      if (!isDigest(digest)) return sendError(res, 'DIGEST_INVALID', `"${digest}" is not a digest`);
      return this.finishWith(req, res, name, uuid, digest, who);
    }
    const w = await this.store.writer(uploadRef(uuid), {}, { meta: { ...who } });
    await w.close();
    this.accepted(res, name, uuid, 0);
  }

  /** Links a blob of repository `fromName` into `repo`, under the store lock; false when `from` does not hold it. */
  private async mount(digest: Digest, fromName: string, repo: string): Promise<boolean> {
    const from = this.readRepo(fromName);
    if (!from || !this.db.blobLinked(from, digest)) return false;
    return this.store.exclusive(async () => {
      if (!(await this.store.has(digest))) return false;
      await this.store.touch(digest);
      this.db.record({ blobLinks: [{ repo, digest }] });
      return true;
    });
  }

  /** GET /v2/<name>/blobs/uploads/<uuid>: where the upload stands. */
  async status(res: Response, name: string, uuid: string, who: Pusher): Promise<void> {
    const size = await this.owned(uuid, who);
    if (size === undefined) return unknownUpload(res, uuid);
    res.status(204);
    res.setHeader('Location', this.location(name, uuid));
    res.setHeader('Range', `0-${Math.max(size - 1, 0)}`);
    res.setHeader('Docker-Upload-UUID', uuid);
    res.end();
  }

  /** PATCH: a chunk (with Content-Range, whose end must match the bytes sent) or a stream (without). */
  async patch(req: Request, res: Response, name: string, uuid: string, who: Pusher): Promise<void> {
    const size = await this.owned(uuid, who);
    if (size === undefined) return unknownUpload(res, uuid);
    const outOfRange = (why: string, at = size) => {
      req.resume();
      res.status(416);
      res.setHeader('Location', this.location(name, uuid));
      res.setHeader('Range', `0-${Math.max(at - 1, 0)}`);
      sendError(res, 'RANGE_INVALID', why);
    };
    const range = req.headers['content-range'];
    let length: number | undefined;
    if (range) {
      const m = /^(?:bytes )?(\d+)-(\d+)$/.exec(range);
      if (!m || Number(m[1]) !== size) return outOfRange(`this chunk starts at ${m?.[1] ?? '?'}, the upload holds ${size} bytes`);
      length = Number(m[2]) - Number(m[1]) + 1;
      const declared = req.headers['content-length'];
      if (length < 1 || (declared !== undefined && Number(declared) !== length)) return outOfRange(`Content-Range ${range} does not match the ${declared ?? '?'} bytes sent`);
    }
    if (!(await this.checkLength(req, res))) return;
    // Append only: the digest is checked once, at the PUT, not re-hashed from disk for every chunk.
    const w = await this.openUpload(uuid, {}, true);
    if (!w) return outOfRange(`another request is writing upload ${uuid}`);
    if (w.offset !== size) {
      // Another request added a chunk between the look above and taking the upload: check the range again.
      await w.close();
      return outOfRange(`upload ${uuid} changed while this chunk waited: it holds ${w.offset} bytes`, w.offset);
    }
    try {
      for await (const chunk of req) await w.write(chunk as Buffer);
      if (length !== undefined && w.offset - size !== length) {
        await w.truncate(size); // the chunk is refused whole
        return outOfRange(`Content-Range ${range} announced ${length} bytes, ${w.offset - size} arrived`);
      }
    } finally {
      await w.close();
    }
    this.accepted(res, name, uuid, w.offset);
  }

  /** PUT ?digest=: the last chunk (maybe empty), then the digest check that makes the blob visible. */
  async finish(req: Request, res: Response, name: string, uuid: string, who: Pusher): Promise<void> {
    if ((await this.owned(uuid, who)) === undefined) return unknownUpload(res, uuid);
    const digest = req.query.digest;
    if (typeof digest !== 'string' || !isDigest(digest)) return sendError(res, 'DIGEST_INVALID', `PUT needs ?digest=sha256:…`);
    if (!(await this.checkLength(req, res))) return;
    await this.finishWith(req, res, name, uuid, digest, who);
  }

  private async finishWith(req: Request, res: Response, name: string, uuid: string, digest: Digest, who: Pusher): Promise<void> {
    const w = await this.openUpload(uuid, { digest, source: `a push to ${name}` }, false, who, true);
    if (!w) {
      req.resume();
      return sendError(res, 'BLOB_UPLOAD_INVALID', `another request is writing upload ${uuid}: wait for it`);
    }
    try {
      for await (const chunk of req) await w.write(chunk as Buffer);
      // A digest the store holds already keeps its file; either way the blob is now linked here.
      await w.commit(() => this.db.record({ blobLinks: [{ repo: who.repo, digest }] }));
      if (w.pieces) this.db.recordPieces(digest, PIECE_SIZE, w.pieces);
    } catch (err) {
      await w.discard();
      if (err instanceof AcpackError && err.code === 'DIGEST_MISMATCH') return sendError(res, 'DIGEST_INVALID', err.message);
      throw err;
    } finally {
      await w.close();
    }
    this.created(res, name, digest);
  }

  async cancel(res: Response, uuid: string, who: Pusher): Promise<void> {
    if ((await this.owned(uuid, who)) === undefined) return unknownUpload(res, uuid);
    try {
      await this.store.abandon(uploadRef(uuid));
    } catch (err) {
      if (err instanceof AcpackError && err.code === 'INGEST_LOCKED') return sendError(res, 'BLOB_UPLOAD_INVALID', `upload ${uuid} is being written: cancel it after that request`);
      throw err;
    }
    res.status(204).end();
  }

  /** The upload's size when it exists and belongs to this repository and user; undefined otherwise (as if unknown). */
  private async owned(uuid: string, who: Pusher): Promise<number | undefined> {
    if (!UUID_RE.test(uuid)) return undefined;
    const meta = await this.store.ingestMeta(uploadRef(uuid));
    if (meta?.repo !== who.repo || meta?.user !== who.user) return undefined;
    return this.store.ingestSize(uploadRef(uuid));
  }

  /** The upload's writer, or undefined while another request (maybe on another worker) writes it. */
  private async openUpload(uuid: string, expected: { digest?: Digest; source?: string }, appendOnly: boolean, meta?: Pusher, pieceHashes = false): Promise<BlobWriter | undefined> {
    try {
      return await this.store.writer(uploadRef(uuid), expected, { appendOnly, meta: meta && { ...meta }, pieceHashes });
    } catch (err) {
      if (err instanceof AcpackError && err.code === 'INGEST_LOCKED') return undefined;
      throw err;
    }
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
    const mediaType = parsed.mediaType ?? String(req.headers['content-type'] ?? '').split(';')[0];
    if (!isManifestType(mediaType) && !isIndexType(mediaType)) return sendError(res, 'MANIFEST_INVALID', `unsupported manifest media type "${mediaType}"`);
    const shape = manifestShapeProblem(parsed, isIndexType(mediaType));
    if (shape) return sendError(res, 'MANIFEST_INVALID', `the ${isIndexType(mediaType) ? 'index' : 'manifest'} ${shape}`);
    const tag = isTag ? reference : undefined;
    // Checked and recorded under the store lock: a gc step cannot take a blob between the two.
    const refused = await this.store.exclusive(async () => {
      const missing = await this.missingReference(parsed, mediaType, repo, name);
      if (missing) return missing;
      await this.store.put(bytes, { digest, source: `a push to ${name}` });
      const c = childrenOf(parsed);
      this.db.record({
        manifests: [{ digest, mediaType, size: bytes.length }],
        tags: tag ? [{ repo, path: repo.slice(repo.indexOf('/') + 1), tag, digest }] : [],
        repoManifests: [{ repo, digest }],
        manifestRefs: [{ manifest: digest, children: [...c.blobs, ...c.manifests] }],
      });
      return undefined;
    });
    if (refused) return sendError(res, refused.code, refused.message, refused.detail);
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

  /**
   * What a manifest names that this repository does not hold, as distribution checks it: a config
   * or layer must be linked here with the size the descriptor says (foreign layers, with `urls`,
   * excepted); an index's children must be manifests of this repository.
   */
  private async missingReference(m: ImageManifest & ImageIndex, mediaType: string, repo: string, name: string): Promise<{ code: 'MANIFEST_BLOB_UNKNOWN' | 'MANIFEST_INVALID'; message: string; detail?: unknown } | undefined> {
    if (isManifestType(mediaType)) {
      for (const d of [m.config, ...m.layers]) {
        if (d.urls?.length) continue;
        const size = this.db.blobLinked(repo, d.digest) ? await this.store.size(d.digest) : undefined;
        if (size === undefined) return { code: 'MANIFEST_BLOB_UNKNOWN', message: `blob ${d.digest} is not in ${name}: push it first`, detail: { digest: d.digest } };
        if (size !== d.size) return { code: 'MANIFEST_INVALID', message: `the manifest says blob ${d.digest} has ${d.size} bytes; it has ${size}` };
      }
      return undefined;
    }
    for (const d of m.manifests) {
      const row = this.db.manifest(repo, d.digest);
      if (!row) return { code: 'MANIFEST_BLOB_UNKNOWN', message: `manifest ${d.digest} is not in ${name}: push it first`, detail: { digest: d.digest } };
      if (row.size !== d.size) return { code: 'MANIFEST_INVALID', message: `the index says manifest ${d.digest} has ${d.size} bytes; it has ${row.size}` };
    }
    return undefined;
  }

  /** DELETE /v2/<name>/manifests/<digest|tag>. */
  async deleteManifest(res: Response, repo: string, reference: string): Promise<void> {
    const gone = await this.store.exclusive(() => (isDigest(reference) ? this.db.deleteManifest(repo, reference) : this.db.deleteTag(repo, reference)));
    if (!gone) return sendError(res, 'MANIFEST_UNKNOWN', `${reference} is not in ${repo}`);
    res.status(202).setHeader('Content-Length', 0);
    res.end();
  }

  /** DELETE /v2/<name>/blobs/<digest>: unlinks the blob from this repository (gc frees what nothing reaches). */
  async deleteBlob(res: Response, repo: string, digest: string): Promise<void> {
    if (!isDigest(digest)) return sendError(res, 'DIGEST_INVALID', `"${digest}" is not a digest`);
    if (!(await this.store.exclusive(() => this.db.unlinkBlob(repo, digest)))) return sendError(res, 'BLOB_UNKNOWN', `blob ${digest} is not in ${repo}`);
    res.status(202).setHeader('Content-Length', 0);
    res.end();
  }
}

function unknownUpload(res: Response, uuid: string): void {
  sendError(res, 'BLOB_UPLOAD_UNKNOWN', `upload ${uuid} is unknown`);
}
