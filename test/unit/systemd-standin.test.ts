import { describe, expect, it } from 'vitest';
import { mkdir, symlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { tempDir } from '../helpers/env.js';
import { serviceFiles } from '../../installer/node-setup.js';
import { commandArgv, expandEnvArgv, extractWords, loadUnit, parseEnvFile, parseExec, parseUnitText, unitEnvironment } from '../hosts/standins/systemd-units.mjs';

// The test hosts' systemd stand-in reads unit files as systemd does; these pin the rules it follows.

async function withUnits(files: Record<string, string>, fn: (searchPath: string[], root: string) => void | Promise<void>) {
  const t = await tempDir();
  try {
    for (const [path, text] of Object.entries(files)) {
      await mkdir(dirname(join(t.dir, path)), { recursive: true });
      await writeFile(join(t.dir, path), text);
    }
    await fn(['/etc/systemd/system', '/run/systemd/system', '/usr/local/lib/systemd/system', '/usr/lib/systemd/system'].map((d) => join(t.dir, d)), t.dir);
  } finally {
    await t.cleanup();
  }
}

const argvOf = (def: ReturnType<typeof loadUnit>) => commandArgv(def.execStart![0], unitEnvironment(def));

describe('the systemd stand-in reads units as systemd does', () => {
  it("runs kubelet as kubeadm's drop-in says: ExecStart= reset, Environment=, EnvironmentFile= (a missing '-' one skipped), $VAR split into words", async () => {
    const files = Object.fromEntries(Object.entries(serviceFiles()).filter(([p]) => p.startsWith('/etc/systemd')));
    await withUnits(files, async (searchPath, root) => {
      // kubeadm's flags file, and the drop-in's EnvironmentFile= pointed into this test's root.
      const flags = join(root, 'var/lib/kubelet/kubeadm-flags.env');
      await mkdir(dirname(flags), { recursive: true });
      await writeFile(flags, 'KUBELET_KUBEADM_ARGS="--container-runtime=remote --container-runtime-endpoint=unix:///run/containerd/containerd.sock --pod-infra-container-image=sea.hub:5000/pause:3.5"\n');
      const dropin = join(root, 'etc/systemd/system/kubelet.service.d/10-kubeadm.conf');
      await writeFile(dropin, files['/etc/systemd/system/kubelet.service.d/10-kubeadm.conf'].replace(/EnvironmentFile=-\//g, `EnvironmentFile=-${root}/`));
      const def = loadUnit('kubelet', searchPath);
      expect(def.loadState, def.error).toBe('loaded');
      expect(def.execStart).toHaveLength(1);
      expect(argvOf(def)).toEqual([
        '/usr/bin/kubelet',
        '--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf',
        '--kubeconfig=/etc/kubernetes/kubelet.conf',
        '--config=/var/lib/kubelet/config.yaml',
        '--container-runtime=remote',
        '--container-runtime-endpoint=unix:///run/containerd/containerd.sock',
        '--pod-infra-container-image=sea.hub:5000/pause:3.5',
      ]);
    });
  });

  it('takes a unit from the first directory of the search path, drop-ins from all (one name in a higher directory hides it below), in name order', async () => {
    await withUnits(
      {
        '/usr/lib/systemd/system/x.service': '[Service]\nExecStart=/bin/true vendor\n',
        '/etc/systemd/system/x.service': '[Service]\nExecStart=/bin/true admin\n',
        '/usr/lib/systemd/system/x.service.d/20-b.conf': '[Service]\nEnvironment=B=vendor\n',
        '/etc/systemd/system/x.service.d/20-b.conf': '[Service]\nEnvironment=B=admin\n',
        '/run/systemd/system/x.service.d/10-a.conf': '[Service]\nEnvironment=A=1 B=from-a\n',
        '/usr/lib/systemd/system/x.service.d/30-c.conf': '[Service]\nExecStart=\nExecStart=/bin/true c $A $B\n',
      },
      (searchPath, root) => {
        const def = loadUnit('x.service', searchPath);
        expect(def.fragment).toBe(join(root, '/etc/systemd/system/x.service'));
        expect(def.dropins!.map((d) => d.slice(root.length))).toEqual(['/run/systemd/system/x.service.d/10-a.conf', '/etc/systemd/system/x.service.d/20-b.conf', '/usr/lib/systemd/system/x.service.d/30-c.conf']);
        expect(argvOf(def)).toEqual(['/bin/true', 'c', '1', 'admin']);
      },
    );
  });

  it('refuses what systemd refuses: two ExecStart= without a reset, an unknown specifier, no ExecStart=; a unit linked to /dev/null is masked', async () => {
    await withUnits(
      {
        '/etc/systemd/system/two.service': '[Service]\nExecStart=/bin/true\n',
        '/etc/systemd/system/two.service.d/x.conf': '[Service]\nExecStart=/bin/false\n',
        '/etc/systemd/system/pct.service': '[Service]\nExecStart=/bin/echo 100%/x\n',
        '/etc/systemd/system/none.service': '[Service]\nRestart=always\n',
      },
      async (searchPath) => {
        expect(loadUnit('two', searchPath).error).toMatch(/more than one ExecStart= setting/);
        expect(loadUnit('pct', searchPath)).toMatchObject({ loadState: 'bad-setting' });
        expect(loadUnit('pct', searchPath).error).toMatch(/Failed to resolve unit specifiers in '100%\/x'/);
        expect(loadUnit('none', searchPath).error).toMatch(/has no ExecStart=/);
        expect(loadUnit('missing', searchPath).loadState).toBe('not-found');
        await symlink('/dev/null', join(searchPath[0], 'masked.service'));
        expect(loadUnit('masked', searchPath).loadState).toBe('masked');
      },
    );
  });

  it('splits command lines: quotes, C escapes, specifiers (%% is %), prefixes, line continuations and comments', () => {
    const unit = parseUnitText('# a comment\n[Service]\n; another\nExecStartPre=-@/bin/sh sh -c "exit 1"\nExecStart=/bin/echo "a b" \'c d\'\\\n  # dropped inside a continuation\n  e\\x41 \\s %% %n %i 50%%\n');
    expect(unit.map((l) => l.key)).toEqual(['ExecStartPre', 'ExecStart']);
    const [pre] = parseExec(unit[0].value, 'x@inst.service');
    expect(pre).toMatchObject({ path: '/bin/sh', argv: ['sh', '-c', 'exit 1'], ignoreFailure: true });
    const [cmd] = parseExec(unit[1].value, 'x@inst.service');
    expect(cmd.argv).toEqual(['/bin/echo', 'a b', 'c d', 'eA', ' ', '%', 'x@inst.service', 'inst', '50%']);
    expect(() => extractWords('"unbalanced')).toThrow(/unbalanced quoting/);
  });

  it('expands variables as systemd does: $X alone splits into words, ${X} stays one, $$ is $, an unset $X (or a bad name) is nothing', () => {
    const env = ['A=one two', 'B=x y'];
    // replace_env_argv(): a word `$A$B` names the variable "A$B", not a valid name: it goes.
    expect(expandEnvArgv(['/bin/x', '$A', 'pre${B}post', '$$A', '$UNSET', '$A$B', 'in$A', '${UNSET}'], env)).toEqual(['/bin/x', 'one', 'two', 'prex ypost', '$A', 'in$A', '']);
    expect(parseEnvFile('# c\nexport A="q \\"x\\" $y"\nB=\'lit $z\'  \nC=bare value  \n;x\nD=a\\ b\n')).toEqual(['A=q "x" $y', "B=lit $z", 'C=bare value', 'D=a b']);
  });
});
