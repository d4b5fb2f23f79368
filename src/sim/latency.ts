// Seeded operation latencies for simulated devices: mostly short, with an occasional long tail,
// so completions arrive out of order.
import type { Prng } from '../core/lib/prng.js';

export interface LatencyProfile {
  /** Typical latency range in virtual milliseconds. */
  readonly minMs: number;
  readonly maxMs: number;
  /** Probability that one operation is slow (up to `slowMs`). */
  readonly slowChance: number;
  readonly slowMs: number;
}

export const FAST_DEVICE: LatencyProfile = { minMs: 0.05, maxMs: 1, slowChance: 0.05, slowMs: 20 };

export function drawLatency(prng: Prng, profile: LatencyProfile): number {
  if (prng.chance(profile.slowChance)) return profile.maxMs + prng.next() * profile.slowMs;
  return profile.minMs + prng.next() * (profile.maxMs - profile.minMs);
}
