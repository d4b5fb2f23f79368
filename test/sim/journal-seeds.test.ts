// Journal replication over many seeds (see src/sim/journal/journal-sim.ts for the oracles).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { describeJournalConfig, runJournalSeed } from '../../src/sim/journal/journal-sim.js';

const SEEDS = Number(process.env.TIDEMARK_JOURNAL_SEEDS ?? 600);
const START = Number(process.env.TIDEMARK_JOURNAL_SEED_START ?? 1);

test(`journal: ${SEEDS} seeds of dependent writes over several primary and secondary arrays, lossy links, secondary and primary crashes and disasters; prefixes, recovery point and loss report hold`, () => {
  const failures: string[] = [];
  const seen = { disasters: 0, syncDisasters: 0, multiSecondary: 0, multiPrimary: 0, crashes: 0, primaryCrashes: 0, lost: 0, stranded: 0, unacknowledged: 0, ackedBeyondSync: 0, partial: 0 };
  for (let seed = START; seed < START + SEEDS; seed++) {
    const r = runJournalSeed(seed);
    if (!r.ok) failures.push(`seed ${seed} (${describeJournalConfig(r.config)}): ${r.failure}`);
    seen.crashes += r.secondaryCrashes;
    seen.primaryCrashes += r.primaryCrashes;
    if (r.config.secondaries > 1) seen.multiSecondary++;
    if (r.config.primaries > 1) seen.multiPrimary++;
    if (r.report) {
      seen.disasters++;
      seen.lost += r.report.lost.length;
      seen.stranded += r.report.stranded.length;
      seen.unacknowledged += r.report.unacknowledged.length;
      if (r.report.consistentSequence > 0 && r.report.consistentSequence < r.issued) seen.partial++;
      if (r.config.tokens === 'sync') { seen.syncDisasters++; seen.ackedBeyondSync += r.ackedBeyond; }
    }
  }
  assert.deepEqual(failures, [], 'reproduce one with npm run sim -- --suite journal --seed N --trace');
  // The campaign must exercise what it claims to: disasters that lose acknowledged writes under
  // tokens sync (so the report's completeness is tested), stranded entries behind gaps, crashes.
  assert.ok(seen.disasters >= SEEDS / 3 && seen.syncDisasters >= SEEDS / 8, JSON.stringify(seen));
  assert.ok(seen.multiSecondary >= SEEDS / 3 && seen.multiPrimary >= SEEDS / 3, JSON.stringify(seen));
  assert.ok(seen.ackedBeyondSync >= SEEDS / 10 && seen.stranded >= SEEDS / 10 && seen.lost >= SEEDS / 10 && seen.unacknowledged > 0, JSON.stringify(seen));
  assert.ok(seen.crashes >= SEEDS && seen.partial >= SEEDS / 5 && seen.primaryCrashes >= SEEDS / 4, JSON.stringify(seen));
});
