/**
 * Runs acinstall's own node steps (installer/node-setup.ts) against one test host, from inside the
 * lab: `nodeSteps(lab, from, to, steps)` starts this file in `from`'s network namespace, where it
 * connects to `to` over SSH as acinstall does and runs each step in turn on that one connection.
 * For tests of one step without a whole `acinstall from`.
 */
import { spawn } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Lab, LabHost } from './lab.js';

export interface NodeStep {
  /** A shell command run first. */
  before?: string;
  /** Files written with writeFiles (over the command's standard input). */
  files?: Record<string, string>;
  /** Then startServices: containerd (re)started and proved to run its configuration. */
  startServices?: boolean;
  /** A shell command run last, whether the step failed or not: its output is `after`. */
  after?: string;
}

export type NodeStepResult = ({ ok: true } | { ok: false; error: string }) & { after?: string };

export async function nodeSteps(lab: Lab, from: LabHost, to: LabHost, steps: NodeStep[]): Promise<NodeStepResult[]> {
  const file = join(lab.dir, `node-steps-${to.name}-${Date.now()}.json`);
  await writeFile(file, JSON.stringify({ ip: to.ip, key: lab.key, known: join(lab.dir, 'node-steps-known.json'), steps }));
  const child = spawn('nsenter', [`--net=/run/netns/${from.netns}`, '--', process.execPath, '--import', 'tsx', import.meta.filename, file], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr.on('data', (c: Buffer) => (err += c.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), 300_000);
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  clearTimeout(timer);
  if (code !== 0) throw new Error(`node steps on ${to.ip} exited ${code}: ${err}`);
  return JSON.parse(out.trim().split('\n').pop()!);
}

async function main(file: string): Promise<void> {
  const { KnownHosts, SshHost } = await import('../../installer/ssh.js');
  const { startServices, writeFiles } = await import('../../installer/node-setup.js');
  const { AcpackError } = await import('../../oci/errors.js');
  const req = JSON.parse(await readFile(file, 'utf8')) as { ip: string; key: string; known: string; steps: NodeStep[] };
  const known = await KnownHosts.open(req.known);
  const host = await SshHost.connect({ ip: req.ip, port: 22, user: 'root', keyFile: req.key, roles: ['node'] }, known);
  const results: NodeStepResult[] = [];
  try {
    for (const step of req.steps) {
      let result: NodeStepResult = { ok: true };
      try {
        if (step.before) await host.check(step.before, "the test's command before");
        if (step.files) await writeFiles(host, step.files);
        if (step.startServices) await startServices(host);
      } catch (err) {
        if (!(err instanceof AcpackError)) throw err;
        result = { ok: false, error: err.message };
      }
      if (step.after) result.after = await host.check(step.after, "the test's command after");
      results.push(result);
    }
    process.stdout.write(`${JSON.stringify(results)}\n`);
  } finally {
    host.close();
    await known.save();
  }
}

if (process.argv[1] === import.meta.filename) await main(process.argv[2]);
