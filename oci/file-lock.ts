import { open, stat, type FileHandle } from 'node:fs/promises';
import { AcpackError } from './errors.js';
import { Database, isBusy } from './sqlite.js';

/**
 * Cross-process exclusive locks on files, released by the kernel when their process dies.
 *
 * Node has no flock(2); SQLite's unix VFS takes POSIX record locks and tracks them per inode inside
 * the process (so two holders in one process exclude each other too). An exclusive transaction on an
 * empty database file is such a lock: `BEGIN EXCLUSIVE` with a zero busy timeout either takes it at
 * once or fails, so waiting is an asynchronous retry and never blocks the event loop (a busy timeout
 * would). This module is the only place that knows how the lock is taken; sqlite.ts keeps it to
 * one SQLite library per process, which this needs.
 */
/**
 * Paths this process holds or is taking. POSIX locks belong to the process: closing any descriptor
 * of a locked file would drop them, so a second try in this process must not even open the file.
 */
const mine = new Set<string>();

export class FileLock {
  private constructor(
    private readonly path: string,
    private readonly db: Database,
    private readonly pin: FileHandle,
  ) {}

  /**
   * Takes the lock on `path` (created if absent), or returns undefined at once when another holder
   * has it. A lock file may be deleted by its holder (an ingest directory removed on commit): a
   * waiter that then wins the deleted file's lock sees that the path names another file, and fails
   * this try instead of believing it holds the path.
   */
  static async try(path: string): Promise<FileLock | undefined> {
    if (mine.has(path)) return undefined;
    mine.add(path);
    let pin: FileHandle;
    try {
      pin = await open(path, 'a', 0o600);
    } catch (err) {
      mine.delete(path);
      throw err;
    }
    // Held open for the lock's life: the inode cannot be reused while it is open, so "the path still
    // names this inode" below is a sound test. Closed only after SQLite lets go (closing any descriptor
    // of a file drops the process's POSIX locks on it).
    let db: Database | undefined;
    try {
      const pinned = await pin.stat();
      try {
        db = Database.open(path, { busyTimeoutMs: 0 });
      } catch (err) {
        // The holder removed the file (and its directory) since it was opened above: not taken.
        if (!(await stat(path).catch(() => undefined))) return release(path, db, pin);
        throw err;
      }
      try {
        db.exec('BEGIN EXCLUSIVE');
      } catch (err) {
        if (isBusy(err)) return release(path, db, pin);
        throw err;
      }
      const now = await stat(path).catch(() => undefined);
      if (!now || now.ino !== pinned.ino || now.dev !== pinned.dev) return release(path, db, pin);
      return new FileLock(path, db, pin);
    } catch (err) {
      await release(path, db, pin);
      throw err;
    }
  }

  /**
   * Takes the lock on `path`, retrying asynchronously (never blocking the event loop) until
   * `timeoutMs` (0: one try); then `busy()` is thrown. `prepare` runs before each try: it makes the
   * lock's directory, which a holder may remove when it is done (the try then sees ENOENT and retries).
   */
  static async acquire(path: string, o: { busy: () => Error; timeoutMs?: number; prepare?: () => Promise<unknown> }): Promise<FileLock> {
    const deadline = Date.now() + (o.timeoutMs ?? 60_000);
    for (let wait = 1; ; wait = Math.min(wait * 2, 50)) {
      const lock = await (o.prepare ? o.prepare() : Promise.resolve())
        .then(() => FileLock.try(path))
        .catch((err: NodeJS.ErrnoException) => {
          if (o.prepare && err.code === 'ENOENT') return undefined;
          throw err;
        });
      if (lock) return lock;
      if (Date.now() >= deadline) throw o.busy();
      await new Promise((r) => setTimeout(r, wait));
    }
  }

  async release(): Promise<void> {
    await release(this.path, this.db, this.pin);
  }
}

async function release(path: string, db: Database | undefined, pin: FileHandle): Promise<undefined> {
  try {
    if (db?.inTransaction) db.exec('ROLLBACK');
    db?.close();
  } finally {
    await pin.close().finally(() => mine.delete(path));
  }
  return undefined;
}
