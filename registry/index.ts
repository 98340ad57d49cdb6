export { importBundle, type ImportResult } from './import.js';
export { createRegistryApp, startRegistry, type RegistryOptions, type RunningRegistry } from './server.js';
export { parseRange } from './pull.js';
export { IndexDb } from './index-db.js';
export { queriesFor, catalogName, encodeHost, decodeHost } from './naming.js';
export { Htpasswd, serveLoginThrottle } from './auth.js';
export { ensureTls, tlsDir, type TlsFiles } from './tls.js';
export { serveClusterMetrics } from './metrics.js';
export { collectGarbage, deleteBlob, sweepUploads } from './gc.js';
