import { expect, it } from 'vitest';
import { registryUnit } from '../../installer/registry-service.js';
import { commandArgv, parseExec, parseUnitText, unitEnvironment, type UnitDefinition } from '../hosts/standins/systemd-units.mjs';

/** ExecStart= of a unit text read back as systemd reads it (the test hosts' systemd stand-in's parser). */
function execStartArgv(unit: string): string[] {
  const lines = parseUnitText(unit).filter((l) => l.section === 'Service' && l.key === 'ExecStart');
  expect(lines).toHaveLength(1);
  const [cmd] = parseExec(lines[0].value, 'acpack-registry.service');
  return commandArgv(cmd, unitEnvironment({ id: 'acpack-registry.service', loadState: 'loaded', environment: [], environmentFiles: [] } as UnitDefinition));
}

it('writes a unit whose ExecStart systemd splits back into the exact command', () => {
  const command = ['/usr/bin/node', '/opt/acpack dir/bin/acinstall.js', 'serve', '--store', '/var/lib/acpack', '--listen', '0.0.0.0:5000', '--tls', 'auto', '--hostname', 'sea.hub'];
  const unit = registryUnit(command);
  expect(unit).toMatch(/^Restart=always$/m);
  expect(unit).toMatch(/^WantedBy=multi-user\.target$/m);
  expect(execStartArgv(unit)).toEqual(command);
});

it('escapes % and $ in the command line, which systemd would take for specifiers and variables', () => {
  // `%s` is the user's shell to systemd, `%h` root's home; `$PATH` and `${HOME}` are variables.
  const command = ['/usr/bin/node', '/opt/acpack/bin/acinstall.js', 'serve', '--store', '/data/100%store/%h', '--htpasswd', '/etc/acpack/$PATH "x" ${HOME}\\y', '--hostname', '50%'];
  const unit = registryUnit(command);
  expect(unit).toContain('/data/100%%store/%%h');
  expect(execStartArgv(unit)).toEqual(command);
});
