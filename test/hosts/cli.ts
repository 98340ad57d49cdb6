/**
 * `npm run hosts:up [-- N]`: brings up N test hosts (default 3) and stays in the foreground; Ctrl-C
 * tears everything down. `npm run hosts:down` removes a lab left behind by a crash, from its state file.
 */
import { readFile, writeFile, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { labDown, labUp, type Lab } from './lab.js';

const STATE = '/tmp/acpack-lab.json';

async function up(count: number): Promise<void> {
  if (existsSync(STATE)) throw new Error(`a lab is already up (${STATE}); run npm run hosts:down first`);
  const lab = await labUp(count, { id: 1, dir: '/tmp/acpack-lab' });
  await writeFile(STATE, JSON.stringify({ id: lab.id, subnet: lab.subnet, lock: lab.lock, dir: lab.dir, pids: lab.hosts.map((h) => h.sshd.pid) }));
  process.stdout.write(
    [
      `lab ${lab.id} up on ${lab.subnet} (unreachable from this namespace):`,
      ...lab.hosts.map((h) => `  ${h.name} ${h.ip}   shell: nsenter --net=/run/netns/${lab.hosts[0].netns} ssh -i ${lab.key} -o StrictHostKeyChecking=no root@${h.ip}`),
      'Ctrl-C to tear it down.',
      '',
    ].join('\n'),
  );
  const stop = async () => {
    await labDown(lab);
    await rm(STATE, { force: true });
    process.exit(0);
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

async function down(): Promise<void> {
  if (!existsSync(STATE)) {
    process.stdout.write('no lab is up\n');
    return;
  }
  const s = JSON.parse(await readFile(STATE, 'utf8')) as { id: string; subnet: string; lock?: string; dir: string; pids: number[] };
  for (const pid of s.pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone already
    }
  }
  // labDown kills what remains in the namespaces, deletes them and the route.
  await labDown({ id: s.id, subnet: s.subnet, lock: s.lock, dir: s.dir, key: '', hosts: [] } as Lab);
  await rm(STATE, { force: true });
  process.stdout.write(`lab ${s.id} removed\n`);
}

const [cmd, arg] = process.argv.slice(2);
if (cmd === 'up') await up(Number(arg ?? 3));
else if (cmd === 'down') await down();
else process.stderr.write('usage: tsx test/hosts/cli.ts up [N] | down\n');
