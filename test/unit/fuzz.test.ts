// The short fuzz run inside `npm test`: every target of test/fuzz/targets.ts for a few seconds,
// from a fixed seed so a CI failure replays (`npm run fuzz -- --target NAME --seed S --path P`;
// the failure message prints seed, path and the shrunk counterexample). TIDEMARK_FUZZ_SEED and
// TIDEMARK_FUZZ_SECONDS override both. The long run is `npm run fuzz` (docs/design/fuzzing.md).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';

/** fast-check's report plus the error the counterexample raised (the report leaves it out). */
const report = (d: fc.RunDetails<unknown[]>): string =>
  `${fc.defaultReportMessage(d) ?? ''}\nError: ${d.errorInstance instanceof Error ? d.errorInstance.message : String(d.errorInstance)}`;
import { FUZZ_TARGETS } from '../fuzz/targets.js';

const SEED = Number(process.env.TIDEMARK_FUZZ_SEED ?? 20261203);
const SECONDS = Number(process.env.TIDEMARK_FUZZ_SECONDS ?? 2);
/** At least this many inputs per target, however loaded the machine, or the run proves too little. */
const MIN_RUNS = 200;

for (const t of FUZZ_TARGETS) {
  test(`fuzz ${t.name}: ${t.what}`, async () => {
    const details = await fc.check(t.property, {
      seed: SEED, numRuns: Number.MAX_SAFE_INTEGER, interruptAfterTimeLimit: SECONDS * 1000, markInterruptAsFailure: false,
    }) as fc.RunDetails<unknown[]>;
    // fast-check calls a run interrupted before its first input "failed"; on a loaded machine the
    // http-server target's first input (which starts the server) can take the whole time limit.
    // That is no finding: the top-up below runs the inputs.
    const interruptedEmpty = details.interrupted && details.numRuns === 0;
    if (details.failed && !interruptedEmpty) assert.fail(`fuzz target ${t.name} (seed ${SEED}):\n${report(details)}`);
    console.log(`fuzz ${t.name}: ${details.numRuns} executions in ${SECONDS} s, seed ${SEED}, no findings`);
    if (details.numRuns < MIN_RUNS) {
      // A time-limited run on a starved machine: top up to a fixed count instead of passing on a handful.
      const more = await fc.check(t.property, { seed: SEED, numRuns: MIN_RUNS }) as fc.RunDetails<unknown[]>;
      if (more.failed) assert.fail(`fuzz target ${t.name} (seed ${SEED}):\n${report(more)}`);
    }
    await t.dispose?.();
  });
}
