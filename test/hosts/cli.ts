/**
 * `npm run hosts:up [-- N]`: brings up N test hosts (default 3) and stays in the foreground; Ctrl-C
 * tears everything down. `npm run hosts:exec -- [HOST] COMMAND…` runs a command on a host of the lab
 * that is up (hosts:up's or the demo's). `npm run hosts:down` removes a lab left behind by a crash.
 */
import { spawn } from 'node:child_process';
import { labUp } from './lab.js';
import { claimLabState, describeLab, hostCommand, LAB_STATE, loadLabState, removeLab, removeSavedLab, saveLabState } from './lab-state.js';

async function up(count: number): Promise<void> {
  await claimLabState();
  const lab = await labUp(count, { id: 1, dir: '/tmp/acpack-lab' });
  await saveLabState(lab);
  process.stdout.write(`lab ${lab.id} up on ${lab.subnet} (unreachable from this namespace):\n${describeLab((await loadLabState())!)}Ctrl-C to tear it down.\n`);
  // Ctrl-C under npm arrives twice (from the terminal and relayed by tsx): the first one tears down,
  // and the handler stays so that the second cannot cut that short.
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    await removeLab(lab);
    process.exit(0);
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

async function exec(argv: string[]): Promise<number> {
  const state = await loadLabState();
  if (!state) throw new Error(`no lab is up (${LAB_STATE}): npm run hosts:up, or npm run demo -- --keep`);
  const named = state.hosts.find((h) => h.name === argv[0] || h.ip === argv[0]);
  const host = named ?? state.hosts[0];
  const command = named ? argv.slice(1) : argv;
  if (command.length === 0) throw new Error('usage: npm run hosts:exec -- [HOST] COMMAND [ARGS…]   (HOST: a name or IP, default the first host)');
  const [bin, ...args] = hostCommand(state, host, command);
  // The caller's own directory (npm runs scripts from the package root): relative paths mean what they typed.
  const child = spawn(bin, args, { stdio: 'inherit', cwd: process.env.INIT_CWD ?? process.cwd() });
  return new Promise((done) => child.on('exit', (code, signal) => done(code ?? (signal ? 128 : 1))));
}

async function down(): Promise<void> {
  const state = await loadLabState();
  if (!state) {
    process.stdout.write('no lab is up\n');
    return;
  }
  await removeSavedLab(state);
  process.stdout.write(`lab ${state.id} removed\n`);
}

const [cmd, ...rest] = process.argv.slice(2);
try {
  if (cmd === 'up') await up(Number(rest[0] ?? 3));
  else if (cmd === 'down') await down();
  else if (cmd === 'exec') process.exitCode = await exec(rest);
  else process.stderr.write('usage: tsx test/hosts/cli.ts up [N] | exec [HOST] COMMAND… | down\n');
} catch (err) {
  process.stderr.write(`hosts: ${(err as Error).message}\n`);
  process.exitCode = 1;
}
