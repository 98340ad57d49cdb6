export { importBundle, type ImportResult } from './import.js';
export { createRegistryApp, startRegistry, parseRange, type RegistryOptions, type RunningRegistry } from './server.js';
export { IndexDb } from './index-db.js';
export { queriesFor, catalogName, encodeHost, decodeHost } from './naming.js';
