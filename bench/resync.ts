// bench/resync: two figures of a pair between two array daemons in two network namespaces, the link
// between them shaped (test/helpers/netns.ts; on kernels without netem the userspace TUN shaper).
//
//  1. Resync rate vs link rate. A 256 MiB volume, pair synchronized; `suspend`; fio writes N MiB of
//     random data in 4 KiB records spread over the volume (random map: every record at most once);
//     `resume`; time until `synchronized`. Prints the resync payload rate ÷ the shaped link rate
//     (target ≥ 0.9), and the same against a plain TCP stream measured on the same link, so a shaper
//     that cannot reach its nominal rate is visible as such.
//  2. Link bytes ÷ unique dirty bytes for a rewrite-heavy workload in adaptive mode: fio randwrite
//     4 KiB over an 8 MiB hot set for some seconds (random map: every record of the set is written
//     in each pass, so after ≥ 1 pass the unique dirty bytes are exactly 8 MiB), then wait
//     `synchronized`. Link bytes = delta of R1's `bytesSent` to the peer (frames, headers included)
//     over workload + resync (target ≤ 1.05). Shown for the pair replicating during the workload,
//     and for the pair suspended during it and resumed after (the floor: pure coalescing), and for the
//     pair replicating with a minimum age (`minAgeMs`, default 2 s): each record ships at most once
//     per interval, so payload ÷ unique ≤ workload seconds ÷ interval + 1 (the goal printed).
//
// The API is reached through a relay in each namespace, NBD through Unix sockets (see
// test/helpers/netns-arrays.ts); only link traffic crosses the shaped link.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { NetnsPair, type LinkShape } from '../test/helpers/netns.js';
import { NetnsArray, collect, mustRunRoot, type PairJson, type PeerJson } from '../test/helpers/netns-arrays.js';
import { goal } from './lib/goals.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const RECORD_BYTES = 4 * KiB;

export interface ResyncBenchArgs {
  /** fio runtime of the rewrite workload. */
  readonly seconds: number;
  /** Volume size of the resync-rate measurement. */
  readonly sizeBytes: number;
  /** Bytes written while suspended (4 KiB records spread over the volume). */
  readonly dirtyBytes: number;
  readonly rateMbit: number;
  readonly delayMs: number;
  /** The rewrite workload's hot set. */
  readonly hotBytes: number;
  /** The adaptive pair's minimum age in the third variant of part 2. */
  readonly minAgeMs: number;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const mb = (bytes: number): string => (bytes / 1e6).toFixed(2);
const mbps = (bytes: number, ms: number): number => bytes / 1e6 / (ms / 1000);

interface FioJson { jobs: Array<{ write: { io_bytes: number; total_ios: number; iops: number } }> }

async function fio(uri: string, args: string[]): Promise<FioJson['jobs'][0]['write']> {
  const r = await mustRunRoot('fio', ['--name=w', '--ioengine=nbd', `--uri=${uri}`, '--rw=randwrite', '--bs=4k',
    '--refill_buffers', '--output-format=json', ...args], 600_000);
  return (JSON.parse(r.stdout.slice(r.stdout.indexOf('{'))) as FioJson).jobs[0]!.write;
}

// A one-way TCP stream over the shaped link: the sink in B counts bytes and answers when the sender
// closes; the sender in A times connect → answer.
const SINK = `
const net = require('node:net');
net.createServer((s) => { let n = 0; s.on('data', (d) => { n += d.length; }); s.on('end', () => s.end(String(n))); })
  .listen(7600, process.argv[1], () => console.log('listening'));
`;
const SENDER = `
const net = require('node:net');
const [host, total] = [process.argv[1], Number(process.argv[2])];
const t0 = performance.now();
const s = net.connect(7600, host, () => {
  const chunk = Buffer.alloc(256 * 1024, 0x5a); let sent = 0;
  const pump = () => { while (sent < total) { sent += chunk.length; if (!s.write(chunk)) return s.once('drain', pump); } s.end(); };
  pump();
});
let answer = '';
s.on('data', (d) => { answer += d; });
s.on('close', () => console.log(JSON.stringify({ bytes: Number(answer), ms: performance.now() - t0 })));
`;

async function tcpStreamRate(pair: NetnsPair, bytes: number): Promise<number> {
  const sink = pair.spawnIn(pair.b, process.execPath, ['-e', SINK, pair.b.address], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    await new Promise<void>((resolve, reject) => {
      sink.once('exit', () => reject(new Error('sink exited')));
      sink.stdout!.once('data', () => resolve());
    });
    const r = await collect(pair.spawnIn(pair.a, process.execPath, ['-e', SENDER, pair.b.address, String(bytes)], { stdio: ['ignore', 'pipe', 'pipe'] }), 120_000);
    const result = JSON.parse(r.stdout) as { bytes: number; ms: number };
    if (result.bytes < bytes) throw new Error(`TCP stream: ${result.bytes} of ${bytes} bytes arrived`);
    return mbps(result.bytes, result.ms);
  } finally {
    sink.kill('SIGKILL');
  }
}

interface Sample { ms: number; state: string; bytesShipped: number; bytesSent: number }

/** Polls R1's pair and peer every 50 ms until the pair is synchronized (owes nothing). */
async function untilSynchronized(east: NetnsArray, pairName: string, peer: string, timeoutMs: number): Promise<Sample[]> {
  const t0 = performance.now();
  const samples: Sample[] = [];
  for (;;) {
    const [p, q] = await Promise.all([east.api<PairJson>('GET', `/v1/pairs/${pairName}`), east.api<PeerJson>('GET', `/v1/peers/${peer}`)]);
    samples.push({ ms: performance.now() - t0, state: p.state, bytesShipped: p.counters.bytesShipped, bytesSent: q.bytesSent ?? 0 });
    if (p.state === 'synchronized') return samples;
    if (performance.now() - t0 > timeoutMs) throw new Error(`${pairName} not synchronized after ${timeoutMs} ms: ${JSON.stringify(p)}`);
    await sleep(50);
  }
}

async function createPair(east: NetnsArray, west: NetnsArray, volume: string, sizeBytes: number, mode: 'sync' | 'adaptive', minAgeMs = 0): Promise<void> {
  await east.api('POST', '/v1/volumes', { name: volume, sizeBytes });
  await west.api('POST', '/v1/volumes', { name: `${volume}-r`, sizeBytes });
  await east.api('POST', '/v1/pairs', { volume, peer: west.name, remoteVolume: `${volume}-r`, mode, ...(minAgeMs > 0 ? { minAgeMs } : {}) });
  await untilSynchronized(east, volume, west.name, 120_000);
}

const counters = async (east: NetnsArray, volume: string): Promise<{ shipped: number; sent: number }> => {
  const [p, q] = await Promise.all([east.api<PairJson>('GET', `/v1/pairs/${volume}`), east.api<PeerJson>('GET', '/v1/peers/west')]);
  return { shipped: p.counters.bytesShipped, sent: q.bytesSent ?? 0 };
};

export async function benchResync(args: ResyncBenchArgs): Promise<void> {
  const availability = await NetnsPair.available();
  if (!availability.available) {
    console.log(`bench/resync: skipped, network namespaces unavailable: ${availability.reason}`);
    return;
  }
  const dir = await mkdtemp('/tmp/tm-bresync-');
  const pair = await NetnsPair.create({ prefix: 'tmb' });
  const arrays: NetnsArray[] = [];
  try {
    const shape: LinkShape = { delayMs: args.delayMs, rateMbit: args.rateMbit };
    await pair.shape(shape);
    const linkMBps = args.rateMbit / 8;
    console.log(`bench/resync: ${pair.backend} link backend, shaped ${args.rateMbit} mbit (${linkMBps.toFixed(2)} MB/s), ` +
      `${args.delayMs} ms each way (RTT ${2 * args.delayMs} ms), no loss; arrays east (R1) and west (R2) in two namespaces`);
    const tcpMBps = await tcpStreamRate(pair, Math.max(8 * MiB, Math.round(args.rateMbit * 1e6 / 8 * 3)));
    console.log(`plain TCP stream over the same link: ${tcpMBps.toFixed(2)} MB/s = ${(tcpMBps / linkMBps).toFixed(3)} × the shaped rate` +
      (tcpMBps < 0.9 * linkMBps ? '  (the shaper does not sustain the nominal rate; see the TCP-relative ratios)' : ''));

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

    // ---- 1. resync rate ----
    await createPair(east, west, 'db', args.sizeBytes, 'sync');
    await east.api('POST', '/v1/pairs/db/suspend', {});
    const written = await fio(east.uri('db'), [`--size=${args.sizeBytes}`, `--io_size=${args.dirtyBytes}`, '--iodepth=32']);
    if (written.io_bytes !== args.dirtyBytes) throw new Error(`fio wrote ${written.io_bytes} bytes, expected ${args.dirtyBytes}`);
    const before = await counters(east, 'db');
    const resumedAt = performance.now();
    await east.api('POST', '/v1/pairs/db/resume', {});
    const samples = await untilSynchronized(east, 'db', 'west', 600_000);
    const resyncMs = performance.now() - resumedAt;
    const after = await counters(east, 'db');
    const shipped = after.shipped - before.shipped;
    const sent = after.sent - before.sent;
    const rate = mbps(shipped, resyncMs);
    const wireRate = mbps(sent, resyncMs);
    // Steady state: from the first sample with 10 % shipped to the last with 90 % shipped.
    const s10 = samples.find((s) => s.bytesShipped - before.shipped >= 0.1 * shipped);
    const s90 = [...samples].reverse().find((s) => s.bytesShipped - before.shipped <= 0.9 * shipped);
    const steady = s10 && s90 && s90.ms > s10.ms ? mbps(s90.bytesShipped - s10.bytesShipped, s90.ms - s10.ms) : NaN;
    console.log('');
    console.log(`1. resync after suspend: ${mb(args.dirtyBytes)} MB written as 4 KiB records at random over a ${(args.sizeBytes / MiB).toFixed(0)} MiB volume (${written.total_ios} records, fio QD32)`);
    console.log(`   resume → synchronized: ${(resyncMs / 1000).toFixed(2)} s; payload shipped ${mb(shipped)} MB (counters.bytesShipped), link bytes sent ${mb(sent)} MB`);
    console.log(`   resync payload rate ${rate.toFixed(2)} MB/s; link bytes rate ${wireRate.toFixed(2)} MB/s; steady state (10 %→90 %) payload ${steady.toFixed(2)} MB/s`);
    console.log(`   RATIO resync payload rate ÷ shaped link rate = ${(rate / linkMBps).toFixed(3)}  (target ≥ 0.9; steady state ${(steady / linkMBps).toFixed(3)})`);
    console.log(`   ratio resync payload rate ÷ plain TCP on the same link = ${(rate / tcpMBps).toFixed(3)}  (steady state ${(steady / tcpMBps).toFixed(3)})`);
    if (shipped !== args.dirtyBytes) console.log(`   NOTE: shipped ${shipped} bytes ≠ ${args.dirtyBytes} written`);
    await east.api('DELETE', '/v1/pairs/db');

    // ---- 2. link bytes ÷ unique dirty bytes, rewrite-heavy, adaptive ----
    console.log('');
    console.log(`2. rewrite-heavy workload, adaptive mode: fio randwrite 4 KiB QD8 over a ${(args.hotBytes / MiB).toFixed(0)} MiB hot set for ${args.seconds} s`);
    const recordsInSet = args.hotBytes / RECORD_BYTES;
    for (const variant of ['replicating', 'suspended', 'min-age'] as const) {
      const volume = { replicating: 'hot', suspended: 'cold', 'min-age': 'aged' }[variant];
      await createPair(east, west, volume, 64 * MiB, 'adaptive', variant === 'min-age' ? args.minAgeMs : 0);
      const start = await counters(east, volume);
      if (variant === 'suspended') await east.api('POST', `/v1/pairs/${volume}/suspend`, {});
      const w = await fio(east.uri(volume), [`--size=${args.hotBytes}`, '--time_based', `--runtime=${args.seconds}`, '--iodepth=8']);
      if (w.total_ios < recordsInSet) throw new Error(`fio wrote ${w.total_ios} records, fewer than one pass over the ${recordsInSet}-record set`);
      const uniqueBytes = recordsInSet * RECORD_BYTES; // random map: one full pass writes every record
      const workloadDone = performance.now();
      if (variant === 'suspended') await east.api('POST', `/v1/pairs/${volume}/resume`, {});
      await untilSynchronized(east, volume, 'west', 600_000);
      const syncedMs = performance.now() - workloadDone;
      const end = await counters(east, volume);
      const link = end.sent - start.sent;
      const payload = end.shipped - start.shipped;
      console.log(`   ${{ replicating: 'pair replicating during the workload', suspended: 'pair suspended during the workload, resumed after',
        'min-age': `pair replicating during the workload with a minimum age of ${args.minAgeMs} ms` }[variant]}:`);
      console.log(`     host writes ${w.total_ios} × 4 KiB = ${mb(w.io_bytes)} MB (${(w.total_ios / recordsInSet).toFixed(1)} writes per record, ${w.iops.toFixed(0)} IOPS); ` +
        `unique dirty ${mb(uniqueBytes)} MB; synchronized ${(syncedMs / 1000).toFixed(2)} s after the workload`);
      console.log(`     link bytes sent ${mb(link)} MB; payload shipped (counters.bytesShipped) ${mb(payload)} MB; link ÷ payload ${(link / payload).toFixed(3)}`);
      console.log(`     RATIO link bytes ÷ unique dirty bytes = ${(link / uniqueBytes).toFixed(3)}  (target ≤ 1.05); payload ÷ unique ${(payload / uniqueBytes).toFixed(3)}`);
      if (variant === 'min-age') {
        goal(`adaptive with a ${args.minAgeMs} ms minimum age: payload ÷ unique dirty bytes`, payload / uniqueBytes, 'atMost',
          (args.seconds * 1000) / args.minAgeMs + 1);
      }
      await east.api('DELETE', `/v1/pairs/${volume}`);
    }
  } finally {
    await Promise.all(arrays.map((a) => a.stop().catch(() => undefined)));
    await pair.destroy();
    await rm(dir, { recursive: true, force: true });
  }
}
