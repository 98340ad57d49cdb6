import { createRequire } from 'node:module';
import type { DatabaseSync } from 'node:sqlite';

/**
 * SQLite for acpack and acinstall, from whichever library the running Node offers: its built-in
 * `node:sqlite` where it is complete (Node 22.16, 24), else the better-sqlite3 addon. acinstall ships
 * as a single executable on Node 24, which cannot load native addons: the addon is required only on
 * the way to the fallback, never merely by importing this module.
 *
 * One library per process, chosen once: file-lock.ts relies on SQLite's per-process table of POSIX
 * locks, and two SQLite copies in one process would each drop the other's locks on closing a file.
 */

/** What the callers bind: both libraries refuse undefined, and better-sqlite3 booleans (node:sqlite takes them as 1/0). */
export type SqlValue = string | number | bigint | null | Uint8Array;
/** Positional values, or one object of named ones (`@name` in SQL, `{ name }` here). */
export type SqlParams = SqlValue[] | [Record<string, SqlValue>];

/**
 * A prepared statement: the library's own object, so calls cost nothing extra. Rows are plain
 * objects (null-prototype ones from node:sqlite); get() gives undefined when there is no row.
 * Numbers bind as REAL in both libraries; INTEGER columns and LIMIT take integral ones as integers.
 */
export interface Statement {
  run(...params: SqlParams): { changes: number | bigint; lastInsertRowid: number | bigint };
  get(...params: SqlParams): unknown;
  all(...params: SqlParams): unknown[];
}

interface Library {
  open(path: string, busyTimeoutMs: number): Connection;
  inTransaction(c: Connection): boolean;
  isBusy(err: unknown): boolean;
}

interface Connection {
  prepare(sql: string): Statement;
  exec(sql: string): unknown;
  close(): unknown;
}

const SQLITE_BUSY = 5;
let library: Library | undefined;
const chosen = (): Library => (library ??= builtIn() ?? addon());

function builtIn(): Library | undefined {
  const sqlite = withoutSqliteWarning(() => process.getBuiltinModule('node:sqlite') as typeof import('node:sqlite') | undefined);
  if (!sqlite) return undefined;
  // Before Node 22.16 node:sqlite has neither isTransaction nor a busy timeout: not enough here.
  const probe = new sqlite.DatabaseSync(':memory:');
  const complete = 'isTransaction' in probe;
  probe.close();
  if (!complete) return undefined;
  return {
    open: (path, busyTimeoutMs) => new sqlite.DatabaseSync(path, { timeout: busyTimeoutMs }) as unknown as Connection,
    inTransaction: (c) => (c as unknown as DatabaseSync).isTransaction,
    // errcode may be an extended code (SQLITE_BUSY_SNAPSHOT...): its low byte is the primary one.
    isBusy: (err) => (Number((err as { errcode?: unknown }).errcode) & 0xff) === SQLITE_BUSY,
  };
}

function addon(): Library {
  type BetterSqlite = typeof import('better-sqlite3');
  const Database = createRequire(import.meta.url)('better-sqlite3') as BetterSqlite;
  return {
    open: (path, busyTimeoutMs) => new Database(path, { timeout: busyTimeoutMs }) as unknown as Connection,
    inTransaction: (c) => (c as unknown as InstanceType<BetterSqlite>).inTransaction,
    isBusy: (err) => /^SQLITE_BUSY(_|$)/.test(String((err as { code?: unknown }).code)),
  };
}

/**
 * Node 22 announces node:sqlite as experimental on stderr when it is loaded, which acinstall's users
 * need not read; that one warning is dropped while loading, every other still goes through.
 */
function withoutSqliteWarning<T>(load: () => T): T {
  const emit = process.emitWarning;
  process.emitWarning = function (this: unknown, warning: string | Error, ...rest: unknown[]) {
    const type = typeof rest[0] === 'string' ? rest[0] : (rest[0] as { type?: string } | undefined)?.type;
    if (type === 'ExperimentalWarning' && /^SQLite\b/.test(String(warning))) return;
    return (emit as (...a: unknown[]) => void).call(process, warning, ...rest);
  } as typeof process.emitWarning;
  try {
    return load();
  } finally {
    process.emitWarning = emit;
  }
}

/** Whether `err` is SQLite's "database is locked" (SQLITE_BUSY), from either library. */
export function isBusy(err: unknown): boolean {
  return typeof err === 'object' && err !== null && chosen().isBusy(err);
}

export type TransactionMode = 'deferred' | 'immediate' | 'exclusive';

export class Database {
  private constructor(
    private readonly c: Connection,
    private readonly lib: Library,
  ) {}

  /**
   * Opens (creating if absent) the database at `path`. `busyTimeoutMs` is how long a statement waits
   * for another connection's lock before failing with SQLITE_BUSY, blocking the thread meanwhile
   * (better-sqlite3 waited 5000 ms unless told, node:sqlite 0: callers say which they mean).
   */
  static open(path: string, o: { busyTimeoutMs: number }): Database {
    const lib = chosen();
    return new Database(lib.open(path, o.busyTimeoutMs), lib);
  }

  prepare(sql: string): Statement {
    return this.c.prepare(sql);
  }

  exec(sql: string): void {
    this.c.exec(sql);
  }

  get inTransaction(): boolean {
    return this.lib.inTransaction(this.c);
  }

  /**
   * Runs `fn` in a transaction: committed when it returns, rolled back when it throws (or when the
   * COMMIT fails). Inside another transaction it is a savepoint, undone alone on a throw, and `mode`
   * does not apply. The same statements better-sqlite3's db.transaction() issued, so a store written
   * by either library sees the same locking.
   */
  transaction<T>(fn: () => T, mode: TransactionMode = 'deferred'): T {
    const nested = this.inTransaction;
    this.exec(nested ? 'SAVEPOINT "tx"' : `BEGIN ${mode.toUpperCase()}`);
    try {
      const result = fn();
      if (typeof (result as { then?: unknown } | undefined)?.then === 'function') throw new TypeError('a transaction cannot span an await: its function must not return a promise');
      this.exec(nested ? 'RELEASE "tx"' : 'COMMIT');
      return result;
    } catch (err) {
      // SQLite may have rolled back by itself already (some errors end the transaction).
      if (this.inTransaction) {
        if (nested) this.exec('ROLLBACK TO "tx"; RELEASE "tx"');
        else this.exec('ROLLBACK');
      }
      throw err;
    }
  }

  close(): void {
    this.c.close();
  }
}
