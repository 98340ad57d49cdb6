import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { connect } from 'node:net';
import { labDown, labUp, ssh, type Lab } from '../hosts/lab.js';
import { tempDir } from '../helpers/env.js';

const run = promisify(execFile);
let lab: Lab;
let work: Awaited<ReturnType<typeof tempDir>>;

beforeAll(async () => {
  work = await tempDir();
  lab = await labUp(2, { dir: join(work.dir, 'lab') });
}, 120_000);

afterAll(async () => {
  if (lab) await labDown(lab);
  await work?.cleanup();
});

describe('test hosts', () => {
  it('each host answers ssh with its own hostname', async () => {
    const [a, b] = lab.hosts;
    expect((await ssh(lab, a, b, 'hostname')).stdout.trim()).toBe('node2');
    expect((await ssh(lab, b, a, 'hostname')).stdout.trim()).toBe('node1');
  });

  it('a host writes /etc and /usr/bin in its own copy of the root, never the machine', async () => {
    const [a, b] = lab.hosts;
    const marker = `/etc/acpack-lab-${lab.id}`;
    await ssh(lab, a, b, `echo written-on-node2 > ${marker} && cp /bin/true /usr/bin/acpack-lab-tool`);
    expect((await ssh(lab, a, b, `cat ${marker}`)).stdout.trim()).toBe('written-on-node2');
    expect(existsSync(marker)).toBe(false);
    expect(existsSync('/usr/bin/acpack-lab-tool')).toBe(false);
    await expect(ssh(lab, b, a, `cat ${marker}`)).rejects.toThrow();
  });

  it('the lab subnet is unreachable from the root namespace', async () => {
    const { stdout } = await run('ip', ['route', 'show', lab.subnet]);
    expect(stdout).toMatch(/^unreachable/);
    const err = await new Promise<NodeJS.ErrnoException>((resolve) => {
      const s = connect({ host: lab.hosts[0].ip, port: 22, timeout: 2000 });
      s.on('error', resolve);
      s.on('connect', () => {
        s.destroy();
        resolve(Object.assign(new Error('connected'), { code: 'CONNECTED' }));
      });
      s.on('timeout', () => {
        s.destroy();
        resolve(Object.assign(new Error('timeout'), { code: 'TIMEOUT' }));
      });
    });
    expect(err.code).toBe('EHOSTUNREACH');
  });
});
