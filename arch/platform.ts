import { AcpackError } from '../oci/errors.js';

/** An OCI platform, as in an image index entry. */
export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

export const ARCHES = ['amd64', 'arm64'] as const;
export type Arch = (typeof ARCHES)[number];

const UNAME: Record<string, Arch> = { x86_64: 'amd64', amd64: 'amd64', aarch64: 'arm64', arm64: 'arm64' };

/** Maps `uname -m` output (x86_64, aarch64) to the OCI architecture name. */
export function archFromUname(machine: string): Arch {
  const arch = UNAME[machine.trim()];
  if (!arch) throw new AcpackError('UNSUPPORTED_ARCH', `machine type "${machine.trim()}" is not supported: acpack knows ${ARCHES.join(', ')}`);
  return arch;
}

/** The `uname -m` spelling of an arch, for URL templates that use it (rpm names, tarballs). */
export function unameOf(arch: Arch): string {
  return arch === 'amd64' ? 'x86_64' : 'aarch64';
}

/** The arch this process runs on. */
export function nodeArch(): Arch {
  return archFromUname(process.arch === 'x64' ? 'x86_64' : process.arch);
}

export function isArch(s: string): s is Arch {
  return (ARCHES as readonly string[]).includes(s);
}

/** Parses `linux/arm64`, `linux/arm64/v8` or a bare `arm64` (meaning linux). */
export function parsePlatform(s: string): Platform {
  const parts = s.trim().split('/');
  if (parts.length === 1) parts.unshift('linux');
  const [os, architecture, variant] = parts;
  if (parts.length > 3 || !os || !architecture) {
    throw new AcpackError('BAD_PLATFORM', `"${s}" is not a platform: write os/arch, e.g. linux/amd64 or linux/arm64`);
  }
  const p: Platform = { os, architecture };
  if (variant) p.variant = variant;
  return p;
}

export function formatPlatform(p: Platform): string {
  return [p.os, p.architecture, p.variant].filter(Boolean).join('/');
}

/**
 * Whether an index entry's platform satisfies a wanted one. A wanted platform without a variant takes
 * any variant (arm64 images are published as arm64/v8 or with no variant at all); amd64 "v1" is treated
 * the same way.
 */
export function platformMatches(have: Platform, want: Platform): boolean {
  if (have.os !== want.os || have.architecture !== want.architecture) return false;
  return !want.variant || have.variant === want.variant;
}

/** Parses the `--arch amd64,arm64` / `--platform linux/arm64` flag value into a sorted, unique list. */
export function parsePlatformList(list: string): Platform[] {
  const out = new Map<string, Platform>();
  for (const item of list.split(',').map((s) => s.trim()).filter(Boolean)) {
    const p = parsePlatform(item);
    out.set(formatPlatform(p), p);
  }
  if (out.size === 0) throw new AcpackError('BAD_PLATFORM', `no platform in "${list}"`);
  return [...out.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([, p]) => p);
}

/** Expands `{arch}`, `{uname}` (x86_64/aarch64) and `{version}` in a URL or path template. */
export function expandTemplate(template: string, vars: { arch: Arch; version?: string }): string {
  return template
    .replaceAll('{arch}', vars.arch)
    .replaceAll('{uname}', unameOf(vars.arch))
    .replaceAll('{version}', vars.version ?? '');
}
