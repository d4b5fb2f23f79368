// Ordered asynchronous replication over many seeds (see src/sim/cycles/cycles-sim.ts for the oracle).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { describeCyclesConfig, runCyclesSeed } from '../../src/sim/cycles/cycles-sim.js';

const SEEDS = Number(process.env.TIDEMARK_CYCLES_SEEDS ?? 600);
const START = Number(process.env.TIDEMARK_CYCLES_SEED_START ?? 1);

test(`async cycles: ${SEEDS} seeds of dependent writes, lossy links, R2 crashes, R1 disasters, coordinator crashes, evictions, joins and leaves; R2s recover to one prefix, or converge`, async () => {
  const failures: string[] = [];
  let disasters = 0;
  let groups = 0;
  let r2Crashes = 0;
  let spilled = 0;
  let partialRecoveries = 0;
  const group = { coordinatorCrashes: 0, evictions: 0, windowTimeouts: 0, fallbacks: 0, joins: 0, leaves: 0, recentJoinExclusions: 0 };
  for (let seed = START; seed < START + SEEDS; seed++) {
    const r = await runCyclesSeed(seed);
    if (!r.ok) failures.push(`seed ${seed} (${describeCyclesConfig(r.config)}): ${r.failure}`);
    if (r.config.disaster) disasters++;
    if (r.config.group && r.config.members > 1) groups++;
    r2Crashes += r.r2Crashes;
    spilled += r.spilled;
    if (r.recoveredWrites !== null && r.recoveredWrites > 0 && r.recoveredWrites < r.writesAcked) partialRecoveries++;
    for (const k of Object.keys(group) as (keyof typeof group)[]) group[k] += r[k];
  }
  assert.deepEqual(failures, [], 'reproduce one with runCyclesSeed(seed)');
  // The campaign must exercise what it claims to.
  assert.ok(disasters >= SEEDS / 4 && groups >= SEEDS / 4, `disasters ${disasters}, multi-member groups ${groups}`);
  assert.ok(r2Crashes > 0 && spilled > 0, `R2 crashes ${r2Crashes}, records spilled ${spilled}`);
  assert.ok(partialRecoveries >= SEEDS / 20, `only ${partialRecoveries} disasters recovered to a strict, non-empty prefix`);
  // Coordinator crashes (also mid-switch), evictions, member window timeouts (with fallbacks),
  // joins (also disasters right after one) and leaves happen.
  for (const [k, v] of Object.entries(group)) assert.ok(v >= SEEDS / 100, `only ${v} ${k} in ${SEEDS} seeds: ${JSON.stringify(group)}`);
});
