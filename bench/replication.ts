// bench/replication: what synchronous mirroring costs a host write. The same fio jobs (nbd engine),
// in one run, against every subject: a plain qemu-storage-daemon export (baseline), the same export
// with QEMU's active mirror (blockdev-mirror sync=full copy-mode=write-blocking to a qemu-nbd target
// on loopback), an unpaired tidemark volume and a sync pair of two tidemark daemons, and both again with
// the daemons busy-polling (`array start --poll-us 500`), and the sync pair with its flush rounds 30 s
// apart (`--flush-round-after 30s`: none during a run). Prints a table, then for every subject that names a
// baseline: added mean latency at 4 KiB QD1 and the IOPS ratio at 4 KiB QD32; tidemark's daemons'
// CPU µs per write at QD32 (/proc); and the sync pair's QD32 with the cores split by taskset, R2 alone
// on a core, then R1 alone on a core (see coresSplit) — what two cores shared by fio and two daemons
// cost the pair, and what forwarding costs R1 itself.
//
// EXTENSION POINT — the tidemark sync pair: append a ReplicationSubject to the array passed to
// benchReplication (or to defaultReplicationSubjects below), e.g.
//   { name: 'tidemark-sync', baseline: 'tidemark', async start({ dir, sizeBytes }) {
//       /* start two arrays, create + pair the volume, wait until the pair is synchronized */
//       return { nbdUri: `nbd://127.0.0.1:${port}/bench`, stop: async () => { ... } };
//   } }
// and it is measured with the same jobs and its ratios against `baseline` are printed.
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FioJob, FioResult } from './lib/fio.js';
import { allCpus, pin, pinningUnavailable, runFioWithCpu, type MeasuredProcess } from './lib/cores.js';
import { arrayApi, freePort, run, startProcess, stopProcess, tidemarkBin, waitForPort } from './lib/processes.js';
import { startQemuExport } from './lib/qemu-mirror.js';
import { goal } from './lib/goals.js';
import { mean } from './lib/stats.js';

const MiB = 1024 * 1024;

/** What a subject gets to start in: its own empty directory and the volume size. */
export interface SubjectContext {
  readonly dir: string;
  readonly sizeBytes: number;
}

/** A started subject: an NBD URI fio can write to, and how to stop everything it started. */
export interface RunningSubject {
  readonly nbdUri: string;
  /** One line shown under the table (e.g. the mirror job state), optional. */
  readonly note?: string;
  /** tidemark's daemons, by role: their CPU per write is printed, and the pinned runs place them. */
  readonly processes?: readonly MeasuredProcess[];
  stop(): Promise<void>;
}

/** One side of the comparison. `baseline` names another subject to print ratios against. */
export interface ReplicationSubject {
  readonly name: string;
  readonly baseline?: string;
  start(context: SubjectContext): Promise<RunningSubject>;
}

export const qemuPlainSubject: ReplicationSubject = {
  name: 'qemu',
  start: ({ dir, sizeBytes }) => startQemuExport({ dir, sizeBytes, mirror: false }),
};

export const qemuMirrorSubject: ReplicationSubject = {
  name: 'qemu-mirror',
  baseline: 'qemu',
  async start({ dir, sizeBytes }) {
    const started = await startQemuExport({ dir, sizeBytes, mirror: true });
    const job = started.mirror!;
    return { ...started, note: `qemu-mirror: job ${job.jobId} ${job.status}, ${job.offset}/${job.len} bytes copied before measuring` };
  },
};

/** Daemon options of the busy-polling subjects (`array start --poll-us`, adapters/net/busy-poll.ts). */
const POLLING = ['--poll-us', '500'];

/** An unpaired tidemark array with one volume, started as bench/nbd does (with `daemonArgs`). */
const unpairedSubject = (name: string, daemonArgs: readonly string[] = []): ReplicationSubject => ({
  name,
  async start({ dir, sizeBytes }) {
    const [apiPort, nbdPort] = [await freePort(), await freePort()];
    const daemon = startProcess(tidemarkBin, ['array', 'start', '--data', join(dir, 'array'),
      '--api', `127.0.0.1:${apiPort}`, '--nbd', `127.0.0.1:${nbdPort}`, ...daemonArgs], name);
    try {
      await waitForPort(apiPort);
      await arrayApi(apiPort, join(dir, 'array'))('POST', '/v1/volumes', { name: 'bench', sizeBytes });
      await waitForPort(nbdPort);
    } catch (e) {
      await stopProcess(daemon);
      throw e;
    }
    return { nbdUri: `nbd://127.0.0.1:${nbdPort}/bench`, processes: [{ role: 'array', pid: daemon.pid! }], stop: () => stopProcess(daemon) };
  },
});

export const tidemarkSubject = unpairedSubject('tidemark');
export const tidemarkPollSubject = unpairedSubject('tidemark-poll', POLLING);

/** Two tidemark arrays on loopback with a sync pair, measured through R1's export once synchronized. */
const syncPairSubject = (name: string, baseline: string, daemonArgs: readonly string[] = []): ReplicationSubject => ({
  name,
  baseline,
  async start({ dir, sizeBytes }) {
    const secret = join(dir, 'secret');
    await writeFile(secret, 'bench secret, long enough for the link');
    const ports = { east: [await freePort(), await freePort(), await freePort()], west: [await freePort(), await freePort(), await freePort()] };
    const daemons = (['east', 'west'] as const).map((array) => {
      const [api, nbd, link] = ports[array];
      return startProcess(tidemarkBin, ['array', 'start', '--data', join(dir, array), '--name', array,
        '--api', `127.0.0.1:${api}`, '--nbd', `127.0.0.1:${nbd}`, '--link', `127.0.0.1:${link}`, ...daemonArgs], `${name}-${array}`);
    });
    try {
      const [eastApi, eastNbd, eastLink] = ports.east;
      const [westApi, , westLink] = ports.west;
      await waitForPort(eastApi!);
      await waitForPort(westApi!);
      const apis = { [eastApi!]: arrayApi(eastApi!, join(dir, 'east')), [westApi!]: arrayApi(westApi!, join(dir, 'west')) };
      const call = (apiPort: number, method: string, path: string, body: unknown): Promise<unknown> => apis[apiPort]!(method, path, body);
      await call(eastApi!, 'POST', '/v1/peers', { name: 'west', address: `127.0.0.1:${westLink}`, secretFile: secret });
      await call(westApi!, 'POST', '/v1/peers', { name: 'east', address: `127.0.0.1:${eastLink}`, secretFile: secret });
      await call(eastApi!, 'POST', '/v1/volumes', { name: 'bench', sizeBytes });
      await call(westApi!, 'POST', '/v1/volumes', { name: 'bench-r', sizeBytes });
      for (let i = 0; ; i++) {
        const peer = await call(eastApi!, 'GET', '/v1/peers/west', undefined).catch(() => undefined) as { link?: string } | undefined;
        if (peer?.link === 'up') break;
        if (i > 200) throw new Error('link did not come up');
        await new Promise((r) => setTimeout(r, 50));
      }
      await call(eastApi!, 'POST', '/v1/pairs', { volume: 'bench', peer: 'west', remoteVolume: 'bench-r', mode: 'sync' });
      for (;;) {
        const pair = await call(eastApi!, 'GET', '/v1/pairs/bench', undefined) as { state: string };
        if (pair.state === 'synchronized') break;
        await new Promise((r) => setTimeout(r, 50));
      }
      await waitForPort(eastNbd!);
      return {
        nbdUri: `nbd://127.0.0.1:${eastNbd}/bench`,
        note: `${name}: R1 and R2 are two daemons on loopback${daemonArgs.length > 0 ? ` (${daemonArgs.join(' ')})` : ''}, sync pair synchronized before measuring`,
        processes: [{ role: 'R1', pid: daemons[0]!.pid! }, { role: 'R2', pid: daemons[1]!.pid! }],
        stop: async () => { for (const d of daemons) await stopProcess(d); },
      };
    } catch (e) {
      for (const d of daemons) await stopProcess(d);
      throw e;
    }
  },
});

export const tidemarkSyncSubject = syncPairSubject('tidemark-sync', tidemarkSubject.name);
export const tidemarkSyncPollSubject = syncPairSubject('tidemark-sync-poll', tidemarkPollSubject.name, POLLING);
/**
 * The sync pair with its flush rounds 30 s apart, so that none falls inside a run: what the rounds'
 * write-back costs the pair (the unpaired volume and QEMU's mirror never write back within a run).
 */
export const tidemarkSyncLazySubject = syncPairSubject('tidemark-sync-30s', tidemarkSubject.name, ['--flush-round-after', '30s']);

export function defaultReplicationSubjects(): ReplicationSubject[] {
  return [qemuPlainSubject, qemuMirrorSubject, tidemarkSubject, tidemarkSyncSubject, tidemarkPollSubject, tidemarkSyncPollSubject, tidemarkSyncLazySubject];
}

export async function benchReplication(args: { seconds: number; sizeBytes: number },
  subjects: readonly ReplicationSubject[] = defaultReplicationSubjects()): Promise<void> {
  const names = new Set(subjects.map((s) => s.name));
  if (names.size !== subjects.length) throw new Error('subject names must be unique');
  for (const s of subjects) {
    if (s.baseline !== undefined && !names.has(s.baseline)) throw new Error(`${s.name}: baseline ${s.baseline} is not a subject`);
  }
  const qd1: FioJob = { name: 'randwrite-4k-qd1', rw: 'randwrite', blockSize: '4k', iodepth: 1, runtimeSeconds: args.seconds, sizeBytes: args.sizeBytes };
  const qd32: FioJob = { ...qd1, name: 'randwrite-4k-qd32', iodepth: 32 };
  const dir = await mkdtemp(join(process.env.TIDEMARK_BENCH_DIR ?? tmpdir(), 'tidemark-bench-replication-'));
  const running = new Map<string, RunningSubject>();
  try {
    for (const subject of subjects) {
      const subjectDir = join(dir, subject.name);
      await mkdir(subjectDir);
      running.set(subject.name, await subject.start({ dir: subjectDir, sizeBytes: args.sizeBytes }));
    }
    const results = new Map<string, { qd1: FioResult; qd32: FioResult }>();
    const cpuPerWrite = new Map<string, string>();
    for (const s of subjects) results.set(s.name, { qd1: undefined!, qd32: undefined! });
    // Same jobs for every subject; the order rotates between jobs so no subject always goes first.
    for (const [index, job] of [qd1, qd32].entries()) {
      for (let i = 0; i < subjects.length; i++) {
        const subject = subjects[(i + index) % subjects.length]!;
        // Each run starts with no dirty pages, as in bench/nbd: the write-back of the runs before
        // (a gigabyte a subject) otherwise throttles this one (QD32 swung 7–18K IOPS without it).
        await run('sync', []);
        const processes = running.get(subject.name)!.processes ?? [];
        const result = await runFioWithCpu(running.get(subject.name)!.nbdUri, job, processes);
        results.get(subject.name)![job === qd1 ? 'qd1' : 'qd32'] = result;
        if (job === qd32 && processes.length > 0) cpuPerWrite.set(subject.name, result.cpu);
      }
    }

    console.log(`bench/replication: fio nbd engine, ${args.seconds}s per job (+2s ramp), ${(args.sizeBytes / MiB).toFixed(0)} MiB volume, all on loopback`);
    console.log(`${'subject'.padEnd(18)}QD1 mean µs   QD1 p99 µs   QD1 IOPS   QD32 IOPS   QD32 mean µs`);
    for (const s of subjects) {
      const r = results.get(s.name)!;
      console.log(`${s.name.padEnd(17)} ${r.qd1.meanLatencyUs.toFixed(1).padStart(11)} ${r.qd1.p99LatencyUs.toFixed(0).padStart(12)}` +
        ` ${r.qd1.iops.toFixed(0).padStart(10)} ${r.qd32.iops.toFixed(0).padStart(11)} ${r.qd32.meanLatencyUs.toFixed(1).padStart(14)}`);
    }
    for (const s of subjects) {
      if (s.baseline === undefined) continue;
      const r = results.get(s.name)!;
      const b = results.get(s.baseline)!;
      console.log(`${s.name} vs ${s.baseline}: QD1 adds ${(r.qd1.meanLatencyUs - b.qd1.meanLatencyUs).toFixed(1)} µs ` +
        `(${r.qd1.meanLatencyUs.toFixed(1)} vs ${b.qd1.meanLatencyUs.toFixed(1)} µs, ${(r.qd1.meanLatencyUs / b.qd1.meanLatencyUs).toFixed(2)}x); ` +
        `QD32 IOPS ratio ${(r.qd32.iops / b.qd32.iops).toFixed(2)}x (${r.qd32.iops.toFixed(0)} vs ${b.qd32.iops.toFixed(0)})`);
    }
    for (const [name, line] of cpuPerWrite) console.log(`${name}: CPU µs per write at QD32 (user + system, all threads): ${line}`);
    // The goals (issue "Performance"), when the run had the subjects they compare.
    const added = (name: string): number | undefined => {
      const s = subjects.find((x) => x.name === name);
      if (s?.baseline === undefined) return undefined;
      return results.get(name)!.qd1.meanLatencyUs - results.get(s.baseline)!.qd1.meanLatencyUs;
    };
    const syncAdded = added(tidemarkSyncSubject.name);
    const qemuAdded = added(qemuMirrorSubject.name);
    if (syncAdded !== undefined && qemuAdded !== undefined) {
      goal('sync pair QD1 added latency ≤ QEMU active mirror\'s', syncAdded, 'atMost', qemuAdded, ' µs');
    }
    const polledAdded = added(tidemarkSyncPollSubject.name);
    if (polledAdded !== undefined && qemuAdded !== undefined) {
      goal(`sync pair QD1 added latency ≤ QEMU active mirror's, daemons with ${POLLING.join(' ')}`, polledAdded, 'atMost', qemuAdded, ' µs');
    }
    if (names.has(tidemarkSyncSubject.name) && names.has(tidemarkSubject.name)) {
      goal('sync pair QD32 IOPS vs unpaired', results.get(tidemarkSyncSubject.name)!.qd32.iops / results.get(tidemarkSubject.name)!.qd32.iops, 'atLeast', 0.5);
    }
    const plain = running.get(tidemarkSubject.name);
    const pair = running.get(tidemarkSyncSubject.name);
    if (plain && pair) {
      await coresSplit(plain, pair, qd32, results.get(tidemarkSyncSubject.name)!.qd32.iops / results.get(tidemarkSubject.name)!.qd32.iops);
    }
    for (const s of subjects) {
      const note = running.get(s.name)!.note;
      if (note) console.log(note);
    }
  } finally {
    for (const r of running.values()) await r.stop().catch((e: Error) => console.error(`stop failed: ${e.message}`));
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * The sync pair's QD32 with the cores split, two ways, each against the unpaired array placed as R1:
 *  - R2 alone on CPU 1, R1 and fio on CPU 0 (the unpaired array and fio on CPU 0): as if R2 were
 *    another machine — does the CPU R2 takes from the others set the pair's limit?
 *  - R1 alone on CPU 1, fio and R2 on CPU 0 (the unpaired array alone on CPU 1): R1's own cost per
 *    forwarded write, which fio sharing its core would otherwise dilute.
 */
async function coresSplit(plain: RunningSubject, pair: RunningSubject, job: FioJob, unpinnedRatio: number): Promise<void> {
  const unavailable = await pinningUnavailable();
  if (unavailable !== undefined) {
    console.log(`cores split: not run (${unavailable})`);
    return;
  }
  const [array] = plain.processes!;
  const [r1, r2] = pair.processes!;
  console.log('cores split (taskset), 4 KiB QD32: what sharing two cores among fio and two daemons costs the sync pair');
  const splits = [
    { name: 'R2 alone on CPU 1', r1Cpu: '0', r2Cpu: '1', fioCpu: '0' },
    { name: 'R1 alone on CPU 1', r1Cpu: '1', r2Cpu: '0', fioCpu: '0' },
  ];
  try {
    for (const split of splits) {
      await pin(array!.pid, split.r1Cpu);
      await pin(r1!.pid, split.r1Cpu);
      await pin(r2!.pid, split.r2Cpu);
      const iops = { plain: [] as number[], pair: [] as number[] };
      for (let round = 1; round <= 2; round++) {
        for (const [key, subject] of [['plain', plain], ['pair', pair]] as const) {
          await run('sync', []);
          const r = await runFioWithCpu(subject.nbdUri, job, subject.processes!, split.fioCpu);
          iops[key].push(r.iops);
          const where = key === 'plain'
            ? `unpaired (array on CPU ${split.r1Cpu}, fio on CPU ${split.fioCpu})`
            : `sync pair (R1 on CPU ${split.r1Cpu}, R2 on CPU ${split.r2Cpu}, fio on CPU ${split.fioCpu})`;
          console.log(`   ${split.name}, round ${round}, ${where}: ${r.iops.toFixed(0)} IOPS; ` +
            `CPU µs per write: ${r.cpu}`);
        }
      }
      console.log(`   ${split.name}: ratio sync pair ÷ unpaired = ${(mean(iops.pair) / mean(iops.plain)).toFixed(2)}x ` +
        `(unpinned, all three sharing both cores: ${unpinnedRatio.toFixed(2)}x)`);
    }
  } finally {
    for (const p of [array!, r1!, r2!]) await pin(p.pid, allCpus()).catch(() => undefined);
  }
}
