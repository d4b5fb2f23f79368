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
import { allCpus, pin, pinningUnavailable, runFioWithCpu } from './lib/cores.js';

const GiB = 1024 * 1024 * 1024;

type Measured = FioResult & { readonly cpu: string };
interface Row { readonly job: string; readonly tidemark: Measured; readonly nbdkit: Measured }

function printRows(rows: readonly Row[]): void {
  console.log('job                  tidemark IOPS   nbdkit IOPS   ratio   tidemark p99 µs   nbdkit p99 µs   CPU µs per op');
  for (const r of rows) {
    console.log(`${r.job.padEnd(20)} ${r.tidemark.iops.toFixed(0).padStart(13)} ${r.nbdkit.iops.toFixed(0).padStart(13)}` +
      ` ${(r.tidemark.iops / r.nbdkit.iops).toFixed(2).padStart(6)}x ${r.tidemark.p99LatencyUs.toFixed(0).padStart(17)}` +
      ` ${r.nbdkit.p99LatencyUs.toFixed(0).padStart(15)}   ${r.tidemark.cpu}, ${r.nbdkit.cpu}`);
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
        const first = index % 2 === 0 ? 'tidemark' : 'nbdkit';
        const a = await measure(first);
        const b = await measure(first === 'tidemark' ? 'nbdkit' : 'tidemark');
        out.push({ job: job.name, tidemark: first === 'tidemark' ? a : b, nbdkit: first === 'tidemark' ? b : a });
      }
      return out;
    };
    const rows = await measureAll();
    console.log(`bench/nbd: fio ${args.seconds}s per job, ${(args.sizeBytes / GiB).toFixed(1)} GiB volume, same filesystem`);
    printRows(rows);
    const ratio = (job: string): number => {
      const r = rows.find((x) => x.job === job)!;
      return r.tidemark.iops / r.nbdkit.iops;
    };
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
