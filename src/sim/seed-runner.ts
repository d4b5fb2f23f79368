// Runs a range of seeds through the volume simulation and collects the failures.
import { runVolumeSeed, type VolumeSeedOptions, type VolumeSeedResult } from './volume/volume-sim.js';

export interface SeedRunSummary {
  readonly seeds: number;
  readonly failures: VolumeSeedResult[];
  readonly hostOps: number;
  readonly crashes: number;
  readonly elapsedMs: number;
}

export const reproduceCommand = (seed: number): string => `npm run sim -- --seed ${seed}`;

export async function runSeeds(
  seeds: Iterable<number>,
  options: VolumeSeedOptions & { readonly onResult?: (result: VolumeSeedResult) => void; readonly now?: () => number } = {},
): Promise<SeedRunSummary> {
  const now = options.now ?? (() => 0);
  const started = now();
  const failures: VolumeSeedResult[] = [];
  let count = 0;
  let hostOps = 0;
  let crashes = 0;
  for (const seed of seeds) {
    const result = await runVolumeSeed(seed, options);
    count++;
    hostOps += result.hostOps;
    crashes += result.crashes;
    if (!result.ok) failures.push(result);
    options.onResult?.(result);
  }
  return { seeds: count, failures, hostOps, crashes, elapsedMs: now() - started };
}

export function* seedRange(start: number, count: number): Generator<number> {
  for (let i = 0; i < count; i++) yield (start + i) >>> 0;
}
