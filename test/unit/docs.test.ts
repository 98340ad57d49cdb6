import { describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { bundleManifestSchema } from '../../manifests/schema.js';
import { clusterSchema } from '../../installer/cluster-spec.js';
import { ROOT } from '../helpers/env.js';

const run = promisify(execFile);

/** Every property name a JSON schema defines, at any depth (in properties, items, anyOf, $defs). */
function propertyNames(schema: unknown, out = new Set<string>()): Set<string> {
  if (Array.isArray(schema)) for (const s of schema) propertyNames(s, out);
  else if (schema && typeof schema === 'object') {
    const s = schema as Record<string, unknown>;
    if (s.properties && typeof s.properties === 'object') for (const name of Object.keys(s.properties)) out.add(name);
    for (const v of Object.values(s)) propertyNames(v, out);
  }
  return out;
}

describe('the docs a clone has', () => {
  it.each([
    ['docs/manifest.md', bundleManifestSchema],
    ['docs/cluster.md', clusterSchema],
  ])('%s names every field of its schema', async (doc, schema) => {
    const text = await readFile(join(ROOT, doc), 'utf8');
    const names = [...propertyNames(schema)];
    expect(names.length).toBeGreaterThan(10);
    expect(names.filter((n) => !text.includes(`\`${n}\``))).toEqual([]);
  });

  it('the README points only inside the repository, and every docs/ file it names exists', async () => {
    const readme = await readFile(join(ROOT, 'README.md'), 'utf8');
    expect(readme).not.toMatch(/\.\.\/shared|DESIGN\.md/);
    for (const [, file] of readme.matchAll(/`(docs\/[\w.-]+\.md)`/g)) await expect(readFile(join(ROOT, file), 'utf8')).resolves.toBeTruthy();
  });

  it.each(['packer/main.ts', 'installer/main.ts'])('%s --version prints the package version', async (entry) => {
    const pkg = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8'));
    const { stdout } = await run(process.execPath, ['--import', 'tsx', join(ROOT, entry), '--version']);
    expect(stdout.trim()).toBe(pkg.version);
  });
});
