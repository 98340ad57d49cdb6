import type { ErrorObject } from 'ajv';
import { lazyValidator } from './json-schema.js';
import { descriptorSchema } from './bundle-format.js';

/** An image manifest and an index as the OCI image spec (schema 2) shapes them; other fields are allowed. */
export const imageManifestSchema = {
  type: 'object',
  required: ['schemaVersion', 'config', 'layers'],
  properties: { schemaVersion: { const: 2 }, config: descriptorSchema, layers: { type: 'array', items: descriptorSchema }, subject: descriptorSchema },
} as const;
export const imageIndexSchema = {
  type: 'object',
  required: ['schemaVersion', 'manifests'],
  properties: { schemaVersion: { const: 2 }, manifests: { type: 'array', items: descriptorSchema }, subject: descriptorSchema },
} as const;

const validate = { manifest: lazyValidator(imageManifestSchema), index: lazyValidator(imageIndexSchema) };

/**
 * Why a parsed document is not an image manifest (or, with `index`, an index), or undefined. One
 * check for what a bundle carries and what a client pushes to the registry.
 */
export function manifestShapeProblem(m: unknown, index: boolean): string | undefined {
  const v = index ? validate.index : validate.manifest;
  return v(m) ? undefined : schemaProblem(v.errors);
}

/** A schema error as a user reads it: "binaries[0].size must be integer". */
export function schemaProblem(errors: ErrorObject[] | null | undefined): string {
  const e = errors?.[0];
  if (!e) return 'does not have the shape of format v1';
  const path = e.instancePath.replace(/\/(\d+)/g, '[$1]').replace(/\//g, '.').replace(/^\./, '');
  if (e.keyword === 'required') return `${path ? `${path} ` : ''}has no ${(e.params as { missingProperty: string }).missingProperty}`;
  if (e.keyword === 'pattern' && /(digest|manifest|index|chart|source)$/.test(path)) {
    return `${path.includes('[') ? 'has a descriptor without a valid digest: ' : ''}${path} is not a sha256 digest (sha256: and 64 lowercase hex digits)`;
  }
  if (e.keyword === 'const') return `${path} must be ${JSON.stringify((e.params as { allowedValue: unknown }).allowedValue)}`;
  return `${path || 'its top level'} ${e.message ?? 'is malformed'}`;
}
