import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { lazyValidator } from '../oci/json-schema.js';
import { parse as parseYaml } from 'yaml';
import { AcpackError } from '../oci/errors.js';
import { CNI_CHARTS, DEFAULT_CNI } from '../kube/index.js';

export type Role = 'master' | 'node';

export interface HostSpec {
  ip: string;
  roles: Role[];
  user: string;
  port: number;
  password?: string;
  keyFile?: string;
}

export interface ClusterSpec {
  hosts: HostSpec[];
  registry: { domain: string; port: number };
  /** apiServerVIP: the virtual address workers reach the masters through when there are several. */
  network: { podCIDR: string; serviceCIDR: string; cni: string; apiServerVIP: string };
  env: Record<string, string>;
}

export interface SshFlags {
  masters?: string;
  nodes?: string;
  password?: string;
  key?: string;
  user?: string;
  port?: string;
}

const DEFAULTS = {
  registry: { domain: 'sea.hub', port: 5000 },
  // sealer's virtual IP for the API servers, so clusters moved from sealer keep their addresses.
  network: { podCIDR: '100.64.0.0/16', serviceCIDR: '10.96.0.0/16', cni: DEFAULT_CNI, apiServerVIP: '10.103.97.2' },
};

/** A comma-separated IP list from a flag, each checked. */
export function parseIpList(list: string | undefined, flag: string): string[] {
  const out = (list ?? '').split(',').map((s) => s.trim()).filter(Boolean);
  for (const ip of out) if (!isIP(ip)) throw new AcpackError('BAD_CLUSTER', `${flag}: "${ip}" is not an IP address`);
  return out;
}

export function parsePort(value: string): number {
  const port = Number(value);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new AcpackError('BAD_CLUSTER', `--port ${value} is not a port`);
  return port;
}

/** sealer-style flags: -m 10.0.0.1,10.0.0.2 -n 10.0.0.3 (-p PASSWORD | -i KEY) [--user root] [--port 22]. */
export function specFromFlags(f: SshFlags): ClusterSpec {
  const masters = parseIpList(f.masters, '-m/--masters');
  const nodes = parseIpList(f.nodes, '-n/--nodes');
  const ssh = { user: f.user ?? 'root', port: parsePort(f.port ?? '22'), password: f.password, keyFile: f.key };
  return checkSpec({ hosts: [...masters.map((ip) => ({ ip, roles: ['master' as Role], ...ssh })), ...nodes.map((ip) => ({ ip, roles: ['node' as Role], ...ssh }))], ...DEFAULTS, env: {} }, 'the flags');
}

export const clusterSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['apiVersion', 'kind', 'spec'],
  properties: {
    apiVersion: { const: 'acpack/v1' },
    kind: { const: 'Cluster' },
    metadata: { type: 'object', properties: { name: { type: 'string' } }, additionalProperties: false },
    spec: {
      type: 'object',
      additionalProperties: false,
      required: ['hosts'],
      properties: {
        ssh: { $ref: '#/$defs/ssh' },
        hosts: {
          type: 'array',
          minItems: 1,
          items: {
            type: 'object',
            additionalProperties: false,
            required: ['ips', 'roles'],
            properties: {
              ips: { type: 'array', minItems: 1, items: { type: 'string' } },
              roles: { type: 'array', minItems: 1, items: { enum: ['master', 'node'] } },
              ssh: { $ref: '#/$defs/ssh' },
            },
          },
        },
        registry: { type: 'object', additionalProperties: false, properties: { domain: { type: 'string' }, port: { type: 'integer', minimum: 1, maximum: 65535 } } },
        network: {
          type: 'object',
          additionalProperties: false,
          properties: { podCIDR: { type: 'string' }, serviceCIDR: { type: 'string' }, cni: { enum: CNI_CHARTS }, apiServerVIP: { type: 'string' } },
        },
        env: { type: 'object', additionalProperties: { type: 'string' } },
      },
    },
  },
  $defs: {
    ssh: {
      type: 'object',
      additionalProperties: false,
      properties: { user: { type: 'string' }, port: { type: 'integer', minimum: 1, maximum: 65535 }, passwd: { type: 'string' }, pk: { type: 'string' } },
    },
  },
} as const;

const validateCluster = lazyValidator(clusterSchema, { allErrors: true });

interface RawSsh {
  user?: string;
  port?: number;
  passwd?: string;
  pk?: string;
}

/** `kind: Cluster` (sealer's layout): hosts with roles and per-host SSH overrides. */
export async function loadClusterFile(file: string): Promise<ClusterSpec> {
  let raw: unknown;
  try {
    raw = parseYaml(await readFile(file, 'utf8'));
  } catch (err) {
    throw new AcpackError('BAD_CLUSTER', `cannot read ${file}: ${(err as Error).message.split('\n')[0]}`);
  }
  if (!validateCluster(raw)) {
    // A misspelt field explains a missing one: report unknown fields first.
    const errors = validateCluster.errors!;
    const e = errors.find((x) => x.keyword === 'additionalProperties') ?? errors[0];
    const where = e.instancePath ? e.instancePath.slice(1).replace(/\//g, '.') : 'the file';
    const what =
      e.keyword === 'additionalProperties' ? `unknown field "${(e.params as { additionalProperty: string }).additionalProperty}" in ${where}` : `${where} ${e.message}`;
    throw new AcpackError('BAD_CLUSTER', `${file}: ${what}`);
  }
  const spec = (raw as { spec: { ssh?: RawSsh; hosts: { ips: string[]; roles: Role[]; ssh?: RawSsh }[]; registry?: object; network?: object; env?: Record<string, string> } }).spec;
  const hosts: HostSpec[] = spec.hosts.flatMap((h) => {
    const ssh = { ...spec.ssh, ...h.ssh };
    return h.ips.map((ip) => {
      if (!isIP(ip)) throw new AcpackError('BAD_CLUSTER', `${file}: "${ip}" is not an IP address`);
      return { ip, roles: h.roles, user: ssh.user ?? 'root', port: ssh.port ?? 22, password: ssh.passwd, keyFile: ssh.pk };
    });
  });
  return checkSpec(
    {
      hosts,
      registry: { ...DEFAULTS.registry, ...spec.registry },
      network: { ...DEFAULTS.network, ...spec.network },
      env: spec.env ?? {},
    },
    file,
  );
}

/** What every cluster must be: a master, a valid VIP, each host once and with a way to log in. */
export function checkSpec(spec: ClusterSpec, where: string): ClusterSpec {
  if (!spec.hosts.some((h) => h.roles.includes('master'))) throw new AcpackError('BAD_CLUSTER', `${where}: a cluster needs at least one master`);
  if (!isIP(spec.network.apiServerVIP)) throw new AcpackError('BAD_CLUSTER', `${where}: network.apiServerVIP "${spec.network.apiServerVIP}" is not an IP address`);
  const seen = new Set<string>();
  for (const h of spec.hosts) {
    if (seen.has(h.ip)) throw new AcpackError('BAD_CLUSTER', `${where}: ${h.ip} is listed twice`);
    seen.add(h.ip);
    if (!h.password && !h.keyFile) throw new AcpackError('BAD_CLUSTER', `${where}: no way to log in to ${h.ip}: give a password (-p) or a private key (-i)`);
  }
  return spec;
}

export const isMaster = (h: HostSpec) => h.roles.includes('master');

/** The master acinstall runs on, where the registry is and kubeadm init ran (a spec always has one). */
export const firstMaster = (spec: ClusterSpec): HostSpec => spec.hosts.find(isMaster)!;
