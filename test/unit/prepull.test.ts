import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { chmod, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { prepullRunning, prepullScript } from '../../installer/prepull.js';
import { tempDir } from '../helpers/env.js';

const run = promisify(execFile);

/**
 * The images-pulled-ahead job on a node that is not fresh: a pid file left by a run before a reboot
 * (its PID now someone else's), a pull of the same list still running, one of an earlier bundle's.
 * `ctr` is a stand-in on PATH that records what it was asked and takes a while.
 */
describe('the images pulled ahead', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let dir: string;
  let env: NodeJS.ProcessEnv;
  const others: ChildProcess[] = [];
  /** Running, not a zombie (a killed job re-parented to an init that does not reap it stays one). */
  const alive = async (pid: number) => !/^\d+ \(.*\) Z/.test(await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '0 (gone) Z'));
  const start = async (refs: string[]) => (await run('sh', ['-c', prepullScript(refs, 'amd64', dir)], { env })).stdout.trim();
  const pid = async () => Number(await readFile(join(dir, 'pid'), 'utf8'));

  beforeEach(async () => {
    work = await tempDir('acpack-prepull-');
    dir = join(work.dir, 'prepull');
    await writeFile(join(work.dir, 'ctr'), `#!/bin/sh\necho "$@" >> ${work.dir}/ctr.calls\nsleep 2\n`);
    await chmod(join(work.dir, 'ctr'), 0o755);
    env = { ...process.env, PATH: `${work.dir}:${process.env.PATH}` };
  });
  afterEach(async () => {
    if (await readFile(join(dir, 'pid'), 'utf8').catch(() => '')) await run('sh', ['-c', `if ${prepullRunning(dir)}; then kill -- -"$(cat ${dir}/pid)"; fi`]).catch(() => {});
    for (const o of others.splice(0)) o.kill();
    await work.cleanup();
  });

  it('starts afresh over a pid file whose PID another process has now, and leaves that process alone', async () => {
    const stranger = spawn('sleep', ['30']);
    others.push(stranger);
    await run('mkdir', ['-p', dir]);
    await writeFile(join(dir, 'pid'), `${stranger.pid}\n`);
    expect(await start(['a/b:1'])).toBe('started');
    expect(await pid()).not.toBe(stranger.pid);
    // reset's check: the stranger is not ours to kill.
    await run('sh', ['-c', `if ${prepullRunning(dir)}; then echo ours; else echo not-ours; fi`]).then((r) => expect(r.stdout.trim()).toBe('ours'));
    await writeFile(join(dir, 'pid'), `${stranger.pid}\n`);
    expect((await run('sh', ['-c', `if ${prepullRunning(dir)}; then echo ours; else echo not-ours; fi`])).stdout.trim()).toBe('not-ours');
    expect(await alive(stranger.pid!)).toBe(true);
  });

  it('leaves a pull of the same list running, and stops one of another list before starting', async () => {
    expect(await start(['a/b:1', 'c:2'])).toBe('started');
    const first = await pid();
    expect(await start(['a/b:1', 'c:2'])).toBe('running');
    expect(await start(['d:3'])).toBe('started');
    const second = await pid();
    expect(second).not.toBe(first);
    for (let i = 0; i < 50 && (await alive(first)); i++) await sleep(20);
    expect(await alive(first)).toBe(false);
    for (let i = 0; i < 150 && !(await readFile(join(dir, 'status'), 'utf8').catch(() => '')); i++) await sleep(20);
    expect((await readFile(join(dir, 'status'), 'utf8')).trim()).toBe('0');
    expect(await readFile(join(work.dir, 'ctr.calls'), 'utf8')).toContain('images pull --hosts-dir /etc/containerd/certs.d --platform linux/amd64 d:3');
    // What the node's agent is asked to preheat meanwhile: the same list.
    expect(JSON.parse(await readFile(join(dir, 'preheat.json'), 'utf8'))).toEqual({ images: ['d:3'], platform: 'linux/amd64' });
  });
});
