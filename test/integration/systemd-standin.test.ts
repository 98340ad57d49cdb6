import { describe, expect, it } from 'vitest';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { ssh } from '../hosts/lab.js';
import { useLab } from '../helpers/lab.js';
import { ACINSTALL } from '../helpers/env.js';
import { registryUnit } from '../../installer/registry-service.js';
import { serviceFiles } from '../../installer/node-setup.js';

// The test hosts' systemctl is a small supervisor (test/hosts/standins/systemd.mjs): units really run.
// Each ssh costs seconds on a busy machine: commands are batched, and waits loop on the host.

const t = useLab(1);
const sh = (command: string) => ssh(t.lab, t.lab.hosts[0], t.lab.hosts[0], command, 150_000).then((r) => r.stdout);
const put = (files: Record<string, string>) => Object.entries(files).map(([path, text]) => `mkdir -p "$(dirname '${path}')" && echo ${Buffer.from(text).toString('base64')} | base64 -d > '${path}'`).join(' && ');
/** A shell line waiting (on the host, up to `s` seconds) for `cond`, failing with `what`. */
const until = (cond: string, what: string, s = 30) => `i=0; until ${cond}; do i=$((i+1)); [ $i -lt ${s * 5} ] || { echo "not within ${s} s: ${what}" >&2; exit 1; }; sleep 0.2; done`;
const kv = (out: string) => Object.fromEntries(out.split('\n').filter((l) => l.includes('=')).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));

describe('systemctl on test hosts runs units', () => {
  it("runs ExecStart as systemd parses the unit and its drop-ins, in the host's own root and namespaces, detached from the SSH session; is-active follows the live process", async () => {
    const files = {
      '/etc/systemd/system/probe.service': '[Service]\nExecStartPre=-/bin/false\nEnvironment="GREETING=hello world" ONE=1\nExecStart=/bin/false\n',
      // A drop-in resets ExecStart= and adds an optional EnvironmentFile that does not exist.
      '/etc/systemd/system/probe.service.d/10-real.conf':
        '[Service]\nEnvironmentFile=-/etc/default/probe-missing\nExecStart=\nExecStart=/bin/sh -c \'echo "args=$0 $1 ${GREETING} %% %n"; echo "ns=$(readlink /proc/self/ns/net) root=$(stat -c %%d:%%i /) sid=$(ps -o sid= -p $$$$ | tr -d " ")"; exec sleep 600\' $GREETING\n',
    };
    const out = kv(
      await sh(
        [
          put(files),
          'systemctl daemon-reload && systemctl start probe',
          'pid=$(systemctl show -p MainPID --value probe)',
          until('journalctl -u probe _PID=$pid -o cat | grep -q ns=', 'its output in the journal'),
          'echo "pid=$pid"; echo "active=$(systemctl is-active probe)"',
          'journalctl -u probe _PID=$pid -o cat',
          'echo "mine=ns=$(readlink /proc/self/ns/net) root=$(stat -c %d:%i /) sid=$(ps -o sid= -p $$ | tr -d " ")"',
        ].join('\n'),
      ),
    );
    expect(Number(out.pid)).toBeGreaterThan(0);
    expect(out.active).toBe('active');
    // $GREETING alone splits into two words ($0 and $1 of sh -c), ${GREETING} in a word stays one.
    expect(out.args).toBe('hello world hello world % probe.service');
    // The same network namespace and root as an SSH session on the host, but a session of its own.
    // The root is told by the device and inode of / (readlink /proc/self/root says / in any chroot):
    // the host's overlay, not the machine's own root.
    const field = (s: string, k: string) => new RegExp(`${k}=(\\S+)`).exec(s)?.[1];
    const unit = `ns=${out.ns}`;
    expect(field(unit, 'ns')).toBe(field(out.mine, 'ns'));
    expect(field(unit, 'root')).toMatch(/^\d+:\d+$/);
    expect(field(unit, 'root')).toBe(field(out.mine, 'root'));
    const machine = statSync('/');
    expect(field(unit, 'root')).not.toBe(`${machine.dev}:${machine.ino}`);
    expect(field(unit, 'sid')).not.toBe(field(out.mine, 'sid'));
    // Still there after the session that started it ended; gone once killed, and is-active says so.
    const after = await sh([`kill -0 ${out.pid} && echo alive`, `kill -9 ${out.pid}`, until('[ "$(systemctl is-active probe)" = failed ]', 'is-active failed'), 'systemctl show -p MainPID probe'].join('\n'));
    expect(after).toBe('alive\nMainPID=0\n');
  });

  it('restarts a unit as Restart= says, and stop kills by the recorded PID, never by name', async () => {
    const out = kv(
      await sh(
        [
          put({ '/etc/systemd/system/looper.service': '[Service]\nExecStart=/bin/sleep 600\nRestart=always\nRestartSec=200ms\n' }),
          'systemctl daemon-reload && systemctl start looper',
          'first=$(systemctl show -p MainPID --value looper); kill $first',
          until('[ "$(systemctl show -p MainPID --value looper)" != 0 ] && [ "$(systemctl show -p MainPID --value looper)" != $first ]', 'a new main PID'),
          'echo "restarts=$(systemctl show -p NRestarts --value looper)"',
          // A process of the same name that the unit did not start is left alone by stop.
          'nohup /bin/sleep 600 > /dev/null 2>&1 < /dev/null & decoy=$!',
          'systemctl stop looper; echo "after=$(systemctl is-active looper)"',
          'kill -0 $decoy && echo "decoy=alive"; kill $decoy',
        ].join('\n'),
      ),
    );
    expect(out).toMatchObject({ restarts: '1', after: 'inactive', decoy: 'alive' });
  });

  it("starts kubelet's unit as kubeadm's drop-in configures it, with the kubelet in place", async () => {
    const files = {
      ...serviceFiles(),
      '/usr/bin/kubelet': '#!/bin/sh\necho "kubelet $*"\nexec sleep 600\n',
      '/var/lib/kubelet/kubeadm-flags.env': 'KUBELET_KUBEADM_ARGS="--container-runtime=remote --node-ip=10.0.0.1"\n',
    };
    const out = await sh(
      [
        put(files),
        'chmod +x /usr/bin/kubelet && systemctl daemon-reload && systemctl enable kubelet 2>/dev/null && systemctl start kubelet',
        'systemctl is-active kubelet; systemctl is-enabled kubelet',
        'pid=$(systemctl show -p MainPID --value kubelet)',
        until('journalctl -u kubelet _PID=$pid -o cat | grep -q kubelet', 'kubelet said its flags'),
        'journalctl -u kubelet _PID=$pid -o cat; systemctl stop kubelet',
      ].join('\n'),
    );
    expect(out).toBe(
      'active\nenabled\nkubelet --bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf --config=/var/lib/kubelet/config.yaml --container-runtime=remote --node-ip=10.0.0.1\n',
    );
  });

  const ip = () => t.lab.hosts[0].ip;
  const registryCommand = (store: string) => [ACINSTALL, 'serve', '--store', store, '--listen', `${ip()}:5000`, '--workers', '2', '--quiet'];
  const answers = () => `[ "$(curl -s -o /dev/null -w '%{http_code}' http://${ip()}:5000/v2/)" = 200 ]`;
  /** Installs and starts the registry's unit for `command`; returns its main PID and that process's command line. */
  async function startRegistry(command: string[]): Promise<{ pid: number; cmdline: string[] }> {
    const out = await sh(
      [
        put({ '/etc/systemd/system/acpack-registry.service': registryUnit(command) }),
        'systemctl daemon-reload && systemctl enable acpack-registry 2>/dev/null && systemctl restart acpack-registry',
        until(answers(), 'the registry answers', 60),
        'pid=$(systemctl show -p MainPID --value acpack-registry); echo "$pid"',
        "tr '\\0' '\\n' < /proc/$pid/cmdline",
      ].join('\n'),
    );
    const [pid, ...cmdline] = out.trimEnd().split('\n');
    return { pid: Number(pid), cmdline };
  }

  it("runs the site registry's unit with a % and a $ in its command line: systemd runs that very command line", async () => {
    const store = '/var/lib/acpack 100%s/$store';
    const command = registryCommand(store);
    await sh(`mkdir -p '${store}'`); // serve refuses a store that does not exist; it makes blobs/ in it
    const { cmdline } = await startRegistry(command);
    expect(cmdline).toEqual(command);
    expect(await sh(`test -d '${store}/blobs' && echo yes; systemctl stop acpack-registry`)).toBe('yes\n');
  }, 120_000);

  it("the registry's primary exits 1 when its workers keep dying, and the unit's Restart= brings it back", async () => {
    await sh('mkdir -p /var/lib/acpack-crashing');
    const { pid: primary } = await startRegistry(registryCommand('/var/lib/acpack-crashing'));
    // Workers crash again and again (killed as soon as they appear): the primary gives up with 1...
    const out = await sh(
      [
        until(`{ for w in $(ps -o pid= --ppid ${primary}); do kill -9 $w; done; [ "$(systemctl show -p MainPID --value acpack-registry)" != ${primary} ]; }`, 'the primary gives up', 60),
        `journalctl -u acpack-registry _PID=${primary} -o cat | grep 'workers died'`,
        "journalctl -u acpack-registry _PID=1 -o cat | grep 'Main process exited'",
        // ...and the unit's Restart=always starts it afresh.
        until(answers(), 'the registry answers again', 60),
        'echo "restarts=$(systemctl show -p NRestarts --value acpack-registry)"; systemctl stop acpack-registry',
      ].join('\n'),
    );
    expect(out).toMatch(/workers died within a minute: the registry cannot be kept up/);
    expect(out).toContain('acpack-registry.service: Main process exited, code=exited, status=1/FAILURE');
    expect(out).toContain('restarts=1');
  }, 150_000);
});
