/** JSON schema of a bundle manifest (`kind: Bundle`). Unknown fields are errors: a typo must not silently drop content. */
const platform = { type: 'string', pattern: '^[a-z0-9]+(/[a-z0-9]+){0,2}$' };
const platforms = { type: 'array', items: platform, minItems: 1, uniqueItems: true };
const hex64 = { type: 'string', pattern: '^[a-f0-9]{64}$' };

export const bundleManifestSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['apiVersion', 'kind', 'metadata', 'spec'],
  properties: {
    apiVersion: { const: 'acpack/v1' },
    kind: { const: 'Bundle' },
    metadata: {
      type: 'object',
      additionalProperties: false,
      required: ['name', 'version'],
      properties: {
        name: { type: 'string', pattern: '^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$', maxLength: 128 },
        version: { type: 'string', pattern: '^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}$' },
        description: { type: 'string' },
      },
    },
    spec: {
      type: 'object',
      additionalProperties: false,
      properties: {
        platforms,
        registries: {
          type: 'object',
          additionalProperties: {
            type: 'object',
            additionalProperties: false,
            properties: {
              insecure: { type: 'boolean' },
              // host[:port] of a token service on another host that may receive this registry's credentials
              tokenHosts: { type: 'array', items: { type: 'string', pattern: '^[A-Za-z0-9.\\-]+(:[0-9]+)?$|^\\[[0-9A-Fa-f:.]+\\](:[0-9]+)?$' } },
            },
          },
        },
        images: {
          type: 'array',
          items: {
            anyOf: [
              { type: 'string', minLength: 1 },
              {
                type: 'object',
                additionalProperties: false,
                required: ['ref'],
                properties: { ref: { type: 'string', minLength: 1 }, platforms },
              },
            ],
          },
        },
        imageLists: { type: 'array', items: { type: 'string', minLength: 1 } },
        binaries: {
          type: 'array',
          items: {
            type: 'object',
            additionalProperties: false,
            required: ['name', 'version', 'url'],
            properties: {
              name: { type: 'string', pattern: '^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$' },
              version: { type: 'string', pattern: '^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}$' },
              url: { type: 'string', minLength: 1 },
              sha256: {
                anyOf: [
                  hex64,
                  { type: 'object', additionalProperties: false, minProperties: 1, properties: { amd64: hex64, arm64: hex64 } },
                ],
              },
              platforms,
              install: { type: 'string', pattern: '^/' },
              extract: { type: 'string', pattern: '^/' },
              mode: { type: 'string', pattern: '^0?[0-7]{3}$' },
            },
          },
        },
        charts: {
          type: 'array',
          items: {
            type: 'object',
            additionalProperties: false,
            properties: {
              name: { type: 'string', minLength: 1 },
              version: { type: 'string', minLength: 1 },
              repo: { type: 'string', pattern: '^(https?|file)://' },
              oci: { type: 'string', pattern: '^oci://' },
              path: { type: 'string', minLength: 1 },
              sha256: hex64,
            },
          },
        },
      },
    },
  },
} as const;
