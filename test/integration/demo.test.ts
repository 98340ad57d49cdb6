import { describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { ROOT, tempDir } from '../helpers/env.js';

/**
 * `npm run demo` as a user runs it, in a work directory of its own, in a process group of its own:
 * a Ctrl-C in a terminal signals the whole group (npm, tsx and the demo), and so does interrupt().
 */
function runDemo(dir: string, onOutput?: (all: string) => void) {
  const child = spawn('npm', ['run', '--silent', 'demo'], {
    cwd: ROOT,
    env: { ...process.env, DEMO_DIR: join(dir, 'out'), ACPACK_LAB_STATE: join(dir, 'lab.json') },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (c: Buffer) => {
    out += c.toString();
    onOutput?.(out);
  });
  child.stderr.on('data', (c: Buffer) => (err += c.toString()));
  const done = new Promise<{ code: number | null; out: string; err: string }>((resolve) => child.on('close', (code) => resolve({ code, out, err })));
  return { done, interrupt: () => process.kill(-child.pid!, 'SIGINT') };
}

/** What the demo's lab left on the machine: its namespaces and its unreachable route. */
function leftovers(id: string, subnet: string): string[] {
  const netns = execFileSync('ip', ['netns', 'list']).toString().split('\n').filter((l) => l.startsWith(`${id}-`));
  const routes = execFileSync('ip', ['route', 'show', 'type', 'unreachable']).toString().split('\n').filter((l) => l.startsWith(subnet));
  return [...netns, ...routes];
}

const labLine = /lab (acp\d+) on (10\.213\.\d+\.0\/24)/;

describe('npm run demo', () => {
  it('lays a cluster down on three test hosts: two joins, a worker pulls by the original name, nothing left after', async () => {
    const work = await tempDir();
    try {
      const r = await runDemo(work.dir).done;
      expect(r.code, `${r.out}\n${r.err}`).toBe(0);
      const [, id, subnet] = labLine.exec(r.out)!;
      const ip = (name: string) => new RegExp(`^  ${name}  (\\S+)`, 'm').exec(r.out)![1].replace(/\./g, '\\.');
      // acinstall from's summary, then status: both workers joined, by kubeadm join.
      for (const w of ['node2', 'node3']) {
        expect(r.out).toMatch(new RegExp(`${ip(w)}\\s+worker\\s+joined`));
        expect(r.out).toMatch(new RegExp(`${ip(w)}\\s+kubeadm-join\\s+done`));
      }
      expect(r.out).toMatch(new RegExp(`${ip('node1')}\\s+kubeadm-init\\s+done`));
      // The worker's containerd holds the image under its original name (the sample registry's, gone by then).
      const source = /sample source registry \(docker-registry\) on (127\.0\.0\.1:\d+)/.exec(r.out)![1];
      expect(r.out).toContain(`\n${source}/ecp_builder/coredns:v1.8.4\n`);
      expect(r.out).toMatch(new RegExp(`server = "https://${ip('node1')}:5000"`));
      expect(leftovers(id, subnet)).toEqual([]);
      expect(existsSync(join(work.dir, 'lab.json'))).toBe(false);
    } finally {
      await work.cleanup();
    }
  }, 420_000);

  it('tears the test hosts down on Ctrl-C in the middle of the install', async () => {
    const work = await tempDir();
    try {
      let interrupted = false;
      const demo = runDemo(work.dir, (out) => {
        if (!interrupted && out.includes('acinstall from')) {
          interrupted = true;
          setTimeout(demo.interrupt, 3000);
        }
      });
      const r = await demo.done;
      expect(interrupted).toBe(true);
      expect(r.code).not.toBe(0);
      expect(r.err).toContain('demo: SIGINT, tearing down');
      expect(r.out, r.err).toMatch(/test hosts acp\d+ torn down/);
      const [, id, subnet] = labLine.exec(r.out)!;
      expect(leftovers(id, subnet)).toEqual([]);
      expect(existsSync(join(work.dir, 'lab.json'))).toBe(false);
    } finally {
      await work.cleanup();
    }
  }, 300_000);
});
