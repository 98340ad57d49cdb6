import { expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { registryUnit } from '../../installer/registry-service.js';

it('writes a unit whose ExecStart systemd splits back into the exact command', () => {
  const command = ['/usr/bin/node', '/opt/acpack dir/bin/acinstall.js', 'serve', '--store', '/var/lib/acpack', '--listen', '0.0.0.0:5000', '--tls', 'auto', '--hostname', 'sea.hub'];
  const unit = registryUnit(command);
  expect(unit).toMatch(/^Restart=always$/m);
  expect(unit).toMatch(/^WantedBy=multi-user\.target$/m);
  const execStart = /^ExecStart=(.*)$/m.exec(unit)![1];
  // systemd splits ExecStart like a shell would for these (quotes, backslashes): check with sh.
  const split = execFileSync('sh', ['-c', `for a in ${execStart}; do printf '%s\\n' "$a"; done`]).toString().trimEnd().split('\n');
  expect(split).toEqual(command);
});
