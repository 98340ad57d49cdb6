import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { nodeArch } from '../../arch/platform.js';
import { FileLock } from '../../oci/file-lock.js';
import { Database, isBusy } from '../../oci/sqlite.js';
import { siteNode } from '../../runtime/site-runtime.js';
import { readFixture, writeFixture } from '../helpers/sqlite-fixture.js';

const ROOT = resolve(import.meta.dirname, '../..');
/**
 * The Node the peer process runs on: the site runtime's (node:sqlite) by default, so that with this
 * process on the build machine's Node 20 (better-sqlite3) the two libraries meet. ACPACK_SITE_NODE
 * names another, e.g. Node 20 when this suite itself runs on the site runtime.
 */
const PEER_NODE = process.env.ACPACK_SITE_NODE ?? siteNode(nodeArch());

let dir: string;
let open: Database[];
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'acpack-sqlite-'));
  open = [];
});
afterEach(async () => {
  for (const db of open) db.close();
  await rm(dir, { recursive: true, force: true });
});

function db(name = 'x.db', busyTimeoutMs = 0): Database {
  const d = Database.open(join(dir, name), { busyTimeoutMs });
  open.push(d);
  return d;
}

const count = (d: Database) => (d.prepare('SELECT count(*) AS n FROM t').get() as { n: number }).n;

describe('Database', () => {
  it('commits what a transaction did and returns its result', () => {
    const d = db();
    d.exec('CREATE TABLE t (a TEXT)');
    expect(d.transaction(() => d.prepare('INSERT INTO t VALUES (?)').run('one').changes)).toBe(1);
    expect(d.inTransaction).toBe(false);
    expect(count(db())).toBe(1);
  });

  it('rolls back a transaction that throws, and a nested one alone', () => {
    const d = db();
    d.exec('CREATE TABLE t (a TEXT)');
    const insert = d.prepare('INSERT INTO t VALUES (?)');
    expect(() => d.transaction(() => (insert.run('lost'), fail()))).toThrow('boom');
    expect(d.inTransaction).toBe(false);
    expect(count(d)).toBe(0);

    d.transaction(() => {
      insert.run('kept');
      expect(() => d.transaction(() => (insert.run('undone'), fail()))).toThrow('boom');
      expect(d.inTransaction).toBe(true);
      d.transaction(() => insert.run('nested, kept'));
    });
    expect((d.prepare('SELECT a FROM t ORDER BY a').all() as { a: string }[]).map((r) => r.a)).toEqual(['kept', 'nested, kept']);
  });

  it('refuses a transaction function that returns a promise, and rolls it back', () => {
    const d = db();
    d.exec('CREATE TABLE t (a TEXT)');
    expect(() => d.transaction(() => (d.prepare('INSERT INTO t VALUES (?)').run('x'), Promise.resolve()))).toThrow(/promise/);
    expect(count(d)).toBe(0);
  });

  it('binds named parameters from an object without their prefix; get() gives undefined for no row', () => {
    const d = db();
    d.exec('CREATE TABLE t (repo TEXT, n INTEGER)');
    d.prepare('INSERT INTO t VALUES (@repo, @n)').run({ repo: 'a/b', n: 3 });
    const q = d.prepare('SELECT n, typeof(n) AS type FROM t WHERE repo = @repo');
    expect({ ...(q.get({ repo: 'a/b' }) as object) }).toEqual({ n: 3, type: 'integer' });
    expect(q.get({ repo: 'c/d' })).toBeUndefined();
    // Numbers bind as REAL: LIMIT must still take an integral one.
    expect(d.prepare('SELECT n FROM t LIMIT ?').all(1)).toHaveLength(1);
  });

  it('with a zero busy timeout, fails at once with SQLITE_BUSY while another connection holds a write lock; with one, waits', () => {
    const a = db();
    a.exec('CREATE TABLE t (a TEXT)');
    a.exec('BEGIN IMMEDIATE');
    const b = db();
    expect(isBusy(thrown(() => b.transaction(() => b.prepare('INSERT INTO t VALUES (1)').run(), 'immediate')))).toBe(true);
    expect(b.inTransaction).toBe(false);
    expect(isBusy(thrown(() => b.exec('BEGIN EXCLUSIVE')))).toBe(true);

    const started = Date.now();
    expect(isBusy(thrown(() => db('x.db', 150).exec('BEGIN EXCLUSIVE')))).toBe(true);
    expect(Date.now() - started).toBeGreaterThanOrEqual(140);
    a.exec('ROLLBACK');
    b.transaction(() => b.prepare('INSERT INTO t VALUES (1)').run(), 'exclusive');
    expect(count(a)).toBe(1);
  });

  it('loads better-sqlite3 only where node:sqlite is missing or incomplete', () => {
    db().exec('CREATE TABLE t (a TEXT)');
    const addon = Object.keys(createRequire(import.meta.url).cache).some((k) => k.includes('better-sqlite3'));
    expectLibraryOf({ node: process.version, addon, result: undefined });
  });

  it('says a non-SQLite error is not busy', () => {
    expect(isBusy(new Error('database is locked'))).toBe(false);
    expect(isBusy(undefined)).toBe(false);
  });
});

function fail(): never {
  throw new Error('boom');
}

function thrown(f: () => unknown): unknown {
  try {
    f();
  } catch (err) {
    return err;
  }
  throw new Error('expected it to throw');
}

interface PeerSays {
  node: string;
  addon: boolean;
  result: unknown;
}

/** Runs test/helpers/sqlite-peer.ts on PEER_NODE; `whileRunning` gets its first line, then its stdin is closed. */
function peer(args: string[], whileRunning?: (said: PeerSays) => Promise<void>): Promise<{ said: PeerSays; stderr: string }> {
  const child = spawn(PEER_NODE, ['--import', 'tsx', join(ROOT, 'test/helpers/sqlite-peer.ts'), ...args], { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  let said: PeerSays | undefined;
  let acting: Promise<void> = Promise.resolve();
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  child.stdout.on('data', (c: Buffer) => {
    stdout += c.toString();
    if (!said && stdout.includes('\n')) {
      said = JSON.parse(stdout.slice(0, stdout.indexOf('\n'))) as PeerSays;
      acting = (whileRunning?.(said) ?? Promise.resolve()).finally(() => child.stdin.end());
    }
  });
  if (!whileRunning) child.stdin.end();
  return new Promise((res, rej) => {
    child.on('error', rej);
    child.on('close', (code) => {
      acting.then(() => {
        if (code !== 0 || !said) rej(new Error(`sqlite peer ${args[0]} on ${PEER_NODE} exited ${code}: ${stderr}`));
        else res({ said, stderr });
      }, rej);
    });
  });
}

/** node:sqlite where it is complete (Node ≥ 22.16): the addon must then never be loaded. */
function expectLibraryOf(said: PeerSays) {
  const [major, minor] = said.node.slice(1).split('.').map(Number);
  expect(said.addon, `${said.node} loaded better-sqlite3`).toBe(!(major > 22 || (major === 22 && minor >= 16)));
}

describe(`with another process, on ${relative(ROOT, PEER_NODE)}`, () => {
  it('reads what this process wrote, and writes what this process reads, printing no warning', async () => {
    writeFixture(dir);
    const read = await peer(['read', dir]);
    expect(read.said.result).toEqual(readFixture(dir));
    expectLibraryOf(read.said);
    expect(read.stderr).toBe('');

    const other = join(dir, 'peer-store');
    await mkdir(other);
    const wrote = await peer(['write', other]);
    expect(wrote.stderr).toBe('');
    expect(JSON.parse(JSON.stringify(readFixture(other)))).toEqual(read.said.result);
  });

  it('excludes this process from a file lock it holds, until it ends', async () => {
    const file = join(dir, 'lock');
    const { said } = await peer(['hold', file], async () => {
      expect(await FileLock.try(file)).toBeUndefined();
    });
    expect(said.result).toBe(true);
    const mine = await FileLock.try(file);
    expect(mine).toBeDefined();
    await mine!.release();
  });

  it('is excluded from a file lock this process holds', async () => {
    const file = join(dir, 'lock');
    const mine = (await FileLock.try(file))!;
    try {
      expect((await peer(['hold', file])).said.result).toBe(false);
    } finally {
      await mine.release();
    }
  });
});
