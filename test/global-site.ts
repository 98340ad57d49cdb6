import { buildSite } from '../scripts/build-site.js';
import { SITE_DIR } from '../runtime/site-runtime.js';

/**
 * acinstall is tested as it ships: its bundled file on the pinned Node release, and the single
 * executables. They are rebuilt here when the sources changed since `npm run build`.
 */
export default async function setup(): Promise<void> {
  await buildSite(SITE_DIR);
}
