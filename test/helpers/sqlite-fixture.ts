import { Journal } from '../../installer/journal.js';
import { IndexDb } from '../../registry/index-db.js';

/** One image and one journal step, written through acinstall's own classes. */
const IMAGE = { repo: 'site/app', digest: `sha256:${'a'.repeat(64)}`, config: `sha256:${'b'.repeat(64)}` } as const;

export function writeFixture(store: string): void {
  const db = new IndexDb(store);
  db.record({
    manifests: [{ digest: IMAGE.digest, mediaType: 'application/vnd.oci.image.manifest.v1+json', size: 1234 }],
    tags: [{ repo: IMAGE.repo, path: 'app', tag: 'v1', digest: IMAGE.digest }],
    repoManifests: [{ repo: IMAGE.repo, digest: IMAGE.digest }],
    blobLinks: [{ repo: IMAGE.repo, digest: IMAGE.config }],
    manifestRefs: [{ manifest: IMAGE.digest, children: [IMAGE.config] }],
  });
  db.close();
  const j = new Journal(store);
  j.record('10.0.0.5', 'kubeadm-init', 'done', 'ok', 'b1');
  j.close();
}

/** What `writeFixture` left, as plain JSON-able values (rows from node:sqlite have no prototype). */
export function readFixture(store: string): unknown {
  const db = new IndexDb(store);
  const index = {
    tag: db.tag(IMAGE.repo, 'v1'),
    manifest: { ...db.manifest(IMAGE.repo, IMAGE.digest) },
    reachable: db.reachable(IMAGE.config),
    live: db.manifestLive(IMAGE.repo, IMAGE.digest),
    links: db.allBlobLinks().map((l) => ({ ...l })),
    tags: db.tags(IMAGE.repo, 10),
  };
  db.close();
  const j = new Journal(store);
  const journal = { done: j.isDone('10.0.0.5', 'kubeadm-init', 'b1'), detail: j.doneDetail('10.0.0.5', 'kubeadm-init') };
  j.close();
  return { index, journal };
}
