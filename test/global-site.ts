import { buildSite } from '../scripts/build-site.js';
import { SITE_DIR } from '../runtime/site-runtime.js';
import { ARCHES } from '../arch/platform.js';
import { gzippedExecutable } from '../packer/site-runtime.js';

/**
 * acinstall is tested as it ships: its bundled file on the pinned Node release, and the single
 * executables. They are rebuilt here when the sources changed since `npm run build`, and gzipped
 * for the runtime a cluster bundle carries (half a minute per arch, which a test's own time would
 * otherwise pay in the first such bundle).
 */
export default async function setup(): Promise<void> {
  await buildSite(SITE_DIR);
  await Promise.all(ARCHES.map(gzippedExecutable));
}
