// Benchmark entry point: `npm run bench -- <name> [--seconds N] [--size BYTES]`.
// resync also takes [--rate-mbit N] [--delay-ms N] [--dirty BYTES] [--hot BYTES] [--min-age-ms N]; its --size
// defaults to 256 MiB and --seconds to 8. async takes [--rate-mbit N] [--delay-ms N] [--hot BYTES]
// [--lag-rate BYTES_PER_S] [--lag-seconds N] [--parts LIST]; its --size defaults to 64 MiB and
// --seconds to 8; --parts runs only some of its three parts (e.g. `--parts 1` or `--parts 1,3`).
// write-path takes [--size BYTES] (default 64 MiB) and [--writes N] (default 20000). clone's --size
// defaults to 4 GiB. TIDEMARK_BENCH_PROFILE=DIR profiles every tidemark daemon a bench starts (node --cpu-prof), in network namespaces too.
import { benchNbd } from './nbd.js';
import { benchClone } from './clone.js';
import { benchReplication } from './replication.js';
import { benchResync } from './resync.js';
import { benchAsync } from './async.js';
import { benchWritePath } from './write-path.js';
import { benchLink } from './link.js';
import { benchJournal } from './journal.js';

const argv = process.argv.slice(2);
const name = argv[0];
const option = (flag: string, fallback: number): number => {
  const i = argv.indexOf(flag);
  return i >= 0 ? Number(argv[i + 1]) : fallback;
};
const MiB = 1024 * 1024;
/** `--parts 1,3` → [1, 3]; all three by default. */
const parts = (): number[] => {
  const i = argv.indexOf('--parts');
  if (i < 0) return [1, 2, 3];
  const list = (argv[i + 1] ?? '').split(',').map(Number);
  if (list.length === 0 || list.some((n) => ![1, 2, 3].includes(n))) {
    console.error('--parts takes a comma-separated list of 1, 2, 3');
    process.exit(2);
  }
  return list;
};

const benches: Record<string, (args: { seconds: number; sizeBytes: number }) => Promise<void>> = {
  nbd: benchNbd,
  link: () => benchLink({ sizeBytes: option('--size', 256 * MiB) }),
  clone: () => benchClone({ sizeBytes: option('--size', 4 * 1024 * MiB) }),
  replication: (args) => benchReplication(args),
  resync: () => benchResync({
    seconds: option('--seconds', 8), sizeBytes: option('--size', 256 * MiB), dirtyBytes: option('--dirty', 64 * MiB),
    rateMbit: option('--rate-mbit', 100), delayMs: option('--delay-ms', 5), hotBytes: option('--hot', 8 * MiB),
    minAgeMs: option('--min-age-ms', 2000),
  }),
  async: () => benchAsync({
    seconds: option('--seconds', 8), sizeBytes: option('--size', 64 * MiB), rateMbit: option('--rate-mbit', 100),
    delayMs: option('--delay-ms', 5), hotBytes: option('--hot', 8 * MiB), lagRateBytes: option('--lag-rate', 4e6),
    lagSeconds: option('--lag-seconds', 20), parts: parts(),
  }),
  journal: () => benchJournal({ seconds: option('--seconds', 5), sizeBytes: option('--size', 256 * MiB) }),
  'write-path': () => benchWritePath({ sizeBytes: option('--size', 64 * MiB), writes: option('--writes', 20_000) }),
};
const bench = name ? benches[name] : undefined;
if (!bench) {
  console.error(`usage: npm run bench -- <${Object.keys(benches).join('|')}> [--seconds N] [--size BYTES]` +
    ' (async: [--parts 1,2,3] [--rate-mbit N] [--delay-ms N] [--hot BYTES] [--lag-rate BYTES_PER_S] [--lag-seconds N])');
  process.exit(2);
}
await bench({ seconds: option('--seconds', 10), sizeBytes: option('--size', 1024 * 1024 * 1024) });
