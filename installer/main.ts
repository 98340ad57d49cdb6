// acinstall is not built yet (issues 3 and 4). Say so plainly rather than pretend.
const usage = `acinstall: installs an acpack bundle on an air-gapped site (not implemented yet).

Planned commands:
  acinstall import bundle.tar.zst     stream a bundle into the site's content store
  acinstall serve                     serve the store as an OCI registry to the nodes
  acinstall from bundle.tar.zst -m MASTERS -n NODES -i KEY
                                      import, serve, and lay the cluster down over SSH

Today, check a bundle with: acpack inspect bundle.tar.zst / acpack verify bundle.tar.zst
`;
process.stderr.write(usage);
process.exitCode = process.argv.slice(2).some((a) => a === '--help' || a === '-h') ? 0 : 2;
