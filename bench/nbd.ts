// bench/nbd: fio against a tidemark volume and against nbdkit's file plugin on the same filesystem,
// in one run, with the same jobs. Prints tidemark/nbdkit ratios (higher is better for tidemark).
// Then the same jobs with the cores split (taskset): each server, all its threads, on CPU 1 and fio
// on CPU 0 — steadier figures than when the scheduler moves fio, the event loop, the thread pool and
// V8's garbage-collector threads across both cores, and each server's CPU µs per operation.
import { mkdtemp, rm, open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FioJob, FioResult } from './lib/fio.js';
import { arrayApi, freePort, run, startProcess, stopProcess, tidemarkBin, waitForPort } from './lib/processes.js';
import { goal } from './lib/goals.js';
import { mean } from './lib/stats.js';
import { allCpus, pin, pinningUnavailable, runFioWithCpu } from './lib/cores.js';

const GiB = 1024 * 1024 * 1024;

type Measured = FioResult & { readonly cpu: string };
/** One job's runs, ROUNDS of each server, in the order they ran. */
interface Row { readonly job: string; readonly tidemark: Measured[]; readonly nbdkit: Measured[] }

/**
 * Runs of each server per job, the order alternating: nbdkit's own figures move by a third from one
 * 10 s run to the next on a small VM, and one pair of runs made the ratio swing with them.
 */
const ROUNDS = 2;

/** The ratio of the mean IOPS: tidemark's over nbdkit's. */
const ratioOf = (r: Row): number => mean(r.tidemark.map((m) => m.iops)) / mean(r.nbdkit.map((m) => m.iops));

function printRows(rows: readonly Row[]): void {
  console.log(`job                  tidemark IOPS   nbdkit IOPS   ratio (per round)      tidemark p99 µs   nbdkit p99 µs   CPU µs per op (per round)`);
  for (const r of rows) {
    const rounds = r.tidemark.map((t, i) => (t.iops / r.nbdkit[i]!.iops).toFixed(2)).join(', ');
    const cpu = (ms: Measured[]): string => ms.map((m) => m.cpu.replace(/^\S+ /, '')).join(' / ');
    console.log(`${r.job.padEnd(20)} ${mean(r.tidemark.map((m) => m.iops)).toFixed(0).padStart(13)} ${mean(r.nbdkit.map((m) => m.iops)).toFixed(0).padStart(13)}` +
      ` ${ratioOf(r).toFixed(2).padStart(6)}x (${rounds})`.padEnd(24) +
      ` ${mean(r.tidemark.map((m) => m.p99LatencyUs)).toFixed(0).padStart(15)} ${mean(r.nbdkit.map((m) => m.p99LatencyUs)).toFixed(0).padStart(15)}` +
      `   tidemark ${cpu(r.tidemark)}, nbdkit ${cpu(r.nbdkit)}`);
  }
}

export async function benchNbd(args: { seconds: number; sizeBytes: number }): Promise<void> {
  const dir = await mkdtemp(join(process.env.TIDEMARK_BENCH_DIR ?? tmpdir(), 'tidemark-bench-nbd-'));
  const jobs: FioJob[] = [
    { name: 'randwrite-4k-qd32', rw: 'randwrite', blockSize: '4k', iodepth: 32, runtimeSeconds: args.seconds, sizeBytes: args.sizeBytes },
    { name: 'write-256k-qd8', rw: 'write', blockSize: '256k', iodepth: 8, runtimeSeconds: args.seconds, sizeBytes: args.sizeBytes },
    { name: 'randread-4k-qd32', rw: 'randread', blockSize: '4k', iodepth: 32, runtimeSeconds: args.seconds, sizeBytes: args.sizeBytes },
  ];
  const [apiPort, tmPort, kitPort] = [await freePort(), await freePort(), await freePort()];
  const tidemark = startProcess(tidemarkBin, ['array', 'start', '--data', join(dir, 'array'),
    '--api', `127.0.0.1:${apiPort}`, '--nbd', `127.0.0.1:${tmPort}`], 'tidemark');
  const imagePath = join(dir, 'nbdkit.img');
  const image = await open(imagePath, 'w');
  await image.truncate(args.sizeBytes);
  await image.close();
  const nbdkit = startProcess('nbdkit', ['--foreground', '--ipaddr', '127.0.0.1', '--port', String(kitPort), 'file', imagePath], 'nbdkit');
  try {
    await waitForPort(apiPort);
    await waitForPort(kitPort);
    await arrayApi(apiPort, join(dir, 'array'))('POST', '/v1/volumes', { name: 'bench', sizeBytes: args.sizeBytes });
    const servers = {
      tidemark: { uri: `nbd://127.0.0.1:${tmPort}/bench`, pid: tidemark.pid! },
      nbdkit: { uri: `nbd://127.0.0.1:${kitPort}/`, pid: nbdkit.pid! },
    };
    /** Every job against both servers; `fioCpus` pins fio. Rows carry each server's CPU µs per operation. */
    const measureAll = async (fioCpus?: string): Promise<Row[]> => {
      const out: Row[] = [];
      for (const [index, job] of jobs.entries()) {
        // Alternate which server goes first, and start each run with no dirty pages: otherwise the
        // kernel's write-back of one run's data throttles the next run's writes (seen as 10× swings).
        const measure = async (name: 'tidemark' | 'nbdkit'): Promise<Measured> => {
          await run('sync', []);
          return runFioWithCpu(servers[name].uri, job, [{ role: name, pid: servers[name].pid }], fioCpus);
        };
        const row: Row = { job: job.name, tidemark: [], nbdkit: [] };
        for (let round = 0; round < ROUNDS; round++) {
          const first = (index + round) % 2 === 0 ? 'tidemark' : 'nbdkit';
          const second = first === 'tidemark' ? 'nbdkit' : 'tidemark';
          row[first].push(await measure(first));
          row[second].push(await measure(second));
        }
        out.push(row);
      }
      return out;
    };
    const rows = await measureAll();
    console.log(`bench/nbd: fio ${args.seconds}s per job, ${ROUNDS} rounds of each server, order alternating; ${(args.sizeBytes / GiB).toFixed(1)} GiB volume, same filesystem`);
    printRows(rows);
    const ratio = (job: string): number => ratioOf(rows.find((x) => x.job === job)!);
    goal('256 KiB sequential write vs nbdkit file', ratio('write-256k-qd8'), 'atLeast', 1.0);
    goal('4 KiB random write vs nbdkit file', ratio('randwrite-4k-qd32'), 'atLeast', 1.0);
    const unavailable = await pinningUnavailable();
    if (unavailable !== undefined) {
      console.log(`cores split: not run (${unavailable})`);
    } else {
      try {
        await pin(servers.tidemark.pid, '1');
        await pin(servers.nbdkit.pid, '1');
        const pinned = await measureAll('0');
        console.log('cores split (taskset): each server on CPU 1, fio on CPU 0');
        printRows(pinned);
      } finally {
        for (const s of Object.values(servers)) await pin(s.pid, allCpus()).catch(() => undefined);
      }
    }
  } finally {
    await stopProcess(tidemark);
    await stopProcess(nbdkit);
    await rm(dir, { recursive: true, force: true });
  }
}
