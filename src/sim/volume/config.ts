// One seed's choice of geometry, activity-log shape, workload mix and fault plan ("swarm"
// testing: each seed weights operations differently, so rare mixes are explored too).
import type { ActivityLogConfig } from '../../core/bitmap/activity-log.js';
import type { Prng } from '../../core/lib/prng.js';
import { UNIT_BYTES } from './pattern.js';

export type HostOp = 'write' | 'zero' | 'trim' | 'read' | 'flush' | 'reset';
export const HOST_OPS: readonly HostOp[] = ['write', 'zero', 'trim', 'read', 'flush', 'reset'];

export interface VolumeSimConfig {
  readonly sizeBytes: number;
  readonly trackBytes: number;
  readonly activityLog: ActivityLogConfig;
  /** Bitmap-delta slots after the log's own (0: every eviction persists every bitmap). */
  readonly deltaSlots: number;
  /** Most host operations outstanding at once. */
  readonly queueDepth: number;
  readonly weights: Readonly<Record<HostOp, number>>;
  readonly fuaChance: number;
  /** Largest mutation/read, in 512-byte units. */
  readonly maxUnits: number;
  /** Probability an operation targets the small hot region (to make writes overlap). */
  readonly hotChance: number;
  readonly hotUnits: number;
  readonly safetyOps: number;
  readonly livenessOps: number;
  /** Operation indexes (in the safety phase) before which the array crashes. */
  readonly crashBeforeOp: readonly number[];
  /** Probability that recovery itself is interrupted by another crash. */
  readonly recoveryCrashChance: number;
  /** Mean virtual time between host operations. */
  readonly thinkMs: number;
}

const MiB = 1024 * 1024;

export function chooseConfig(prng: Prng): VolumeSimConfig {
  const trackBytes = prng.pick([4096, 16384, 65536, 65536, 131072]);
  // 1-4 MiB, sometimes not a whole number of tracks (a short last track).
  let sizeBytes = prng.int(1, 4) * MiB;
  if (prng.chance(0.3)) sizeBytes -= prng.int(1, 7) * 4096;
  const trackCount = Math.ceil(sizeBytes / trackBytes);
  // Enough extents that 16 hot ones cannot hold the whole volume: evictions happen.
  const extentChoices = [1, 2, 4, 8, 16, 32].filter((t) => Math.ceil(trackCount / t) >= 20);
  const extentTracks = extentChoices.length > 0 ? prng.pick(extentChoices) : 1;
  const activityLog: ActivityLogConfig = {
    extentTracks,
    maxActiveExtents: prng.pick([16, 16, 17, 24]),
    slotCount: prng.int(2, 4),
    slotBytes: prng.pick([512, 4096]),
  };
  // Mostly sizes every write can be admitted with; sometimes larger ones, which the volume must
  // either split (zeroes, trims) or refuse (writes) rather than livelock.
  const fitUnits = Math.floor(((activityLog.maxActiveExtents - 1) * extentTracks * trackBytes) / UNIT_BYTES);
  const maxUnits = prng.chance(0.15) ? prng.pick([128, 512, 2048]) : Math.min(fitUnits, prng.pick([8, 32, 128, 512]));
  const weights = {} as Record<HostOp, number>;
  for (const op of HOST_OPS) weights[op] = prng.chance(0.15) ? 0 : prng.int(1, 10);
  weights.write += 3;
  weights.reset = prng.chance(0.5) ? Math.min(weights.reset, 2) : 0;
  const crashes = prng.pick([0, 1, 1, 2, 3]);
  const safetyOps = prng.int(60, 240);
  const crashBeforeOp = Array.from({ length: crashes }, () => prng.int(1, safetyOps - 1)).sort((a, b) => a - b);
  return {
    sizeBytes,
    trackBytes,
    activityLog,
    queueDepth: prng.pick([1, 2, 4, 8, 16, 32]),
    weights,
    fuaChance: prng.pick([0, 0.1, 0.3]),
    maxUnits,
    hotChance: prng.pick([0, 0.3, 0.7]),
    hotUnits: prng.int(1, 64),
    safetyOps,
    livenessOps: prng.int(20, 80),
    crashBeforeOp,
    recoveryCrashChance: prng.pick([0, 0.2, 0.5]),
    thinkMs: prng.pick([0, 0.1, 1]),
    // Drawn last: the draws above stay what they were for seeds pinned before deltas existed.
    deltaSlots: prng.pick([0, 1, 3, 8, 8]),
  };
}

export function describeConfig(c: VolumeSimConfig): string {
  const al = c.activityLog;
  return `${c.sizeBytes / UNIT_BYTES} units, ${c.trackBytes / 1024} KiB tracks, AL ${al.extentTracks}x${al.maxActiveExtents} ` +
    `(${al.slotCount} slots of ${al.slotBytes}, ${c.deltaSlots} delta slots), QD ${c.queueDepth}, ${c.safetyOps}+${c.livenessOps} ops, ` +
    `crashes before ${c.crashBeforeOp.join(',') || 'none'}`;
}
