export * from './load.js';
export { bundleManifestSchema } from './schema.js';
