export { bundle, lock, formatSummary, bundleDescriptor, type BundleSummary } from './bundle.js';
export { resolveManifestContent, bundleIndex, hostPlatform, type ResolveOptions, type Resolution } from './pack.js';
export { createReporter, reporterMode, type Reporter } from '../ui/progress.js';
export { readLock, lockPath } from './lock.js';
export { runProgram } from '../ui/program.js';
