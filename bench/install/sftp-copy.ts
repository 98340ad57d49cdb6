/**
 * The sealer way, for bench/install: copy every file to each node one by one over SFTP, with an
 * md5sum before (here) and after (on the node) each file. Runs inside the master's namespace.
 *   tsx bench/install/sftp-copy.ts KEY FILELIST IP...
 */
import { createHash } from 'node:crypto';
import { readFileSync, createReadStream } from 'node:fs';
import { basename } from 'node:path';
import { Client } from 'ssh2';

const [key, list, ...ips] = process.argv.slice(2);
const files = readFileSync(list, 'utf8').split('\n').filter(Boolean);

function md5(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash('md5');
    createReadStream(path, { highWaterMark: 1 << 20 })
      .on('data', (c) => h.update(c))
      .on('end', () => resolve(h.digest('hex')))
      .on('error', reject);
  });
}

function connect(ip: string): Promise<Client> {
  return new Promise((resolve, reject) => {
    const c = new Client();
    c.once('ready', () => resolve(c)).once('error', reject);
    c.connect({ host: ip, username: 'root', privateKey: readFileSync(key), readyTimeout: 15_000 });
  });
}

function exec(c: Client, cmd: string): Promise<string> {
  return new Promise((resolve, reject) => {
    c.exec(cmd, (err, ch) => {
      if (err) return reject(err);
      let out = '';
      ch.on('data', (d: Buffer) => (out += d));
      ch.stderr.resume();
      ch.on('close', () => resolve(out));
    });
  });
}

for (const ip of ips) {
  const c = await connect(ip);
  const sftp = await new Promise<import('ssh2').SFTPWrapper>((resolve, reject) => c.sftp((err, s) => (err ? reject(err) : resolve(s))));
  await exec(c, 'mkdir -p /var/lib/sealer-copy');
  for (const f of files) {
    const local = await md5(f);
    const remote = `/var/lib/sealer-copy/${basename(f)}`;
    await new Promise<void>((resolve, reject) => sftp.fastPut(f, remote, (err) => (err ? reject(err) : resolve())));
    const after = (await exec(c, `md5sum ${remote}`)).split(' ')[0];
    if (after !== local) throw new Error(`${ip}:${remote}: md5 ${after} != ${local}`);
  }
  c.end();
}
