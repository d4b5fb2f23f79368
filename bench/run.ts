// Benchmark entry point: `npm run bench -- <name> [--seconds N] [--size BYTES]`.
import { benchNbd } from './nbd.js';
import { benchClone } from './clone.js';
import { benchReplication } from './replication.js';

const benches: Record<string, (args: { seconds: number; sizeBytes: number }) => Promise<void>> = {
  nbd: benchNbd,
  clone: benchClone,
  replication: (args) => benchReplication(args),
};

const argv = process.argv.slice(2);
const name = argv[0];
const option = (flag: string, fallback: number): number => {
  const i = argv.indexOf(flag);
  return i >= 0 ? Number(argv[i + 1]) : fallback;
};
const bench = name ? benches[name] : undefined;
if (!bench) {
  console.error(`usage: npm run bench -- <${Object.keys(benches).join('|')}> [--seconds N] [--size BYTES]`);
  process.exit(2);
}
await bench({ seconds: option('--seconds', 10), sizeBytes: option('--size', 1024 * 1024 * 1024) });
