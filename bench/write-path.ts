// bench/write-path: what the write plan and the mirrors cost per host write, in CPU. Three arrays
// run in this one process joined by in-memory links (no network, no NBD), so the figure is the
// write path itself: Volume.write of 4 KiB random writes at queue depth 32 on an unpaired volume,
// then on volumes that are R1 of a sync pair, an async pair, and both at once (fan-out). Each
// case is measured twice (warm-up, then the figure) and printed as CPU µs per write and as a
// ratio to the unpaired volume in the same run. The sync and fan-out cases also print how many
// writes were forwarded synchronously (every one must be). Then the sync and async cases again on a
// LARGE_VOLUME_BYTES volume, the writes over the same first --size bytes of it: a write's cost must
// not grow with the volume (a scan of the volume's track bitmap per write made a sync write on a
// 64 GiB volume cost three times one on a 256 MiB volume over NBD); printed as a ratio to the small volume.
// Last, unpaired writes over the whole large volume: the activity log evicting on nearly every
// transaction (in wall time, as they wait for the log's syncs).
import { startTestArray, type TestArray } from '../test/helpers/in-process-array.js';
import { waitFor } from '../test/helpers/daemon.js';
import { inProcessLinks } from '../src/sim/sim-links.js';
import type { PairMode } from '../src/core/replication/pair-record.js';
import type { Volume } from '../src/app/volume/volume.js';
import { goal } from './lib/goals.js';

const MiB = 1024 * 1024;
const QUEUE_DEPTH = 32;
const SECRET = new Uint8Array(32).fill(7);
/**
 * Sparse: only the bitmaps (1 Mbit at 64 KiB tracks) and what the writes touch take room. Not
 * larger: a pair's initial copy asks R2 about every 256 tracks of holes (a 1 TiB volume's takes ~12 s).
 */
const LARGE_VOLUME_BYTES = 64 * 1024 * MiB;
/** A large volume's write may cost this much more than a small one's (noise), no more. */
const LARGE_VOLUME_MAX_RATIO = 1.5;
const WHOLE_LARGE = 'unpaired, all of 64 GiB';
/**
 * Random writes over all of the large volume touch far more extents than the activity log holds
 * hot (4 GiB): nearly every write waits for a log transaction that evicts an extent, and lands on a
 * block the sparse file must allocate. Each eviction writes a bitmap delta, not every bitmap (which
 * made this 45-60x).
 */
const WHOLE_VOLUME_MAX_RATIO = 15;

export interface WritePathArgs {
  /** Volume size (the writes land at random 4 KiB offsets in it; in the large volumes, in its first sizeBytes). */
  readonly sizeBytes: number;
  /** Writes per measured run. */
  readonly writes: number;
}

interface Figure { readonly cpuUsPerWrite: number; readonly wallUsPerWrite: number }

/** `writes` random 4 KiB writes at QD32 over the first `spanBytes` of `volume`. */
async function run(volume: Volume, spanBytes: number, writes: number): Promise<Figure> {
  let next = 0;
  let x = 12345;
  const data = new Uint8Array(4096).fill(1);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await Promise.all(Array.from({ length: QUEUE_DEPTH }, async () => {
    while (next < writes) {
      next++;
      // 32-bit arithmetic: a float product loses its low bits past 2^53, and the offsets then fell
      // on 481 of the 16,384 records of 64 MiB (cache-hot cycles and bitmaps flattered every case).
      x = (Math.imul(x, 1103515245) + 12345) & 0x7fffffff;
      await volume.write((x % (spanBytes / 4096)) * 4096, data);
    }
  }));
  const cpu = process.cpuUsage(cpu0);
  return { cpuUsPerWrite: (cpu.user + cpu.system) / writes, wallUsPerWrite: ((performance.now() - t0) * 1000) / writes };
}

export async function benchWritePath({ sizeBytes, writes }: WritePathArgs): Promise<void> {
  const hub = inProcessLinks();
  const east = await startTestArray({ name: 'east', links: hub.endpoint('east') });
  const west = await startTestArray({ name: 'west', links: hub.endpoint('west') });
  const north = await startTestArray({ name: 'north', links: hub.endpoint('north') });
  const arrays: TestArray[] = [east, west, north];
  try {
    await east.service.addPeer('west', '127.0.0.1:1', SECRET);
    await west.service.addPeer('east', '127.0.0.1:1', SECRET);
    await east.service.addPeer('north', '127.0.0.1:1', SECRET);
    await north.service.addPeer('east', '127.0.0.1:1', SECRET);
    const large = `${LARGE_VOLUME_BYTES / (1024 * MiB)} GiB volume`;
    const cases: Array<[string, PairMode[], number, number]> = [['unpaired', [], sizeBytes, sizeBytes], ['sync', ['sync'], sizeBytes, sizeBytes],
      ['async', ['async'], sizeBytes, sizeBytes], ['fan-out sync+async', ['sync', 'async'], sizeBytes, sizeBytes],
      [`sync, ${large}`, ['sync'], LARGE_VOLUME_BYTES, sizeBytes], [`async, ${large}`, ['async'], LARGE_VOLUME_BYTES, sizeBytes],
      [WHOLE_LARGE, [], LARGE_VOLUME_BYTES, LARGE_VOLUME_BYTES]];
    const rows: Array<{ name: string; figure: Figure; forwarded?: number }> = [];
    for (const [index, [label, modes, volumeBytes, spanBytes]] of cases.entries()) {
      const volume = `v${index}`;
      await east.service.createVolume(volume, volumeBytes);
      const targets: Array<[TestArray, string]> = [[west, 'west'], [north, 'north']];
      const pairNames: string[] = [];
      for (const [i, mode] of modes.entries()) {
        const [array, peer] = targets[i]!;
        const name = i === 0 ? volume : `${volume}-${peer}`;
        await array.service.createVolume(`${volume}-r`, volumeBytes);
        await east.service.pairs.create({ volume, ...(i > 0 ? { name } : {}), peer, remoteVolume: `${volume}-r`, mode, onLinkFailure: 'continue' });
        await waitFor(`${name} synchronized`, async () => east.service.pairs.status(name).state === 'synchronized', 120_000);
        pairNames.push(name);
      }
      const v = east.service.volume(volume);
      await run(v, spanBytes, writes); // warm-up (and, async: the cycles start)
      const forwardedCount = (): number => east.service.pairs.status(pairNames[0]!).counters.writesForwarded;
      const forwardedBefore = modes[0] === 'sync' ? forwardedCount() : 0;
      const figure = await run(v, spanBytes, writes);
      const forwarded = modes[0] === 'sync' ? forwardedCount() - forwardedBefore : undefined;
      rows.push({ name: label, figure, ...(forwarded !== undefined ? { forwarded } : {}) });
    }
    const base = rows[0]!.figure;
    console.log(`write path: ${writes} random 4 KiB writes at QD${QUEUE_DEPTH} per case, in-process arrays, ${sizeBytes / MiB} MiB volumes ` +
      `(and ${large}s, written over their first ${sizeBytes / MiB} MiB)`);
    console.log('case                       CPU µs/write  × unpaired   wall µs/write  × unpaired   forwarded (sync)');
    for (const r of rows) {
      console.log(`${r.name.padEnd(27)}${r.figure.cpuUsPerWrite.toFixed(1).padStart(12)}${(r.figure.cpuUsPerWrite / base.cpuUsPerWrite).toFixed(2).padStart(11)}` +
        `${r.figure.wallUsPerWrite.toFixed(1).padStart(16)}${(r.figure.wallUsPerWrite / base.wallUsPerWrite).toFixed(2).padStart(11)}` +
        `${r.forwarded === undefined ? '' : String(r.forwarded).padStart(19)}`);
    }
    for (const mode of ['sync', 'async']) {
      const small = rows.find((r) => r.name === mode)!.figure.cpuUsPerWrite;
      const big = rows.find((r) => r.name === `${mode}, ${large}`)!.figure.cpuUsPerWrite;
      goal(`${mode}-pair CPU per write on a ${large} ÷ on a ${sizeBytes / MiB} MiB volume`, big / small, 'atMost', LARGE_VOLUME_MAX_RATIO);
    }
    const whole = rows.find((r) => r.name === WHOLE_LARGE)!.figure.wallUsPerWrite;
    goal(`unpaired wall per write, random over all of a ${large} ÷ over ${sizeBytes / MiB} MiB`, whole / base.wallUsPerWrite, 'atMost', WHOLE_VOLUME_MAX_RATIO);
  } finally {
    for (const a of arrays) await a.close();
  }
}
