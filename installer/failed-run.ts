import { AcpackError } from '../oci/errors.js';
import { redact } from './redact.js';
import type { DetachedRun } from './ssh.js';

/**
 * The error for a detached run (SshHost.runDetached) of `what` on `ip` that did not end well, with
 * the end of what it said. Apart from ssh.ts on purpose: its importers (kubeadm.ts, upgrade.ts)
 * take only types from there, and a value would load ssh2, whose WebAssembly memory every command
 * that loads them (acinstall import among them) would then reserve.
 */
export function failedRun(ip: string, what: string, run: DetachedRun): AcpackError {
  const said = run.state === 'finished' || run.state === 'lost' ? redact(run.stderr.trim() || run.stdout.trim()).slice(-500) : '';
  return new AcpackError('NODE_STEP', `${ip}: ${what} failed (${run.state === 'finished' ? `exit ${run.code}` : 'killed'}): ${said}`);
}
