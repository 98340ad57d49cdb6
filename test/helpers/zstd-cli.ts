import { spawn } from 'node:child_process';

/**
 * Runs the zstd CLI on `input` (bytes, or a shell command whose output it reads) and returns what it
 * writes. Tests of decompression get their input here rather than from zstdCompress: that is the
 * packer's, and needs zstd-napi, which the site's runtime has no way to load.
 */
export function zstdCli(args: string[], input: Buffer | { shell: string }): Promise<Buffer> {
  const script = Buffer.isBuffer(input) ? 'exec zstd -q "$@"' : `${input.shell} | zstd -q "$@"`;
  const child = spawn('sh', ['-c', script, 'sh', ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  const out: Buffer[] = [];
  let err = '';
  child.stdout.on('data', (c: Buffer) => out.push(c));
  child.stderr.on('data', (c: Buffer) => (err += c.toString()));
  child.stdin.end(Buffer.isBuffer(input) ? input : undefined);
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(Buffer.concat(out)) : reject(new Error(`zstd ${args.join(' ')}: exit ${code}: ${err}`))));
  });
}
