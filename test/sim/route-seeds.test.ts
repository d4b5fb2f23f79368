// Routed commands under the simulator: random peer graphs, random routes (valid, loops, non-peer
// hops) and links cut and healed while requests travel (src/sim/route-sim.ts has the oracle).
// TIDEMARK_ROUTE_SEEDS / TIDEMARK_ROUTE_START change the range.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runRouteSeed } from '../../src/sim/route-sim.js';

const count = Number(process.env.TIDEMARK_ROUTE_SEEDS ?? 200);
const start = Number(process.env.TIDEMARK_ROUTE_START ?? 1);

test(`route simulation passes ${count} seeds from ${start}`, { timeout: 300_000 }, async () => {
  const failures: string[] = [];
  const totals = { answered: 0, refused: 0, linkDown: 0, cuts: 0 };
  for (let seed = start; seed < start + count; seed++) {
    const r = await runRouteSeed(seed);
    if (!r.ok) failures.push(`${r.failure}\n  reproduce: TIDEMARK_ROUTE_START=${seed} TIDEMARK_ROUTE_SEEDS=1 node scripts/run-tests.mjs route-seeds`);
    totals.answered += r.answered;
    totals.refused += r.refused;
    totals.linkDown += r.linkDown;
    totals.cuts += r.cuts;
  }
  assert.deepEqual(failures, []);
  // Every kind of outcome happened, or the seeds prove little.
  if (count >= 50) for (const [key, value] of Object.entries(totals)) assert.ok(value > 0, `${key} was exercised (${value})`);
});

test('a route seed always gives the same run', async () => {
  for (const seed of [5, 123]) assert.deepEqual(await runRouteSeed(seed), await runRouteSeed(seed));
});
