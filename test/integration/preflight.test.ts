import { describe, expect, it } from 'vitest';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { acinstallOn, inHost, ssh } from '../hosts/lab.js';
import { useLab } from '../helpers/lab.js';
import { ACINSTALL, ROOT } from '../helpers/env.js';

const t = useLab(2);

const acinstall = (args: string[]) => acinstallOn(t.lab.hosts[0], args, ROOT);

const nodes = () => ['-m', t.lab.hosts[0].ip, '-n', t.lab.hosts[1].ip, '-i', t.lab.key, '--store', join(t.work.dir, 'state')];

describe('acinstall preflight on test hosts', () => {
  it('reports every failure of every node in one table', async () => {
    const r = await acinstall(['preflight', ...nodes()]);
    expect(r.code).toBe(1);
    // A fresh network namespace forwards nothing: both nodes fail ip_forward, in one report.
    expect(r.stderr).toContain('preflight failed on 2 nodes');
    expect(r.stderr).toMatch(new RegExp(`${t.lab.hosts[0].ip.replace(/\./g, '\\.')}\\s+ip_forward\\s+0`));
    expect(r.stderr).toMatch(new RegExp(`${t.lab.hosts[1].ip.replace(/\./g, '\\.')}\\s+ip_forward\\s+0`));
    expect(r.stderr).toMatch(/--ignore-preflight .*ip_forward/);
    expect(r.stderr).not.toMatch(/\bssh\b.*refused/);
  });

  it('passes when the failing checks are ignored', async () => {
    const failing = (await acinstall(['preflight', ...nodes()])).stderr;
    const checks = /--ignore-preflight (\S+)/.exec(failing)![1];
    const r = await acinstall(['preflight', ...nodes(), '--ignore-preflight', checks]);
    expect(r.stderr).toBe('');
    expect(r.stdout).toContain('preflight passed on 2 nodes');
    expect(checks.split(',')).not.toContain('arch');
  });

  it('refuses a node whose arch the bundle does not carry', async () => {
    const r = await acinstall(['preflight', ...nodes(), '--arch', 'arm64', '--ignore-preflight', 'ip_forward,br_netfilter,disk,kernel']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/arch\s+x86_64 \(amd64\)\s+an arch in the bundle: arm64/);
  });

  it('refuses a node without systemd or a tool the installer runs there', async () => {
    const [h1, h2] = t.lab.hosts;
    // On h2, every systemctl (the stand-in, and the machine's own if it has one) and curl go missing;
    // h2's root is its own copy: the machine keeps its files.
    const hide = 'for f in /usr/local/sbin/systemctl /usr/bin/systemctl /bin/systemctl /usr/bin/curl; do [ -e $f ] && mv $f $f.away; done; true';
    await ssh(t.lab, h1, h2, hide);
    try {
      const r = await acinstall(['preflight', ...nodes(), '--ignore-preflight', 'ip_forward,br_netfilter,disk,kernel']);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(new RegExp(`${h2.ip.replace(/\./g, '\\.')}\\s+os\\s+\\S+ [\\d.]+, no systemctl, no curl\\s+Linux with systemd`));
      expect(r.stderr).not.toMatch(new RegExp(`${h1.ip.replace(/\./g, '\\.')}\\s+os`));
    } finally {
      await ssh(t.lab, h1, h2, 'for f in /usr/local/sbin/systemctl /usr/bin/systemctl /bin/systemctl /usr/bin/curl; do [ -e $f.away ] && mv $f.away $f; done; true');
    }
  });

  it('records host keys and refuses a node whose key changed', async () => {
    const known = join(t.work.dir, 'state', 'known_hosts.json');
    const entries = JSON.parse(await readFile(known, 'utf8'));
    expect(Object.keys(entries).sort()).toEqual([`${t.lab.hosts[0].ip}:22`, `${t.lab.hosts[1].ip}:22`]);
    entries[`${t.lab.hosts[1].ip}:22`] = 'SHA256:somethingelse';
    await writeFile(known, JSON.stringify(entries));
    const r = await acinstall(['preflight', ...nodes(), '--ignore-preflight', 'ip_forward,br_netfilter,disk,kernel']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`the host key of ${t.lab.hosts[1].ip}:22 changed`);
    // A damaged file (a hand edit gone wrong) is an error, not a reason to trust every host anew.
    await writeFile(known, `${JSON.stringify(entries).slice(0, -1)},}`);
    const damaged = await acinstall(['preflight', ...nodes(), '--ignore-preflight', 'ip_forward,br_netfilter,disk,kernel']);
    expect(damaged.code).toBe(1);
    expect(damaged.stderr).toMatch(/known_hosts\.json is not valid JSON .*: mend it .* or remove it/);
    expect(await readFile(known, 'utf8')).toBe(`${JSON.stringify(entries).slice(0, -1)},}`);
  });

  it('names a wrong key and an unreachable node as per-node failures', async () => {
    const { execFileSync } = await import('node:child_process');
    const other = join(t.work.dir, 'other_key');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', other]);
    const prefix = t.lab.hosts[0].ip.split('.').slice(0, 3).join('.');
    const r = await acinstall(['preflight', '-m', t.lab.hosts[0].ip, '-n', `${prefix}.99`, '-i', other, '--store', join(t.work.dir, 'state2')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`${t.lab.hosts[0].ip.replace(/\./g, '\\.')}\\s+ssh\\s+root@.*refused the key`));
    expect(r.stderr).toMatch(new RegExp(`${prefix.replace(/\./g, '\\.')}\\.99\\s+ssh\\s+cannot reach`));
    // A public key given as -i is named, per node, not an unexpected error.
    const pub = await acinstall(['preflight', '-m', t.lab.hosts[0].ip, '-i', `${other}.pub`, '--store', join(t.work.dir, 'state3')]);
    expect(pub.code).toBe(1);
    expect(pub.stderr).toMatch(new RegExp(`${t.lab.hosts[0].ip.replace(/\./g, '\\.')}\\s+ssh\\s+cannot use the private key .*other_key\\.pub`));
    expect(pub.stderr).not.toContain('unexpected error');
  });

  it('logs in with a password (-p, or ACINSTALL_SSH_PASSWORD) and names a wrong one, without ever showing it', async () => {
    const [h1, h2] = t.lab.hosts;
    const password = 'pw-s3cret-Ü';
    for (const h of [h1, h2]) await ssh(t.lab, h1, h, `echo 'root:${password}' | chpasswd`);
    const ignore = ['--ignore-preflight', 'ip_forward,br_netfilter,disk,kernel'];
    const store = join(t.work.dir, 'state-pw');
    const ok = await acinstall(['preflight', '-m', h1.ip, '-n', h2.ip, '-p', password, '--store', store, ...ignore]);
    expect(ok.stderr).toBe('');
    expect(ok.stdout).toContain('preflight passed on 2 nodes');
    const viaEnv = await inHost(h1, 'env', [`ACINSTALL_SSH_PASSWORD=${password}`, ACINSTALL, 'preflight', '-m', h1.ip, '-n', h2.ip, '--store', store, ...ignore]);
    expect(viaEnv.stdout).toContain('preflight passed on 2 nodes');
    const wrong = await acinstall(['preflight', '-m', h1.ip, '-n', h2.ip, '-p', 'not-it', '--store', store, ...ignore]);
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toMatch(new RegExp(`${h2.ip.replace(/\./g, '\\.')}\\s+ssh\\s+root@${h2.ip.replace(/\./g, '\\.')}:22 refused the password`));
    expect(wrong.stderr + wrong.stdout).not.toContain('not-it');
  });
});
