import type { BundleDescriptor, BundledChart } from '../oci/bundle-format.js';
import { AcpackError, plural } from '../oci/errors.js';
import { NODE_CA, sha256Check, shq } from './node-setup.js';
import type { SshHost } from './ssh.js';
import { CNI_CHARTS } from '../kube/index.js';

/** Where the first master keeps the charts it pulled (reset removes it). */
export const CHART_DIR = '/var/lib/acpack/charts';

/** The bundle's charts in install order: the chosen CNI first, then the manifest's order; other CNIs left out. */
export function chartOrder(d: BundleDescriptor, cni: string): BundledChart[] {
  const cniChart = d.charts.filter((c) => c.name === cni);
  return [...cniChart, ...d.charts.filter((c) => !(CNI_CHARTS as readonly string[]).includes(c.name))];
}

/**
 * Where helm is on the nodes: the bundle's `helm` binary, installed as a file or unpacked from its
 * tarball (ACK Distro's holds linux-<arch>/helm). Charts without helm are refused before any node
 * is touched.
 */
export function helmCommand(d: BundleDescriptor, cni: string): string | undefined {
  if (d.charts.length === 0) return undefined;
  const helm = d.binaries.find((b) => b.name === 'helm');
  if (!helm) throw new AcpackError('BAD_BUNDLE', `${d.name} ${d.version} carries ${plural(d.charts.length, 'chart')} but no helm binary to install them with: add helm to the manifest's binaries`);
  if (!d.charts.some((c) => c.name === cni)) throw new AcpackError('BAD_BUNDLE', `the cluster's CNI is ${cni} (network.cni) and ${d.name} ${d.version} carries no ${cni} chart`);
  if (helm.install) return shq(helm.install);
  return `"$(find ${shq(helm.extract ?? '/')} -type f -name helm -perm -u+x | head -1)"`;
}

/**
 * On the first master: helm pulls the chart from the site registry over oci:// (trusting the site
 * CA), the .tgz is checked against the bundle's digest, then `helm upgrade --install --wait`
 * against the cluster's API server. Idempotent: a re-run upgrades a release to the same chart.
 */
export async function installChart(host: SshHost, helm: string, registryHost: string, chart: BundledChart): Promise<void> {
  const repo = chart.ref.replace(/:[^:/]+$/, '');
  const tgz = `${CHART_DIR}/${chart.name}-${chart.version}.tgz`;
  const pull = [
    'set -e',
    `mkdir -p ${CHART_DIR}`,
    // SSL_CERT_FILE as well as --ca-file: helm is Go, whose TLS honours it, whether or not a given
    // helm release (ACK Distro ships 3.9) passes --ca-file on to oci:// pulls.
    `SSL_CERT_FILE=${NODE_CA} ${helm} pull ${shq(`oci://${registryHost}/${repo}`)} --version ${shq(chart.version)} --ca-file ${NODE_CA} -d ${CHART_DIR}`,
    sha256Check(shq(tgz), chart.chart, `${chart.name} ${chart.version}: the chart pulled does not match the bundle's ${chart.chart}`),
  ].join('\n');
  await host.check(pull, `chart ${chart.name}: helm pull`, 300_000);
  const install = `${helm} upgrade --install ${shq(chart.name)} ${shq(tgz)} --namespace kube-system --kubeconfig /etc/kubernetes/admin.conf --wait --timeout 10m`;
  await host.check(install, `chart ${chart.name}: helm install`, 15 * 60_000);
}
