import { main } from './cli.js';

const code = await main(process.argv);
// `serve` keeps running; everything else ends here.
if (code !== 0) process.exitCode = code;
