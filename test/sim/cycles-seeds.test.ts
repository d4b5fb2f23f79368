// Ordered asynchronous replication over many seeds (see src/sim/cycles/cycles-sim.ts for the oracle).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { describeCyclesConfig, runCyclesSeed } from '../../src/sim/cycles/cycles-sim.js';

const SEEDS = Number(process.env.TIDEMARK_CYCLES_SEEDS ?? 300);
const START = Number(process.env.TIDEMARK_CYCLES_SEED_START ?? 1);

test(`async cycles: ${SEEDS} seeds of dependent writes, lossy links, R2 crashes and R1 disasters; R2s recover to one prefix, or converge`, async () => {
  const failures: string[] = [];
  let disasters = 0;
  let groups = 0;
  let r2Crashes = 0;
  let spilled = 0;
  let partialRecoveries = 0;
  for (let seed = START; seed < START + SEEDS; seed++) {
    const r = await runCyclesSeed(seed);
    if (!r.ok) failures.push(`seed ${seed} (${describeCyclesConfig(r.config)}): ${r.failure}`);
    if (r.config.disaster) disasters++;
    if (r.config.group && r.config.members > 1) groups++;
    r2Crashes += r.r2Crashes;
    spilled += r.spilled;
    if (r.recoveredWrites !== null && r.recoveredWrites > 0 && r.recoveredWrites < r.writesAcked) partialRecoveries++;
  }
  assert.deepEqual(failures, [], 'reproduce one with runCyclesSeed(seed)');
  // The campaign must exercise what it claims to.
  assert.ok(disasters >= SEEDS / 4 && groups >= SEEDS / 4, `disasters ${disasters}, multi-member groups ${groups}`);
  assert.ok(r2Crashes > 0 && spilled > 0, `R2 crashes ${r2Crashes}, records spilled ${spilled}`);
  assert.ok(partialRecoveries >= SEEDS / 20, `only ${partialRecoveries} disasters recovered to a strict, non-empty prefix`);
});
