// A few hundred seeds of the volume simulation (the real Volume on simulated faulty storage, with
// crashes and the oracle). TIDEMARK_SIM_SEEDS / TIDEMARK_SIM_START change the range.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { reproduceCommand, runSeeds, seedRange } from '../../src/sim/seed-runner.js';
import { runVolumeSeed } from '../../src/sim/volume/volume-sim.js';

const count = Number(process.env.TIDEMARK_SIM_SEEDS ?? 300);
const start = Number(process.env.TIDEMARK_SIM_START ?? 1);

test(`volume simulation passes ${count} seeds from ${start}`, async () => {
  const summary = await runSeeds(seedRange(start, count));
  const report = summary.failures.map((f) => `seed ${f.seed}: ${f.failure}\n  reproduce: ${reproduceCommand(f.seed)}`);
  assert.deepEqual(report, []);
  assert.ok(summary.crashes > count / 2, `crashes were simulated (${summary.crashes})`);
});

test('a seed always gives the same run', async () => {
  for (const seed of [7, 1234, 4_000_000_001]) {
    const a = await runVolumeSeed(seed);
    const b = await runVolumeSeed(seed);
    assert.deepEqual([b.ok, b.hostOps, b.crashes, b.events, b.virtualMs], [a.ok, a.hostOps, a.crashes, a.events, a.virtualMs]);
  }
});
