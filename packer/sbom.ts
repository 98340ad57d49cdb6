import type { BundleDescriptor } from '../oci/bundle-format.js';
import { sha256 } from '../oci/digest.js';
import { parseReference } from '../oci/reference.js';
import { ownVersion } from '../ui/program.js';

/**
 * `acpack inspect --sbom`: what a bundle carries as an SPDX 2.3 JSON document, from bundle.json
 * alone: one package per image and platform (its manifest digest), per binary and arch (the file's
 * sha256), per chart (its .tgz), and acinstall's runtime per arch. Packages are not analysed file
 * by file (filesAnalyzed false): the digests are what a site checks, and what the bundle's
 * signature covers.
 */

interface SpdxPackage {
  SPDXID: string;
  name: string;
  versionInfo: string;
  downloadLocation: string;
  filesAnalyzed: false;
  primaryPackagePurpose: 'CONTAINER' | 'APPLICATION' | 'ARCHIVE';
  checksums: { algorithm: 'SHA256'; checksumValue: string }[];
  externalRefs: { referenceCategory: 'PACKAGE-MANAGER'; referenceType: 'purl'; referenceLocator: string }[];
  comment?: string;
}

const hexOf = (digest: string) => digest.slice('sha256:'.length);

export function spdxDocument(d: BundleDescriptor, descriptorBytes: Buffer, created = new Date()): Record<string, unknown> {
  const packages: SpdxPackage[] = [];
  const id = (kind: string, ...parts: string[]) => `SPDXRef-${kind}-${parts.join('-').replace(/[^A-Za-z0-9.-]/g, '-')}`;

  for (const image of d.images) {
    const ref = parseReference(image.ref);
    const repository = `${ref.host}/${ref.repository}`;
    for (const p of image.platforms) {
      const arch = p.platform.split('/').slice(1).join('/');
      const qualifiers = new URLSearchParams({ repository_url: repository, arch, ...(ref.tag ? { tag: ref.tag } : {}) });
      packages.push({
        SPDXID: id('Image', image.ref, p.platform),
        name: image.ref,
        versionInfo: ref.tag ?? image.digest,
        downloadLocation: 'NOASSERTION',
        filesAnalyzed: false,
        primaryPackagePurpose: 'CONTAINER',
        checksums: [{ algorithm: 'SHA256', checksumValue: hexOf(p.digest) }],
        externalRefs: [{ referenceCategory: 'PACKAGE-MANAGER', referenceType: 'purl', referenceLocator: `pkg:oci/${encodeURIComponent(ref.repository.split('/').at(-1)!)}@${encodeURIComponent(p.digest)}?${qualifiers}` }],
        comment: `${p.platform} manifest of ${image.ref} (${image.digest})`,
      });
    }
  }
  const generic = (kind: string, name: string, version: string, arch: string | undefined, digest: string, purpose: SpdxPackage['primaryPackagePurpose'], comment: string): SpdxPackage => ({
    SPDXID: id(kind, name, version, ...(arch ? [arch] : [])),
    name,
    versionInfo: version,
    downloadLocation: 'NOASSERTION',
    filesAnalyzed: false,
    primaryPackagePurpose: purpose,
    checksums: [{ algorithm: 'SHA256', checksumValue: hexOf(digest) }],
    externalRefs: [
      {
        referenceCategory: 'PACKAGE-MANAGER',
        referenceType: 'purl',
        referenceLocator: `pkg:generic/${encodeURIComponent(name)}@${encodeURIComponent(version)}?${new URLSearchParams({ ...(arch ? { arch } : {}), checksum: digest })}`,
      },
    ],
    comment,
  });
  for (const b of d.binaries) packages.push(generic('Binary', b.name, b.version, b.arch, b.digest, 'APPLICATION', `${b.ref}; ${b.install ? `installed as ${b.install}` : `unpacked into ${b.extract}`}`));
  for (const c of d.charts) packages.push(generic('Chart', c.name, c.version, undefined, c.chart, 'ARCHIVE', `Helm chart ${c.ref} (manifest ${c.digest})`));
  for (const r of d.runtime ?? []) packages.push(generic('Runtime', 'acinstall', r.version, r.arch, r.digest, 'APPLICATION', `acinstall's single executable, gzipped (${r.ref})`));

  const bundleHash = sha256(descriptorBytes).slice('sha256:'.length);
  return {
    spdxVersion: 'SPDX-2.3',
    dataLicense: 'CC0-1.0',
    SPDXID: 'SPDXRef-DOCUMENT',
    name: `${d.name} ${d.version}`,
    // Unique per bundle.json: the same bundle always gets the same namespace.
    documentNamespace: `https://acpack.local/spdx/${encodeURIComponent(d.name)}/${encodeURIComponent(d.version)}/${bundleHash}`,
    creationInfo: { created: created.toISOString().replace(/\.\d{3}Z$/, 'Z'), creators: [`Tool: acpack-${ownVersion()}`] },
    comment: `bundle.json sha256 ${bundleHash}; platforms ${d.platforms.join(', ')}`,
    packages,
    relationships: packages.map((p) => ({ spdxElementId: 'SPDXRef-DOCUMENT', relationshipType: 'DESCRIBES', relatedSpdxElement: p.SPDXID })),
  };
}
