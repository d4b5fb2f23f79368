// The cascade simulation over many seeds (see src/sim/cascade/cascade-sim.ts for the oracle).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { describeCascadeConfig, runCascadeSeed, type CascadeSimBugs } from '../../src/sim/cascade/cascade-sim.js';

const SEEDS = Number(process.env.TIDEMARK_CASCADE_SEEDS ?? 400);
const START = Number(process.env.TIDEMARK_CASCADE_SEED_START ?? 1);

test(`cascade A→B→C: ${SEEDS} seeds with kill -9 of B and C in every phase and link flaps; C always holds a complete cycle's image, no track is lost`, () => {
  const failures: string[] = [];
  const bCrashes: Record<string, number> = {};
  const cCrashes: Record<string, number> = {};
  let cycles = 0;
  for (let seed = START; seed < START + SEEDS; seed++) {
    const r = runCascadeSeed(seed);
    cycles += r.cycles;
    for (const [phase, count] of Object.entries(r.bCrashes)) bCrashes[phase] = (bCrashes[phase] ?? 0) + count;
    for (const [phase, count] of Object.entries(r.cCrashes)) cCrashes[phase] = (cCrashes[phase] ?? 0) + count;
    if (!r.ok) failures.push(`seed ${seed} (${describeCascadeConfig(r.config)}): ${r.failure}`);
  }
  assert.deepEqual(failures, [], 'reproduce one with: npm run sim -- --suite cascade --seed N --trace');
  // The campaign must exercise what it claims: crashes of both arrays in every phase of a cycle.
  for (const phase of ['synchronizing', 'splitting', 'shipping', 'refreshing', 'complete']) {
    assert.ok((bCrashes[phase] ?? 0) > 0, `no crash of B in phase ${phase}`);
    assert.ok((cCrashes[phase] ?? 0) > 0 || phase === 'splitting', `no crash of C in phase ${phase}`);
  }
  assert.ok(cycles >= SEEDS * 5, `only ${cycles} cycles completed`);
});

// Seeds that found bugs, pinned (each failed before its fix):
// 5137, 5167 — the A–B link came back (A began a resync) while B's machine was busy with an action,
//              then B was killed: its record on disk still said the source was settled, and after
//              the restart (link down) it split a torn R2VOL. A restart now confirms the source anew.
// 2          — (with the product's PairLifecycle in the sim) a resume saved the record, a tick of the
//              pair came before the resync started and pushed owed tracks, then the resync had C
//              refresh its clone from that half-shipped CRVOL. The lifecycle now ships nothing between
//              the record change and the resync decision (the cascade kill -9 daemon test's failure).
test('cascade: pinned seeds', () => {
  for (const seed of [2, 5137, 5167]) {
    const r = runCascadeSeed(seed);
    assert.ok(r.ok, `seed ${seed}: ${r.failure}`);
  }
});

// Each bug below, put in on purpose, must be caught by the oracle within the first 100 seeds.
const BUGS: Array<[string, CascadeSimBugs]> = [
  ['the far image refreshed before the pair shipped everything', { earlyComplete: true }],
  ['a reattach that forgets what R2VOL changed while split', { dropProtection: true }],
  ['R2VOL split while its source resyncs it', { ignoreSource: true }],
  ['the far site believing its clone held while it is being refreshed (the rule before the fix)', { heldDuringRefresh: true }],
];
for (const [what, bugs] of BUGS) {
  test(`the cascade oracle catches ${what}`, () => {
    let caught = 0;
    for (let seed = 1; seed <= 300 && caught === 0; seed++) if (!runCascadeSeed(seed, bugs).ok) caught++;
    assert.ok(caught > 0, 'no seed failed');
  });
}
