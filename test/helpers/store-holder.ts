/**
 * A separate OS process that holds one of a store's locks, for tests of cross-process exclusion:
 *   tsx store-holder.ts STORE ref REF MS    holds an ingest writer of REF (having written "partial")
 *   tsx store-holder.ts STORE store MS      holds the store-wide lock
 * Prints "held" once it holds the lock, then holds it MS milliseconds (or until killed), and exits.
 */
import { ContentStore } from '../../oci/store.js';

const [root, kind, a, b] = process.argv.slice(2);
const store = await ContentStore.open(root);
const hold = (ms: number) => new Promise((r) => setTimeout(r, ms));
if (kind === 'ref') {
  const first = await store.writer(a, {});
  await first.write(Buffer.from('partial'));
  await first.close(); // on disk now, for a resume
  const w = await store.writer(a, {});
  process.stdout.write('held\n');
  await hold(Number(b));
  await w.close();
} else {
  await store.exclusive(async () => {
    process.stdout.write('held\n');
    await hold(Number(a));
  });
}
