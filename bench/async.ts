// bench/async: an async pair (ordered cycles, `--cycle-ms 1000`) between two array daemons in two
// network namespaces, the link between them shaped (test/helpers/netns.ts; on kernels without netem
// the userspace TUN shaper). Three figures in one run:
//
//  1. Host write throughput, async pair vs unpaired: fio nbd 4 KiB randwrite QD32 for N s on the
//     same east daemon against an unpaired volume and an async-paired one of the same size,
//     alternated twice; also the paired volume with the link partitioned during the run (capture
//     only: separates capture's own cost from the CPU that shipping takes on a shared 2-core box). Between runs the paired volume is let catch up (R2 applied ≥ the capture
//     cycle at the end of the run), so one run's backlog does not load the next. Then unpaired and the
//     pair again over an 8 MiB hot set of each volume: writes over the whole volume bring more unique
//     bytes per cycle than the 100 mbit link carries, the hot set's cycles fit it. Goals: ≥ 0.8× with
//     the link keeping up (the hot-set runs), ≥ 0.95× capture alone (link cut, hot set: the capture
//     cycle the size it has while the link keeps up; over the whole volume, printed too, the one
//     cycle that cannot switch grows to all 64 MiB of the volume during the run).
//     Each run also prints the CPU µs per write of R1, R2 and the shaper (/proc), and whether the link
//     kept up (R2 held the last cycle within two cycles of fio's end). Then the three runs again with
//     the cores split (taskset): R1 and fio on CPU 0, R2 and the shaper on CPU 1, as if R2 were another
//     machine — what capture and shipping cost R1 itself, apart from the CPU the others take here.
//  2. Link bytes ÷ unique dirty bytes, rewrite-heavy: fio randwrite 4 KiB over a small hot set
//     (random map: every record of the set is written once per pass, so after ≥ 1 pass the unique
//     dirty bytes are exactly the set), then wait until R2's applied cycle reaches R1's capture
//     cycle at the end of the workload. Link bytes = delta of east's `bytesSent` to west. Also
//     shown: the cycle payload (Σ transmitRecords × 4 KiB over the cycles seen transmitting), the
//     number of cycles and writes per record per cycle, since a cycle ships each record it touched.
//  3. Lag: fio rate-limited to W bytes/s (4 KiB random writes over a large volume: ~no rewrites),
//     link shaped to 1.2 × W; R1 and R2 `pair show` sampled every 100 ms for ~20 s. Lag in cycles
//     = R1 captureCycle − R2 appliedCycle; lag in seconds = now − the time R1 opened cycle
//     (applied + 1), i.e. the age of the oldest write R2's image lacks (seen by polling, so up to
//     one poll interval young). p50/p99/max.
//
// The API is reached through a relay in each namespace, NBD through Unix sockets (see
// test/helpers/netns-arrays.ts); only link traffic crosses the shaped link.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { NetnsPair } from '../test/helpers/netns.js';
import { NetnsArray, collect, mustRunRoot, type PairJson, type PeerJson } from '../test/helpers/netns-arrays.js';
import { allCpus, pin, pinningUnavailable, runFioWithCpu, type MeasuredProcess } from './lib/cores.js';
import { run as runCommand } from './lib/processes.js';
import { goal } from './lib/goals.js';
import { mean } from './lib/stats.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const RECORD_BYTES = 4 * KiB;
const CYCLE_MS = 1000;
/** Part 1's hot set: its cycles (≤ 8 MiB a second) fit the default 100 mbit link. */
const HOT_SET_BYTES = 8 * MiB;

export interface AsyncBenchArgs {
  /** fio runtime of the throughput runs and of the rewrite workload. */
  readonly seconds: number;
  /** Volume size of the throughput comparison. */
  readonly sizeBytes: number;
  /** Link shape of parts 1 and 2. */
  readonly rateMbit: number;
  readonly delayMs: number;
  /** The rewrite workload's hot set. */
  readonly hotBytes: number;
  /** Part 3: the host write rate (bytes/s); the link is shaped to 1.2 × this. */
  readonly lagRateBytes: number;
  readonly lagSeconds: number;
  /** Which of the three parts to run (all by default). */
  readonly parts?: readonly number[];
}

interface CyclesJson {
  captureCycle: number | null; transmitCycle: number | null; appliedCycle: number;
  captureRecords: number; transmitRecords: number; memoryBytes: number;
}
type AsyncPairJson = PairJson & { cycleMs: number; cycles: CyclesJson | null };

interface FioJson { jobs: Array<{ write: { io_bytes: number; total_ios: number; iops: number; bw_bytes: number } }> }

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const mb = (bytes: number): string => (bytes / 1e6).toFixed(2);

function fioArgs(uri: string, args: readonly string[]): string[] {
  return ['--name=w', '--ioengine=nbd', `--uri=${uri}`, '--rw=randwrite', '--bs=4k', '--refill_buffers', '--output-format=json', ...args];
}
function fioWrite(stdout: string): FioJson['jobs'][0]['write'] {
  return (JSON.parse(stdout.slice(stdout.indexOf('{'))) as FioJson).jobs[0]!.write;
}

/** nearest-rank percentile of a sorted array */
function pct(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

interface Sample { ms: number; r1: CyclesJson | null; r2: CyclesJson | null; sent: number }

/** Polls R1's and R2's pair status (and east's link counter) every `intervalMs` until stopped. */
class Sampler {
  readonly samples: Sample[] = [];
  private stopped = false;
  private error: unknown;
  private readonly done: Promise<void>;
  readonly t0 = performance.now();

  constructor(private readonly east: NetnsArray, private readonly west: NetnsArray, private readonly volume: string, intervalMs: number) {
    this.done = this.loop(intervalMs).catch((e: unknown) => { this.error = e; });
  }

  private async loop(intervalMs: number): Promise<void> {
    let next = performance.now();
    while (!this.stopped) {
      const [p1, p2, q] = await Promise.all([
        this.east.api<AsyncPairJson>('GET', `/v1/pairs/${this.volume}`),
        this.west.api<AsyncPairJson>('GET', `/v1/pairs/${this.volume}-r`),
        this.east.api<PeerJson>('GET', '/v1/peers/west'),
      ]);
      this.samples.push({ ms: performance.now() - this.t0, r1: p1.cycles, r2: p2.cycles, sent: q.bytesSent ?? 0 });
      next += intervalMs;
      await sleep(Math.max(0, next - performance.now()));
    }
  }

  async stop(): Promise<Sample[]> {
    this.stopped = true;
    await this.done;
    if (this.error !== undefined) throw this.error;
    return this.samples;
  }

  /** Σ transmitRecords over every cycle seen transmitting (a cycle's record count is fixed once it transmits). */
  static cyclePayload(samples: readonly Sample[]): { cycles: number; records: number } {
    const byCycle = new Map<number, number>();
    for (const s of samples) if (s.r1?.transmitCycle != null) byCycle.set(s.r1.transmitCycle, s.r1.transmitRecords);
    return { cycles: byCycle.size, records: [...byCycle.values()].reduce((a, b) => a + b, 0) };
  }
}

class Bench {
  constructor(readonly pair: NetnsPair, readonly east: NetnsArray, readonly west: NetnsArray) {}

  r1(volume: string): Promise<AsyncPairJson> {
    return this.east.api<AsyncPairJson>('GET', `/v1/pairs/${volume}`);
  }
  r2(volume: string): Promise<AsyncPairJson> {
    return this.west.api<AsyncPairJson>('GET', `/v1/pairs/${volume}-r`);
  }
  async sent(): Promise<number> {
    return (await this.east.api<PeerJson>('GET', '/v1/peers/west')).bytesSent ?? 0;
  }

  /** Creates VOL on east, VOL-r on west and an async pair (CLI), and waits until its cycles run on both sides. */
  async createAsyncPair(volume: string, sizeBytes: number): Promise<number> {
    await this.east.api('POST', '/v1/volumes', { name: volume, sizeBytes });
    await this.west.api('POST', '/v1/volumes', { name: `${volume}-r`, sizeBytes });
    const t0 = performance.now();
    await this.east.cli(['pair', 'create', volume, '--peer', 'west', '--remote-volume', `${volume}-r`, '--mode', 'async', '--cycle-ms', String(CYCLE_MS)]);
    return this.createAsyncPairWait(volume, t0);
  }

  /** Waits until the pair is synchronized and its cycles run on both sides. */
  async createAsyncPairWait(volume: string, t0 = performance.now()): Promise<number> {
    for (;;) {
      const [p1, p2] = await Promise.all([this.r1(volume), this.r2(volume)]);
      if (p1.state === 'synchronized' && p1.cycles !== null && p2.cycles !== null) return performance.now() - t0;
      if (performance.now() - t0 > 180_000) throw new Error(`${volume}: cycles did not start: R1 ${JSON.stringify(p1)} R2 ${JSON.stringify(p2)}`);
      await sleep(100);
    }
  }

  /** Waits until R2 applied every cycle up to R1's capture cycle now; returns the wait and that cycle. */
  async catchUp(volume: string, timeoutMs = 600_000): Promise<{ ms: number; cycle: number }> {
    const t0 = performance.now();
    const start = await this.r1(volume);
    if (start.cycles?.captureCycle == null) throw new Error(`${volume}: no cycles on R1 (fell back?): ${JSON.stringify(start)}`);
    const target = start.cycles.captureCycle;
    for (;;) {
      const p2 = await this.r2(volume);
      if (p2.cycles === null) {
        const p1 = await this.r1(volume);
        throw new Error(`${volume}: R2 runs no cycles (state R1 ${p1.state}, R1 cycles ${JSON.stringify(p1.cycles)})`);
      }
      if (p2.cycles.appliedCycle >= target) return { ms: performance.now() - t0, cycle: target };
      if (performance.now() - t0 > timeoutMs) throw new Error(`${volume}: R2 applied ${p2.cycles.appliedCycle} < ${target} after ${timeoutMs} ms`);
      await sleep(50);
    }
  }
}

export async function benchAsync(args: AsyncBenchArgs): Promise<void> {
  const availability = await NetnsPair.available();
  if (!availability.available) {
    console.log(`bench/async: skipped, network namespaces unavailable: ${availability.reason}`);
    return;
  }
  const dir = await mkdtemp('/tmp/tm-basync-');
  const pair = await NetnsPair.create({ prefix: 'tmb' });
  const arrays: NetnsArray[] = [];
  try {
    await pair.shape({ delayMs: args.delayMs, rateMbit: args.rateMbit });
    console.log(`bench/async: ${pair.backend} link backend, shaped ${args.rateMbit} mbit (${(args.rateMbit / 8).toFixed(2)} MB/s), ` +
      `${args.delayMs} ms each way; arrays east (R1) and west (R2) in two namespaces; pairs --mode async --cycle-ms ${CYCLE_MS}`);
    const secret = join(dir, 'secret');
    await writeFile(secret, 'bench secret, long enough for the link\n', { mode: 0o600 });
    const [east, west] = await Promise.all([NetnsArray.start(pair, pair.a, 'east', dir), NetnsArray.start(pair, pair.b, 'west', dir)]);
    arrays.push(east, west);
    await east.api('POST', '/v1/peers', { name: 'west', address: west.linkAddress, secretFile: secret });
    await west.api('POST', '/v1/peers', { name: 'east', address: east.linkAddress, secretFile: secret });
    for (let i = 0; (await east.api<PeerJson>('GET', '/v1/peers/west')).link !== 'up'; i++) {
      if (i > 400) throw new Error('link did not come up');
      await sleep(50);
    }
    const b = new Bench(pair, east, west);

    const parts = args.parts ?? [1, 2, 3];
    if (parts.includes(1)) await throughput(b, args);
    if (parts.includes(2)) await rewrites(b, args);
    if (parts.includes(3)) await lag(b, args);
  } finally {
    await Promise.all(arrays.map((a) => a.stop().catch(() => undefined)));
    await pair.destroy();
    await rm(dir, { recursive: true, force: true });
  }
}

// ---- 1. host write throughput, async pair vs unpaired ----
async function throughput(b: Bench, args: AsyncBenchArgs): Promise<void> {
  const { east } = b;
  await east.api('POST', '/v1/volumes', { name: 'plain', sizeBytes: args.sizeBytes });
  const startMs = await b.createAsyncPair('apair', args.sizeBytes);
  console.log('');
  console.log(`1. host writes: fio nbd 4 KiB randwrite QD32, ${args.seconds} s (+2 s ramp) each, ${(args.sizeBytes / MiB).toFixed(0)} MiB volumes on east; ` +
    `unpaired vs async pair (cycles running ${(startMs / 1000).toFixed(1)} s after pair create)`);
  const job = { name: 'w', rw: 'randwrite' as const, blockSize: '4k', iodepth: 32, runtimeSeconds: args.seconds, sizeBytes: args.sizeBytes };
  // Writes over the whole volume bring more unique bytes per cycle than the shaped link carries (the
  // link runs behind by design); the goal for the pair is "while the link keeps up", measured by the
  // same runs over the first HOT_SET_BYTES of each volume, whose cycles fit the link.
  const hotJob = { ...job, sizeBytes: Math.min(HOT_SET_BYTES, args.sizeBytes) };
  type Run = 'plain' | 'apair' | 'cut' | 'plain-hot' | 'apair-hot' | 'cut-hot';
  const label: Record<Run, string> = {
    plain: 'unpaired             ', apair: 'async pair           ', cut: 'async, link cut      ',
    'plain-hot': 'unpaired, hot        ', 'apair-hot': 'async pair, hot      ', 'cut-hot': 'async, link cut, hot ',
  };
  const processes: MeasuredProcess[] = [{ role: 'R1', pid: b.east.pid }, { role: 'R2', pid: b.west.pid },
    ...(b.pair.shaperPid === undefined ? [] : [{ role: 'link shaper', pid: b.pair.shaperPid }])];
  /** One fio run against `run`'s volume (fio on `cpus` if given); its IOPS and the line that reports it. */
  const measure = async (run: Run, cpus?: string): Promise<{ iops: number; line: string }> => {
    const volume = run === 'plain' || run === 'plain-hot' ? 'plain' : 'apair';
    // 'cut': the same pair with the link partitioned during the run: R1 only captures (the cost of
    // capture alone, without the CPU the two daemons and the shaper spend shipping on this box).
    // Over the whole volume the one cycle that cannot switch grows to every record of the volume
    // (64 MiB, the cycles' memory budget) during the run; over the hot set it stays the size a
    // cycle has while the link keeps up.
    const cut = run === 'cut' || run === 'cut-hot';
    if (cut) await b.pair.partition();
    const sampler = volume === 'apair' ? new Sampler(b.east, b.west, volume, 200) : undefined;
    // No dirty pages from the run before (as in bench/nbd): its write-back would throttle this one.
    await runCommand('sync', []);
    const r = await runFioWithCpu(east.uri(volume), run.endsWith('-hot') ? hotJob : job, processes, cpus);
    let extra = '';
    if (sampler) {
      const samples = await sampler.stop();
      if (cut) await b.pair.heal();
      const first = samples[0]?.r1;
      const last = samples.at(-1)?.r1;
      const memPeak = Math.max(0, ...samples.map((s) => s.r1?.memoryBytes ?? 0));
      const fellBack = samples.some((s) => s.r1 === null);
      const sw = first && last && first.captureCycle != null && last.captureCycle != null ? last.captureCycle - first.captureCycle : NaN;
      if (fellBack) {
        extra = '; cycles FELL BACK to bitmaps during the run';
        await b.createAsyncPairWait(volume);
      } else {
        const c = await b.catchUp(volume);
        if (run === 'apair' || run === 'apair-hot') catchUpMs[run].push(c.ms);
        extra = `; ${sw} cycle switches during the run, capture+transmit memory peak ${mb(memPeak)} MB; R2 applied cycle ${c.cycle} ${(c.ms / 1000).toFixed(1)} s after fio ended`;
      }
    }
    return {
      iops: r.iops,
      line: `${label[run]}: ${r.iops.toFixed(0)} IOPS, ${mb(r.bandwidthBytesPerSecond)} MB/s, ` +
        `mean ${r.meanLatencyUs.toFixed(0)} µs, p99 ${r.p99LatencyUs.toFixed(0)} µs; CPU µs per write: ${r.cpu}${extra}`,
    };
  };
  const iops: Record<Run, number[]> = { plain: [], apair: [], cut: [], 'plain-hot': [], 'apair-hot': [], 'cut-hot': [] };
  /** How long after fio ended R2 held the pair's last cycle: beyond two cycles the link ran behind the host. */
  const catchUpMs: Record<'apair' | 'apair-hot', number[]> = { apair: [], 'apair-hot': [] };
  for (let round = 1; round <= 2; round++) {
    for (const run of ['plain', 'apair', 'cut', 'plain-hot', 'apair-hot', 'cut-hot'] as const) {
      const m = await measure(run);
      iops[run].push(m.iops);
      console.log(`   round ${round} ${m.line}`);
    }
  }
  const ratioLine = (run: Run, base: Run, what: string): number => {
    const ratio = mean(iops[run]) / mean(iops[base]);
    console.log(`   ratio ${what} = ${ratio.toFixed(3)}  (per round ${iops[run].map((x, i) => (x / iops[base][i]!).toFixed(3)).join(', ')})`);
    return ratio;
  };
  /** Whether R2 held the last cycle within two cycles of fio's end in every run: the link kept up. Says so either way. */
  const keptUp = (run: 'apair' | 'apair-hot'): boolean => {
    const behindS = Math.max(...catchUpMs[run]) / 1000;
    const kept = behindS <= (2 * CYCLE_MS) / 1000;
    console.log(`   ${run === 'apair' ? 'whole volume' : `hot ${(hotJob.sizeBytes / MiB).toFixed(0)} MiB`}: the link ${kept ? 'kept up' : 'ran behind the host'}: ` +
      `R2 held the last cycle up to ${behindS.toFixed(1)} s after fio ended (keeping up: within two ${CYCLE_MS} ms cycles)`);
    return kept;
  };
  ratioLine('apair', 'plain', 'async-pair IOPS ÷ unpaired IOPS, whole volume');
  keptUp('apair');
  const hotRatio = ratioLine('apair-hot', 'plain-hot', `async-pair IOPS ÷ unpaired IOPS, hot ${(hotJob.sizeBytes / MiB).toFixed(0)} MiB`);
  // The goal is for a link that keeps up; say whether this one did rather than let the ratio imply it.
  const hotKeptUp = keptUp('apair-hot');
  goal(`async pair host IOPS vs unpaired, the link keeping up (hot set; here it ${hotKeptUp ? 'did' : 'did not'})`, hotRatio, 'atLeast', 0.8);
  ratioLine('cut', 'plain', 'async pair with the link cut ÷ unpaired, whole volume (the cycle grows to 64 MiB)');
  goal('async capture alone (link cut, hot set) host IOPS vs unpaired',
    ratioLine('cut-hot', 'plain-hot', `async pair with the link cut (capture only) ÷ unpaired, hot ${(hotJob.sizeBytes / MiB).toFixed(0)} MiB`), 'atLeast', 0.95);
  // The same three runs with the cores split: R1 and fio share CPU 0 (as the unpaired array and fio
  // do), R2 and the link shaper have CPU 1 — as if R2 were another machine. The ratios then show
  // what capture and shipping cost R1 itself, apart from the CPU R2 and the shaper take on this box.
  const unavailable = await pinningUnavailable();
  if (unavailable !== undefined) {
    console.log(`   cores split: not run (${unavailable})`);
  } else {
    console.log('   cores split (taskset): R1 and fio on CPU 0, R2 and the link shaper on CPU 1');
    const pinned: Partial<Record<Run, number>> = {};
    try {
      for (const p of processes) await pin(p.pid, p.role === 'R1' ? '0' : '1');
      for (const run of ['plain', 'apair', 'cut'] as const) {
        const m = await measure(run, '0');
        pinned[run] = m.iops;
        console.log(`   pinned ${m.line}`);
      }
    } finally {
      for (const p of processes) await pin(p.pid, allCpus()).catch(() => undefined);
    }
    console.log(`   pinned ratios: async pair ÷ unpaired = ${(pinned.apair! / pinned.plain!).toFixed(3)}, ` +
      `link cut ÷ unpaired = ${(pinned.cut! / pinned.plain!).toFixed(3)}`);
  }
  await east.api('DELETE', '/v1/pairs/apair');
}

// ---- 2. link bytes ÷ unique dirty bytes, rewrite-heavy ----
async function rewrites(b: Bench, args: AsyncBenchArgs): Promise<void> {
  const volume = 'hot';
  await b.createAsyncPair(volume, 64 * MiB);
  const recordsInSet = args.hotBytes / RECORD_BYTES;
  console.log('');
  console.log(`2. rewrite-heavy workload, async: fio randwrite 4 KiB QD8 over a ${(args.hotBytes / MiB).toFixed(0)} MiB hot set (${recordsInSet} records) for ${args.seconds} s`);
  await sleep(1500); // the idle cycles of the establish settle
  const sentBefore = await b.sent();
  const before = await b.r1(volume);
  const sampler = new Sampler(b.east, b.west, volume, 100);
  const r = await mustRunRoot('fio', fioArgs(b.east.uri(volume), [`--size=${args.hotBytes}`, '--time_based', `--runtime=${args.seconds}`, '--iodepth=8']), 600_000);
  const w = fioWrite(r.stdout);
  if (w.total_ios < recordsInSet) throw new Error(`fio wrote ${w.total_ios} records, fewer than one pass over the ${recordsInSet}-record set`);
  const c = await b.catchUp(volume);
  const samples = await sampler.stop();
  const sent = (await b.sent()) - sentBefore;
  const unique = recordsInSet * RECORD_BYTES;
  const firstCycle = before.cycles?.captureCycle ?? 0;
  const payload = Sampler.cyclePayload(samples.filter((s) => (s.r1?.transmitCycle ?? 0) >= firstCycle));
  const cyclesSpanned = c.cycle - (before.cycles?.captureCycle ?? c.cycle) + 1;
  const writesPerRecordPerCycle = w.total_ios / recordsInSet / Math.max(1, args.seconds * 1000 / CYCLE_MS);
  console.log(`   host writes ${w.total_ios} × 4 KiB = ${mb(w.io_bytes)} MB (${(w.total_ios / recordsInSet).toFixed(1)} writes per record, ${w.iops.toFixed(0)} IOPS, ` +
    `≈${writesPerRecordPerCycle.toFixed(1)} writes per record per ${CYCLE_MS} ms); unique dirty ${mb(unique)} MB`);
  console.log(`   cycles ${before.cycles?.captureCycle ?? '?'}…${c.cycle} (${cyclesSpanned}); R2 applied cycle ${c.cycle} ${(c.ms / 1000).toFixed(1)} s after fio ended`);
  console.log(`   cycle payload (Σ transmitRecords of ${payload.cycles} cycles seen transmitting) ${payload.records} records = ${mb(payload.records * RECORD_BYTES)} MB; ` +
    `link bytes sent ${mb(sent)} MB; link ÷ cycle payload ${(sent / (payload.records * RECORD_BYTES)).toFixed(3)}`);
  console.log(`   link bytes ÷ host bytes written = ${(sent / w.io_bytes).toFixed(3)}`);
  console.log(`   RATIO link bytes ÷ unique dirty bytes = ${(sent / unique).toFixed(3)}  (target ≤ 1.05)`);
  await b.east.api('DELETE', `/v1/pairs/${volume}`);
}

// ---- 3. lag distribution with the link at 1.2 × the write rate ----
async function lag(b: Bench, args: AsyncBenchArgs): Promise<void> {
  const volume = 'lag';
  const sizeBytes = 1024 * MiB;
  const W = args.lagRateBytes;
  const linkMbit = (1.2 * W * 8) / 1e6;
  await b.pair.shape({ delayMs: args.delayMs, rateMbit: linkMbit });
  await b.createAsyncPair(volume, sizeBytes);
  console.log('');
  console.log(`3. lag: fio randwrite 4 KiB QD4 rate-limited to ${mb(W)} MB/s over a ${(sizeBytes / MiB).toFixed(0)} MiB volume; link reshaped to ` +
    `${linkMbit.toFixed(1)} mbit (${mb(1.2 * W)} MB/s = 1.2 × the write rate), ${args.delayMs} ms each way; pair show sampled every 100 ms for ${args.lagSeconds} s`);
  const warmupS = 3;
  const fio = collect(spawn('fio', fioArgs(b.east.uri(volume), [`--size=${sizeBytes}`, '--norandommap', '--randrepeat=0', '--time_based',
    `--runtime=${warmupS + args.lagSeconds + 1}`, '--iodepth=4', `--rate=${W}`]), { stdio: ['ignore', 'pipe', 'pipe'] }), 600_000);
  const opened = new Map<number, number>(); // cycle → first time seen capturing (ms since the sampler's t0)
  const sampler = new Sampler(b.east, b.west, volume, 100);
  await sleep(warmupS * 1000);
  const from = performance.now() - sampler.t0;
  await sleep(args.lagSeconds * 1000);
  const samples = await sampler.stop();
  const fr = await fio;
  if (fr.code !== 0) throw new Error(`fio exited ${fr.code}: ${fr.stderr}`);
  const w = fioWrite(fr.stdout);
  if (samples.some((s) => s.r1 === null || s.r2 === null)) console.log('   NOTE: cycles stopped (fell back to bitmaps) during the measurement');
  let firstSeen: number | undefined;
  for (const s of samples) {
    const c = s.r1?.captureCycle;
    if (c == null) continue;
    firstSeen ??= c;
    if (c !== firstSeen && !opened.has(c)) opened.set(c, s.ms); // the first cycle seen may have opened before sampling
  }
  const lagCycles: number[] = [];
  const lagSecs: number[] = [];
  for (const s of samples) {
    if (s.ms < from || s.r1?.captureCycle == null || s.r2 == null) continue;
    lagCycles.push(s.r1.captureCycle - s.r2.appliedCycle);
    const openedAt = opened.get(s.r2.appliedCycle + 1);
    if (openedAt !== undefined) lagSecs.push((s.ms - openedAt) / 1000);
  }
  lagCycles.sort((x, y) => x - y);
  lagSecs.sort((x, y) => x - y);
  const switches = [...opened.entries()].sort((x, y) => x[0] - y[0]);
  const periods = switches.slice(1).map(([, t], i) => t - switches[i]![1]).sort((x, y) => x - y);
  const payload = Sampler.cyclePayload(samples.filter((s) => s.ms >= from));
  const sentBytes = (samples.at(-1)?.sent ?? 0) - (samples.find((s) => s.ms >= from)?.sent ?? 0);
  const spanS = ((samples.at(-1)?.ms ?? 0) - from) / 1000;
  const cycleBytes = payload.cycles ? payload.records * RECORD_BYTES / payload.cycles : NaN;
  const transferS = cycleBytes / (1.2 * W);
  console.log(`   fio: ${w.iops.toFixed(0)} IOPS, ${mb(w.bw_bytes)} MB/s; link bytes sent ${mb(sentBytes / spanS)} MB/s over the window; ` +
    `mean cycle payload ${mb(cycleBytes)} MB (transfer at the shaped rate ≈ ${transferS.toFixed(2)} s)`);
  console.log(`   cycle period (switch to switch, ${periods.length} seen): p50 ${(pct(periods, 50) / 1000).toFixed(2)} s, max ${(pct(periods, 100) / 1000).toFixed(2)} s`);
  console.log(`   lag in cycles (R1 capture − R2 applied), ${lagCycles.length} samples: p50 ${pct(lagCycles, 50)}, p99 ${pct(lagCycles, 99)}, max ${pct(lagCycles, 100)}` +
    `  (histogram ${[...new Set(lagCycles)].map((v) => `${v}:${lagCycles.filter((x) => x === v).length}`).join(' ')})`);
  console.log(`   lag in seconds (age of the oldest write R2 lacks), ${lagSecs.length} samples: p50 ${pct(lagSecs, 50).toFixed(2)} s, ` +
    `p99 ${pct(lagSecs, 99).toFixed(2)} s, max ${pct(lagSecs, 100).toFixed(2)} s`);
  const bound = 2 * CYCLE_MS / 1000 + transferS;
  console.log(`   RATIO-ish: p99 lag ${pct(lagSecs, 99).toFixed(2)} s vs target 2 cycles + transfer = ${bound.toFixed(2)} s  (p99 ${pct(lagCycles, 99)} cycles)`);
  await b.east.api('DELETE', `/v1/pairs/${volume}`);
}
