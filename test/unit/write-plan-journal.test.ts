// The journal position in the write plan (src/core/volume/write-plan.ts; docs/design/journal.md):
// the token is the last admission step, the capture comes after the local write (and also when it
// failed), only host writes inside the journal's extents take part.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TrackBitmap } from '../../src/core/bitmap/track-bitmap.js';
import { Prng } from '../../src/core/lib/prng.js';
import {
  planAdmission, planApply, planFlush,
  type ClonePosition, type JournalPosition, type PairR1Position, type PlannedWrite, type PlanPosition,
} from '../../src/core/volume/write-plan.js';

const bits = (...tracks: number[]): TrackBitmap => {
  const b = new TrackBitmap(64);
  for (const t of tracks) b.set(t);
  return b;
};
const journal = (over: Partial<JournalPosition> = {}): JournalPosition => ({ kind: 'journal', id: 'journal:j', journal: 'j', scope: undefined, ...over });
const asyncR1 = (): PairR1Position => ({
  kind: 'pair-r1', id: 'p1', peer: 'west', outPosition: 'pair:x:out', mode: 'async', replicating: true, failWrites: false,
  linkUp: true, canShip: true, capturing: true, scope: undefined, live: true,
});
const restoringClone = (): ClonePosition => ({ kind: 'clone', id: 'c1', copyIdle: true, restoring: true, toStd: bits(4, 5), restoredNotDurable: bits() });
const write = (over: Partial<PlannedWrite> = {}): PlannedWrite => ({ source: 'host', kind: 'write', first: 4, last: 5, fua: false, fromPosition: undefined, ...over });
const kinds = (steps: ReadonlyArray<{ kind: string }>): string[] => steps.map((s) => s.kind);

test('the token is taken last at admission, after clone work and the cycles\' wait, whatever the order of positions', () => {
  const prng = new Prng(3);
  for (let i = 0; i < 200; i++) {
    const positions: PlanPosition[] = [journal(), asyncR1(), restoringClone()];
    for (let k = positions.length - 1; k > 0; k--) { const j = prng.int(0, k); [positions[k], positions[j]] = [positions[j]!, positions[k]!]; }
    assert.deepEqual(kinds(planAdmission(positions, write())), ['start-copy', 'copy-out', 'wait-admission', 'take-token']);
  }
});

test('the capture comes after the local write, and also runs when the local write fails (the number is out)', () => {
  const plan = planApply([journal()], write());
  assert.deepEqual(kinds(plan.steps), ['apply-local', 'journal-capture']);
  assert.deepEqual(kinds(plan.ifLocalFails), ['journal-capture']);
  // A host flush makes the primary-side log durable (not the secondaries: data follows asynchronously).
  assert.deepEqual(planFlush([journal()]), [{ kind: 'journal-flush', position: 'journal:j', at: 0 }]);
});

test('only host writes inside the journal\'s extents take part', () => {
  const scoped = journal({ scope: { anyInRange: (a, b) => a <= 10 && b >= 8, isEmpty: () => false } });
  assert.deepEqual(kinds(planAdmission([scoped], write())), []);
  assert.deepEqual(kinds(planApply([scoped], write()).steps), ['apply-local']);
  assert.deepEqual(kinds(planAdmission([scoped], write({ first: 9, last: 9 }))), ['take-token']);
  for (const source of ['replica', 'copy'] as const) {
    assert.deepEqual(kinds(planAdmission([journal()], write({ source }))), []);
    assert.deepEqual(kinds(planApply([journal()], write({ source })).steps), ['apply-local']);
  }
});

test("the 'early' admission scope (a large zero's whole-range pass) brings the volume's tracks up to date and takes no number", () => {
  const positions: PlanPosition[] = [journal(), asyncR1(), restoringClone()];
  assert.deepEqual(kinds(planAdmission(positions, write({ kind: 'zero' }), 'early')), ['start-copy', 'copy-out']);
  assert.deepEqual(kinds(planAdmission(positions, write({ kind: 'zero' }))), ['start-copy', 'copy-out', 'wait-admission', 'take-token'],
    'each piece is then admitted whole');
});
