// Benchmark entry point: `npm run bench -- <name> [--seconds N] [--size BYTES]`.
// resync also takes [--rate-mbit N] [--delay-ms N] [--dirty BYTES] [--hot BYTES]; its --size
// defaults to 256 MiB and --seconds to 8. async takes [--rate-mbit N] [--delay-ms N] [--hot BYTES]
// [--lag-rate BYTES_PER_S] [--lag-seconds N]; its --size defaults to 64 MiB and --seconds to 8.
import { benchNbd } from './nbd.js';
import { benchClone } from './clone.js';
import { benchReplication } from './replication.js';
import { benchResync } from './resync.js';
import { benchAsync } from './async.js';

const argv = process.argv.slice(2);
const name = argv[0];
const option = (flag: string, fallback: number): number => {
  const i = argv.indexOf(flag);
  return i >= 0 ? Number(argv[i + 1]) : fallback;
};
const MiB = 1024 * 1024;

const benches: Record<string, (args: { seconds: number; sizeBytes: number }) => Promise<void>> = {
  nbd: benchNbd,
  clone: benchClone,
  replication: (args) => benchReplication(args),
  resync: () => benchResync({
    seconds: option('--seconds', 8), sizeBytes: option('--size', 256 * MiB), dirtyBytes: option('--dirty', 64 * MiB),
    rateMbit: option('--rate-mbit', 100), delayMs: option('--delay-ms', 5), hotBytes: option('--hot', 8 * MiB),
  }),
  async: () => benchAsync({
    seconds: option('--seconds', 8), sizeBytes: option('--size', 64 * MiB), rateMbit: option('--rate-mbit', 100),
    delayMs: option('--delay-ms', 5), hotBytes: option('--hot', 8 * MiB), lagRateBytes: option('--lag-rate', 4e6),
    lagSeconds: option('--lag-seconds', 20),
  }),
};
const bench = name ? benches[name] : undefined;
if (!bench) {
  console.error(`usage: npm run bench -- <${Object.keys(benches).join('|')}> [--seconds N] [--size BYTES]`);
  process.exit(2);
}
await bench({ seconds: option('--seconds', 10), sizeBytes: option('--size', 1024 * 1024 * 1024) });
