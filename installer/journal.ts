import { join } from 'node:path';
import { Database } from '../oci/sqlite.js';

export interface JournalEntry {
  node: string;
  step: string;
  status: 'done' | 'failed';
  detail: string;
  at: string;
}

/**
 * What acinstall did, per node and step, in SQLite on the master. A re-run skips steps recorded as
 * done (each step's own check decides whether "done" still holds) and retries the rest.
 */
export class Journal {
  private readonly db: Database;

  constructor(stateDir: string) {
    // Another acinstall (status beside an install) may be writing the journal: wait for it.
    this.db = Database.open(join(stateDir, 'journal.db'), { busyTimeoutMs: 5000 });
    this.db.exec('PRAGMA journal_mode = WAL');
    this.db.exec(`CREATE TABLE IF NOT EXISTS steps (
      node TEXT NOT NULL, step TEXT NOT NULL, status TEXT NOT NULL, detail TEXT NOT NULL, at TEXT NOT NULL,
      bundle TEXT NOT NULL DEFAULT '',
      PRIMARY KEY (node, step))`);
  }

  /** Done, and (when `bundle` is given) done for that bundle: a newer bundle redoes its steps. */
  isDone(node: string, step: string, bundle?: string): boolean {
    const row = this.db.prepare('SELECT status, bundle FROM steps WHERE node = ? AND step = ?').get(node, step) as { status: string; bundle: string } | undefined;
    return row?.status === 'done' && (bundle === undefined || row.bundle === bundle);
  }

  /** The detail of a step done, if it is. */
  doneDetail(node: string, step: string): string | undefined {
    const row = this.db.prepare("SELECT detail FROM steps WHERE node = ? AND step = ? AND status = 'done'").get(node, step) as { detail: string } | undefined;
    return row?.detail;
  }

  record(node: string, step: string, status: 'done' | 'failed', detail = '', bundle = ''): void {
    this.db
      .prepare('INSERT OR REPLACE INTO steps (node, step, status, detail, at, bundle) VALUES (?, ?, ?, ?, ?, ?)')
      .run(node, step, status, detail, new Date().toISOString(), bundle);
  }

  /** Forgets a node (after `acinstall delete`). */
  forget(node: string): void {
    this.db.prepare('DELETE FROM steps WHERE node = ?').run(node);
  }

  entries(): JournalEntry[] {
    return this.db.prepare('SELECT node, step, status, detail, at FROM steps ORDER BY node, at').all() as JournalEntry[];
  }

  close(): void {
    this.db.close();
  }
}
