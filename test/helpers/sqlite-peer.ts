/**
 * Another process touching the same SQLite files, run on whichever Node the test chooses (the site
 * runtime's, to pair node:sqlite with better-sqlite3):
 *   tsx sqlite-peer.ts write STORE   writes the fixture (sqlite-fixture.ts) into STORE
 *   tsx sqlite-peer.ts read STORE    reads it back
 *   tsx sqlite-peer.ts hold FILE     takes a FileLock on FILE and keeps it until stdin ends
 * Each prints one JSON line: its Node version, whether it loaded better-sqlite3, and its result.
 */
import { createRequire } from 'node:module';
import { FileLock } from '../../oci/file-lock.js';
import { readFixture, writeFixture } from './sqlite-fixture.js';

const [what, path] = process.argv.slice(2);
const say = (result: unknown) => {
  const addon = Object.keys(createRequire(import.meta.url).cache).some((k) => k.includes('better-sqlite3'));
  process.stdout.write(`${JSON.stringify({ node: process.version, addon, result })}\n`);
};

if (what === 'write') say(writeFixture(path));
else if (what === 'read') say(readFixture(path));
else if (what === 'hold') {
  const lock = await FileLock.try(path);
  say(lock !== undefined);
  process.stdin.resume();
  await new Promise((r) => process.stdin.on('end', r));
  await lock?.release();
} else throw new Error(`sqlite-peer: unknown command ${what}`);
