import { describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { promisify } from 'node:util';
import { connect } from 'node:net';
import { ssh } from '../hosts/lab.js';
import { useLab } from '../helpers/lab.js';

const run = promisify(execFile);
const t = useLab(2);

describe('test hosts', () => {
  it('each host answers ssh with its own hostname', async () => {
    const [a, b] = t.lab.hosts;
    expect((await ssh(t.lab, a, b, 'hostname')).stdout.trim()).toBe('node2');
    expect((await ssh(t.lab, b, a, 'hostname')).stdout.trim()).toBe('node1');
  });

  it('a host writes /etc and /usr/bin in its own copy of the root, never the machine', async () => {
    const [a, b] = t.lab.hosts;
    const marker = `/etc/acpack-lab-${t.lab.id}`;
    await ssh(t.lab, a, b, `echo written-on-node2 > ${marker} && cp /bin/true /usr/bin/acpack-lab-tool`);
    expect((await ssh(t.lab, a, b, `cat ${marker}`)).stdout.trim()).toBe('written-on-node2');
    expect(existsSync(marker)).toBe(false);
    expect(existsSync('/usr/bin/acpack-lab-tool')).toBe(false);
    await expect(ssh(t.lab, b, a, `cat ${marker}`)).rejects.toThrow();
  });

  it('the lab subnet is unreachable from the root namespace', async () => {
    const { stdout } = await run('ip', ['route', 'show', t.lab.subnet]);
    expect(stdout).toMatch(/^unreachable/);
    const err = await new Promise<NodeJS.ErrnoException>((resolve) => {
      const s = connect({ host: t.lab.hosts[0].ip, port: 22, timeout: 2000 });
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
