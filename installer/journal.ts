import Database from 'better-sqlite3';
import { join } from 'node:path';

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
  private readonly db: Database.Database;

  constructor(stateDir: string) {
    this.db = new Database(join(stateDir, 'journal.db'));
    this.db.pragma('journal_mode = WAL');
    this.db.exec(`CREATE TABLE IF NOT EXISTS steps (
      node TEXT NOT NULL, step TEXT NOT NULL, status TEXT NOT NULL, detail TEXT NOT NULL, at TEXT NOT NULL,
      PRIMARY KEY (node, step))`);
  }

  isDone(node: string, step: string): boolean {
    const row = this.db.prepare('SELECT status FROM steps WHERE node = ? AND step = ?').get(node, step) as { status: string } | undefined;
    return row?.status === 'done';
  }

  record(node: string, step: string, status: 'done' | 'failed', detail = ''): void {
    this.db.prepare('INSERT OR REPLACE INTO steps (node, step, status, detail, at) VALUES (?, ?, ?, ?, ?)').run(node, step, status, detail, new Date().toISOString());
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
