import cluster from 'node:cluster';
import { programArgv } from '../ui/program.js';
import { main } from './cli.js';

// No top-level await: the site executable is this module bundled as CommonJS (docs/runtime.md).
void main(programArgv()).then((code) => {
  // `serve` keeps running; everything else ends here. A failed registry worker must exit outright:
  // its channel to the primary would keep it alive, and the primary waits for it to go.
  if (code !== 0) {
    if (cluster.isWorker) process.exit(code);
    process.exitCode = code;
  }
});
