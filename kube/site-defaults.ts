/**
 * What acinstall does on a site unless its cluster file says otherwise, and what it looks for in a
 * bundle: acpack cannot see the site's cluster file, so it checks a bundle against these.
 */

/** The CNI charts acinstall knows; a cluster file picks one (network.cni) and the others are skipped. */
export const CNI_CHARTS = ['hybridnet', 'calico'] as const;
export type Cni = (typeof CNI_CHARTS)[number];

/** network.cni when a cluster file (or the -m/-n flags) names none. */
export const DEFAULT_CNI: Cni = 'hybridnet';

/**
 * The image of lvscare, which keeps the API servers' virtual IP on workers of a cluster with
 * several masters (installer/control-plane.ts): any repository, `…/lvscare:TAG`.
 */
export function isLvscareImage(ref: string): boolean {
  return /\/lvscare:[^/]+$/.test(ref);
}
