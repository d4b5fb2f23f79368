// Seeds of the migration/import simulation (src/sim/migration): the product's ArrayService and its
// migration and import managers on simulated disks, power losses and a flaky NBD source, checked by
// an oracle. TIDEMARK_SIM_SEEDS / TIDEMARK_SIM_START change the range.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runMigrationSeed } from '../../src/sim/migration/migration-sim.js';

const count = Number(process.env.TIDEMARK_SIM_SEEDS ?? 120);
const start = Number(process.env.TIDEMARK_SIM_START ?? 1);

test(`migration simulation passes ${count} seeds from ${start}`, async () => {
  const failures: string[] = [];
  let crashes = 0;
  let migrations = 0;
  let imports = 0;
  let failedIo = 0;
  for (let seed = start; seed < start + count; seed++) {
    const r = await runMigrationSeed(seed);
    crashes += r.crashes;
    failedIo += r.failedIo;
    if (r.config.scenario === 'migration') migrations++;
    else imports++;
    if (!r.ok) failures.push(`seed ${seed}: ${r.failure}\n  reproduce: npm run sim -- --suite migration --seed ${seed} --trace`);
  }
  assert.deepEqual(failures, []);
  assert.ok(crashes > count / 2, `power losses were simulated (${crashes})`);
  assert.ok(migrations > count / 4 && imports > count / 4, `both scenarios ran (${migrations} migrations, ${imports} imports)`);
  assert.ok(failedIo > 0, 'source outages failed some host I/O (they are simulated)');
});

test('a migration seed always gives the same run', async () => {
  for (const seed of [3, 105, 4_000_000_001]) {
    const a = await runMigrationSeed(seed);
    const b = await runMigrationSeed(seed);
    assert.deepEqual([b.ok, b.hostOps, b.crashes, b.commands, b.failedIo, b.virtualMs], [a.ok, a.hostOps, a.crashes, a.commands, a.failedIo, a.virtualMs]);
  }
});

test('seeds that found bugs stay fixed', async () => {
  // 53: a 'copied' record write landed after 'finished' and resurrected the import after a restart.
  for (const seed of [53]) {
    const r = await runMigrationSeed(seed);
    assert.equal(r.ok, true, `seed ${seed}: ${r.failure}`);
  }
});
