// bench/write-path: what the write plan and the mirrors cost per host write, in CPU. Three arrays
// run in this one process joined by in-memory links (no network, no NBD), so the figure is the
// write path itself: Volume.write of 4 KiB random writes at queue depth 32 on an unpaired volume,
// then on volumes that are R1 of a sync pair, an async pair, and both at once (fan-out). Each
// case is measured twice (warm-up, then the figure) and printed as CPU µs per write and as a
// ratio to the unpaired volume in the same run. The sync and fan-out cases also print how many
// writes were forwarded synchronously (every one must be).
import { startTestArray, type TestArray } from '../test/helpers/in-process-array.js';
import { waitFor } from '../test/helpers/daemon.js';
import { inProcessLinks } from '../src/sim/sim-links.js';
import type { PairMode } from '../src/core/replication/pair-record.js';
import type { Volume } from '../src/app/volume/volume.js';

const MiB = 1024 * 1024;
const QUEUE_DEPTH = 32;
const SECRET = new Uint8Array(32).fill(7);

export interface WritePathArgs {
  /** Volume size (the writes land at random 4 KiB offsets in it). */
  readonly sizeBytes: number;
  /** Writes per measured run. */
  readonly writes: number;
}

interface Figure { readonly cpuUsPerWrite: number; readonly wallUsPerWrite: number }

async function run(volume: Volume, sizeBytes: number, writes: number): Promise<Figure> {
  let next = 0;
  let x = 12345;
  const data = new Uint8Array(4096).fill(1);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await Promise.all(Array.from({ length: QUEUE_DEPTH }, async () => {
    while (next < writes) {
      next++;
      x = (x * 1103515245 + 12345) & 0x7fffffff;
      await volume.write((x % (sizeBytes / 4096)) * 4096, data);
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
    const cases: Array<[string, PairMode[]]> = [['unpaired', []], ['sync', ['sync']], ['async', ['async']], ['fan-out sync+async', ['sync', 'async']]];
    const rows: Array<{ name: string; figure: Figure; forwarded?: number }> = [];
    for (const [index, [label, modes]] of cases.entries()) {
      const volume = `v${index}`;
      await east.service.createVolume(volume, sizeBytes);
      const targets: Array<[TestArray, string]> = [[west, 'west'], [north, 'north']];
      const pairNames: string[] = [];
      for (const [i, mode] of modes.entries()) {
        const [array, peer] = targets[i]!;
        const name = i === 0 ? volume : `${volume}-${peer}`;
        await array.service.createVolume(`${volume}-r`, sizeBytes);
        await east.service.pairs.create({ volume, ...(i > 0 ? { name } : {}), peer, remoteVolume: `${volume}-r`, mode, onLinkFailure: 'continue' });
        await waitFor(`${name} synchronized`, async () => east.service.pairs.status(name).state === 'synchronized', 120_000);
        pairNames.push(name);
      }
      const v = east.service.volume(volume);
      await run(v, sizeBytes, writes); // warm-up (and, async: the cycles start)
      const forwardedCount = (): number => east.service.pairs.status(pairNames[0]!).counters.writesForwarded;
      const forwardedBefore = modes[0] === 'sync' ? forwardedCount() : 0;
      const figure = await run(v, sizeBytes, writes);
      const forwarded = modes[0] === 'sync' ? forwardedCount() - forwardedBefore : undefined;
      rows.push({ name: label, figure, ...(forwarded !== undefined ? { forwarded } : {}) });
    }
    const base = rows[0]!.figure;
    console.log(`write path: ${writes} random 4 KiB writes at QD${QUEUE_DEPTH} per case, in-process arrays, ${sizeBytes / MiB} MiB volumes`);
    console.log('case                  CPU µs/write  × unpaired   wall µs/write  × unpaired   forwarded (sync)');
    for (const r of rows) {
      console.log(`${r.name.padEnd(22)}${r.figure.cpuUsPerWrite.toFixed(1).padStart(12)}${(r.figure.cpuUsPerWrite / base.cpuUsPerWrite).toFixed(2).padStart(11)}` +
        `${r.figure.wallUsPerWrite.toFixed(1).padStart(16)}${(r.figure.wallUsPerWrite / base.wallUsPerWrite).toFixed(2).padStart(11)}` +
        `${r.forwarded === undefined ? '' : String(r.forwarded).padStart(19)}`);
    }
  } finally {
    for (const a of arrays) await a.close();
  }
}
