import { describe, expect, it } from 'vitest';
import { Ajv } from 'ajv';
import { bundleJsonSchema, indexJsonSchema } from '../../oci/bundle-format.js';
import { imageIndexSchema, imageManifestSchema } from '../../oci/manifest-shape.js';
import { clusterSchema } from '../../installer/cluster-spec.js';
import { bundleManifestSchema } from '../../manifests/schema.js';
import { lazyValidator } from '../../oci/json-schema.js';

// lazyValidator compiles without checking schemas against the meta-schema: checked here, once.
describe('our JSON schemas', () => {
  it.each([
    ['bundle.json', bundleJsonSchema],
    ['index.json', indexJsonSchema],
    ['an image manifest', imageManifestSchema],
    ['an image index', imageIndexSchema],
    ['a cluster file', clusterSchema],
    ['a bundle manifest', bundleManifestSchema],
  ])('%s: valid JSON Schema, in strict mode', (_what, schema) => {
    expect(() => new Ajv({ strict: true, validateSchema: true }).compile(schema)).not.toThrow();
  });

  it('a lazy validator tells what is wrong, call after call', () => {
    const v = lazyValidator<{ a: number }>({ type: 'object', required: ['a'], properties: { a: { type: 'integer' } } });
    expect(v({ a: 1 })).toBe(true);
    expect(v({ a: 'x' })).toBe(false);
    expect(v.errors?.[0]).toMatchObject({ instancePath: '/a', message: 'must be integer' });
    expect(v({ a: 2 })).toBe(true);
    expect(v.errors).toBeNull();
  });
});
