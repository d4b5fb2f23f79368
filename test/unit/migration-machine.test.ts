// The migration machine (src/core/migration/migration-machine.ts) and the migration position's rule
// in the write plan: states, refusals, what writes mark, and which writes go to the other storage.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TrackBitmap } from '../../src/core/bitmap/track-bitmap.js';
import { ErrorCode, isTidemarkError } from '../../src/core/errors.js';
import { MigrationMachine, newMigration, parseMigrationRecord } from '../../src/core/migration/migration-machine.js';
import { planAdmission, planApply, planFlush, planRead, type MigrationPosition, type PlannedWrite } from '../../src/core/volume/write-plan.js';

const refused = (fn: () => unknown): void => assert.throws(fn, (e: unknown) => isTidemarkError(e, ErrorCode.InvalidState));

test('copying → cut-over → detached → cut-over (replay counted) → finished → settled', () => {
  const m = new MigrationMachine(newMigration('vol', 'new', false, 1000.7));
  assert.equal(m.state, 'copying');
  assert.equal(m.marksOn, 'recovery');
  assert.equal(m.mirroring, true);
  assert.equal(m.storesExchanged, false);
  assert.deepEqual(m.poll(5), { kind: 'copy' });
  assert.deepEqual(m.poll(0), { kind: 'cut-over' });
  refused(() => m.handle({ kind: 'cut-over' }, 2000, 3));
  refused(() => m.handle({ kind: 'detach' }, 2000, 0));
  refused(() => m.handle({ kind: 'finish' }, 2000, 0));
  m.handle({ kind: 'cut-over' }, 2000, 0);
  assert.equal(m.storesExchanged, true);
  assert.deepEqual(m.poll(0), { kind: 'none' });
  m.handle({ kind: 'detach' }, 3000, 0);
  assert.equal(m.marksOn, 'all');
  assert.equal(m.mirroring, false);
  assert.deepEqual(m.poll(7), { kind: 'none' }, 'nothing is copied while detached');
  refused(() => m.handle({ kind: 'detach' }, 3000, 0));
  m.handle({ kind: 'reattach', tracksLeft: 7 }, 4000, 7);
  assert.equal(m.record.tracksReplayed, 7);
  assert.equal(m.state, 'cut-over');
  assert.deepEqual(m.poll(7), { kind: 'copy' });
  m.handle({ kind: 'finish' }, 5000, 0);
  assert.equal(m.storesExchanged, true, 'until settled VOL still opens the target\'s file');
  assert.deepEqual(m.poll(0), { kind: 'settle' });
  m.handle({ kind: 'settled' }, 5000, 0);
  assert.equal(m.storesExchanged, false);
  assert.equal(m.marksOn, 'never');
  refused(() => m.handle({ kind: 'finish' }, 6000, 0));
  assert.deepEqual(parseMigrationRecord(JSON.parse(JSON.stringify(m.record)), 'k'), m.record);
});

test('a manual cutover waits for the command', () => {
  const m = new MigrationMachine(newMigration('vol', 'new', true, 0));
  assert.deepEqual(m.poll(0), { kind: 'none' });
  m.handle({ kind: 'cut-over' }, 1, 0);
  assert.equal(m.state, 'cut-over');
});

test('a stored record that does not make sense is refused', () => {
  const good = newMigration('vol', 'new', false, 0);
  assert.throws(() => parseMigrationRecord({ ...good, state: 'flying' }, 'k'), (e: unknown) => isTidemarkError(e, ErrorCode.MetadataCorrupt));
  assert.throws(() => parseMigrationRecord({ ...good, target: '' }, 'k'), (e: unknown) => isTidemarkError(e, ErrorCode.MetadataCorrupt));
  assert.throws(() => parseMigrationRecord(null, 'k'), (e: unknown) => isTidemarkError(e, ErrorCode.MetadataCorrupt));
});

const TRACKS = 16;
const position = (mirroring: boolean, ...leftTracks: number[]): MigrationPosition => {
  const left = new TrackBitmap(TRACKS);
  for (const t of leftTracks) left.set(t);
  return { kind: 'migration', id: 'new', mirroring, left };
};
const write = (first: number, last: number, source: PlannedWrite['source'] = 'host'): PlannedWrite =>
  ({ source, kind: 'write', first, last, fua: false, fromPosition: undefined });

test('write plan: a write to copied tracks goes to the other storage alongside the local write', () => {
  const plan = planApply([position(true, 5, 6)], write(2, 3));
  assert.deepEqual(plan.steps.map((s) => s.kind), ['mirror', 'apply-local']);
  assert.deepEqual(plan.ifLocalFails.map((s) => s.kind), ['owe-whole']);
  // Internal copies into the volume change what its hosts read: they go there too.
  assert.deepEqual(planApply([position(true)], write(2, 3, 'copy')).steps.map((s) => s.kind), ['mirror', 'apply-local']);
});

test('write plan: a write only to tracks not yet copied is left to the copy', () => {
  const plan = planApply([position(true, 5, 6)], write(5, 6));
  assert.deepEqual(plan.steps.map((s) => s.kind), ['apply-local']);
  // Partly copied: it goes there (the copy rewrites the rest whole later).
  assert.deepEqual(planApply([position(true, 5)], write(4, 5)).steps.map((s) => s.kind), ['mirror', 'apply-local']);
});

test('write plan: detached, writes only mark (nothing alongside); a migration never refuses, waits or joins reads and flushes', () => {
  assert.deepEqual(planApply([position(false)], write(0, 1)).steps.map((s) => s.kind), ['apply-local']);
  assert.deepEqual(planAdmission([position(true)], write(0, 1)), []);
  assert.deepEqual(planRead([position(true, 0)], 0, 1), []);
  assert.deepEqual(planFlush([position(true)]), []);
});
