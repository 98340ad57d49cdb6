import { describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { promisify } from 'node:util';
import { connect } from 'node:net';
import { ssh } from '../hosts/lab.js';
import { saveLabState } from '../hosts/lab-state.js';
import { join } from 'node:path';
import { ROOT } from '../helpers/env.js';
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

describe('npm run hosts:exec', () => {
  it('runs ssh NODE, acinstall and any command from a host of the lab that is up', async () => {
    const state = join(t.lab.dir, 'state.json');
    const exec = (args: string[]) => run('npm', ['run', '--silent', 'hosts:exec', '--', ...args], { cwd: ROOT, env: { ...process.env, ACPACK_LAB_STATE: state }, timeout: 60_000 });
    await expect(exec(['ssh', 'node2', 'hostname'])).rejects.toThrow(/no lab is up/);
    await saveLabState(t.lab, state); // as hosts:up and the demo do
    expect((await exec(['ssh', 'node2', 'hostname'])).stdout.trim()).toBe('node2');
    expect((await exec(['acinstall', '--version'])).stdout).toMatch(/^\d+\.\d+\.\d+/);
    // Any other command runs in the first host's network (or the named host's), on this machine's files.
    expect((await exec(['ip', '-4', '-o', 'addr', 'show', 'eth0'])).stdout).toContain(`${t.lab.hosts[0].ip}/24`);
    expect((await exec(['node2', 'ip', '-4', '-o', 'addr', 'show', 'eth0'])).stdout).toContain(`${t.lab.hosts[1].ip}/24`);
  });
});
