import { expect, it } from 'vitest';
import { queriesFor } from '../../registry/naming.js';

it('looks up mirror-mode requests exactly, except under the names the registry itself goes by', () => {
  expect(queriesFor('pause', 'registry.k8s.io')).toEqual([{ kind: 'exact', repo: 'registry.k8s.io/pause' }]);
  expect(queriesFor('nginx', 'docker.io')).toEqual([{ kind: 'exact', repo: 'docker.io/library/nginx' }]);
  // sea.hub:5000/ecp_builder/pause is the site's own name for whatever bundled image has that path…
  expect(queriesFor('ecp_builder/pause', 'sea.hub:5000', ['sea.hub'])).toEqual([{ kind: 'path', path: 'ecp_builder/pause' }]);
  // …but under any other host the same path is another image, and is not served in its place.
  expect(queriesFor('ecp_builder/pause', 'quay.io', ['sea.hub'])).toEqual([{ kind: 'exact', repo: 'quay.io/ecp_builder/pause' }]);
});

it('tries a host-prefixed name exactly, then re-rooted', () => {
  expect(queriesFor('10.0.0.5_5000/app')).toEqual([
    { kind: 'exact', repo: '10.0.0.5:5000/app' },
    { kind: 'path', path: '10.0.0.5_5000/app' },
  ]);
  expect(queriesFor('pause')).toEqual([
    { kind: 'path', path: 'pause' },
    { kind: 'path', path: 'library/pause' },
  ]);
});
