import cluster from 'node:cluster';
import { main } from './cli.js';

const code = await main(process.argv);
// `serve` keeps running; everything else ends here. A failed registry worker must exit outright:
// its channel to the primary would keep it alive, and the primary waits for it to go.
if (code !== 0) {
  if (cluster.isWorker) process.exit(code);
  process.exitCode = code;
}
