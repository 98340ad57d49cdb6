import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { acinstallOn, ssh } from '../hosts/lab.js';
import { nodeSteps } from '../hosts/node-steps.js';
import { ROOT } from '../helpers/env.js';
import { kubeadmBundle } from '../helpers/fixtures.js';
import { useLab } from '../helpers/lab.js';

// containerd runs the configuration acinstall wrote: restarted when it changed, and proved from what
// the running daemon logged at start (containerd is real on test hosts, run by the systemctl stand-in).

// The bundle: every image kubeadm v1.22.15 asks for (under the bundle's repository) and its stand-in.
const t = useLab(2, kubeadmBundle);
/** The containerd that from left running on the worker. */
let ran: { pid: number };

const IGNORE = ['--ignore-preflight', 'disk,ip_forward,br_netfilter'];
const nodes = () => ['-m', t.lab.hosts[0].ip, '-n', t.lab.hosts[1].ip, '-i', t.lab.key, '--store', join(t.work.dir, 'site')];
const on = (i: number, command: string) => ssh(t.lab, t.lab.hosts[0], t.lab.hosts[i], command, 60_000).then((r) => r.stdout);
/** Prints the running containerd's PID, the CRI configuration it logged at start, and the PID acinstall recorded. */
const RUNNING = [
  'pid=$(systemctl show -p MainPID --value containerd); echo "pid=$pid"',
  `echo "line=$(journalctl -u containerd _PID=$pid -o cat | grep -m 1 'Start cri plugin with config')"`,
  'echo "applied=$(cut -d" " -f2 /etc/acpack/containerd.applied 2>/dev/null)"',
].join('; ');
function parse(out = ''): { pid: number; line: string; applied: number } {
  const kv = Object.fromEntries(out.split('\n').filter((l) => l.includes('=')).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
  return { pid: Number(kv.pid), line: kv.line ?? '', applied: Number(kv.applied) };
}

describe('containerd on the nodes', () => {
  it("preflight reports a node where a containerd that is not containerd.service's holds its socket", async () => {
    const started = [
      'nohup containerd > /var/log/other-containerd.log 2>&1 < /dev/null & echo $! > /run/other-containerd.pid',
      'i=0; until [ -S /run/containerd/containerd.sock ]; do i=$((i+1)); [ $i -lt 150 ] || exit 1; sleep 0.2; done',
      'cat /run/other-containerd.pid',
    ].join('\n');
    const other = Number(await on(1, started));
    try {
      const r = await acinstallOn(t.lab.hosts[0], ['preflight', ...nodes(), ...IGNORE], ROOT);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(new RegExp(`${t.lab.hosts[1].ip.replace(/\./g, '\\.')}\\s+containerd\\s+/run/containerd/containerd\\.sock held by pid ${other} \\(containerd\\), not by containerd\\.service`));
      expect(r.stderr).not.toMatch(new RegExp(`${t.lab.hosts[0].ip.replace(/\./g, '\\.')}\\s+containerd`));
    } finally {
      await on(1, `kill ${other}; i=0; while kill -0 ${other} 2>/dev/null; do i=$((i+1)); [ $i -lt 100 ] || break; sleep 0.1; done`);
    }
  });

  it('restarts the containerd that ran the distribution configuration, and the new one runs ours', async () => {
    // The distribution's containerd, started as its unit with its own configuration (and no obstacle
    // to from's preflight).
    const before = parse(await on(1, `systemctl start containerd; ${RUNNING}`));
    expect(before.pid).toBeGreaterThan(0);
    expect(before.line).not.toContain('SystemdCgroup:true'); // the distribution's configuration
    const r = await acinstallOn(t.lab.hosts[0], ['from', t.built.path, ...nodes(), ...IGNORE], ROOT);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('preflight passed on 2 nodes');
    for (const i of [1, 0]) {
      const now = parse(await on(i, RUNNING));
      if (i === 1) ran = now;
      expect(now.pid).toBeGreaterThan(0);
      if (i === 1) expect(now.pid).not.toBe(before.pid);
      expect(now.line).toContain('ConfigPath:/etc/containerd/certs.d ');
      expect(now.line).toContain(`SandboxImage:${t.built.pause} `);
      expect(now.line).toContain('SystemdCgroup:true');
      expect(now.applied).toBe(now.pid);
    }
  }, 150_000);

  it('leaves containerd running when nothing changed, restarts it when its unit changed, and fails a node whose containerd does not take the configuration', async () => {
    const [h1, h2] = t.lab.hosts;
    // A drop-in pointing containerd at another configuration, then gone again.
    const other = { '/etc/containerd/other.toml': 'version = 2\n', '/etc/systemd/system/containerd.service.d/50-other.conf': '[Service]\nExecStart=\nExecStart=/usr/bin/containerd --config /etc/containerd/other.toml\n' };
    const [unchanged, failed, mended] = await nodeSteps(t.lab, h1, h2, [
      { startServices: true, after: RUNNING },
      { files: other, startServices: true, after: RUNNING },
      { before: 'rm /etc/systemd/system/containerd.service.d/50-other.conf', startServices: true, after: RUNNING },
    ]);
    // Nothing changed: the same containerd.
    expect(unchanged.ok).toBe(true);
    expect(parse(unchanged.after).pid).toBe(ran.pid);
    // The drop-in: restarted, and the proof fails, saying why.
    expect(failed.ok).toBe(false);
    const error = (failed as { error: string }).error;
    expect(error).toContain(`${h2.ip}: containerd (pid `);
    expect(error).toMatch(/does not run \/etc\/containerd\/config\.toml: its CRI configuration lacks ConfigPath:\/etc\/containerd\/certs\.d, SystemdCgroup:true, SandboxImage:\S+ \(it took ConfigPath: SandboxImage:\S+ SystemdCgroup:false\): does a drop-in or a --config in its unit point it elsewhere/);
    expect(error).toContain('its journal (journalctl -u containerd) ends:');
    expect(parse(failed.after).pid).not.toBe(ran.pid);
    // The drop-in gone: restarted again, with ours.
    expect(mended.ok).toBe(true);
    expect(parse(mended.after).line).toContain('SystemdCgroup:true');
    expect(parse(mended.after).pid).not.toBe(parse(failed.after).pid);
  }, 120_000);
});
