// Async pairs whose cycles spill (tiny cycle memory, the simulated spill store completing out of
// order) and, with a small spill limit, fall back to bitmaps and resync: the pair-sim oracle holds
// for them as for every other seed (R2 converges to R1; a crash or partition loses nothing).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { describePairConfig, runPairSeed } from '../../src/sim/pair/pair-sim.js';

const SEEDS = Number(process.env.TIDEMARK_PAIR_SPILL_SEEDS ?? 150);
const START = Number(process.env.TIDEMARK_PAIR_SPILL_SEED_START ?? 1);

test(`remote pairs, async with spill: ${SEEDS} seeds with 64 KiB of cycle memory, some with a 64 KiB spill limit`, async () => {
  const failures: string[] = [];
  let spilled = 0;
  for (let seed = START; seed < START + SEEDS; seed++) {
    const r = await runPairSeed(seed, (c) => ({
      ...c, mode: 'async', onLinkFailure: 'continue', cycleMemoryBytes: 64 * 1024,
      ...(seed % 3 === 0 ? { spillLimitBytes: 64 * 1024 } : {}),
    }));
    if (r.spillWrites > 0) spilled++;
    if (!r.ok) failures.push(`seed ${seed} (${describePairConfig(r.config)}): ${r.failure}`);
  }
  assert.deepEqual(failures, [], 'reproduce one with runPairSeed(seed, configure) as above');
  assert.ok(spilled >= SEEDS / 5, `only ${spilled} seeds spilled`);
});
