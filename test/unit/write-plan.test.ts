// The write plan's ordering guarantees, stated as properties of the planner
// (src/core/volume/write-plan.ts; docs/design/write-plan.md).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TrackBitmap } from '../../src/core/bitmap/track-bitmap.js';
import { ErrorCode } from '../../src/core/errors.js';
import { Prng } from '../../src/core/lib/prng.js';
import { PAIR_MODES } from '../../src/core/replication/pair-record.js';
import {
  planAdmission, planApply, planFlush, planRead,
  type AdmitStep, type ApplyStep, type ClonePosition, type PairR1Position, type PairR2Position, type PlannedWrite, type PlanPosition,
} from '../../src/core/volume/write-plan.js';

const TRACKS = 64;

const bits = (...tracks: number[]): TrackBitmap => {
  const b = new TrackBitmap(TRACKS);
  for (const t of tracks) b.set(t);
  return b;
};

const r1 = (over: Partial<PairR1Position> = {}): PairR1Position => ({
  kind: 'pair-r1', id: 'p1', peer: 'west', outPosition: 'pair:x:out', mode: 'sync', replicating: true, failWrites: false,
  linkUp: true, canShip: true, capturing: false, scope: undefined, live: true, ...over,
});
const r2 = (over: Partial<PairR2Position> = {}): PairR2Position => ({
  kind: 'pair-r2', id: 'p0', peer: 'east', volume: 'v', refused: undefined, ...over,
});
const clone = (over: Partial<ClonePosition> = {}): ClonePosition => ({
  kind: 'clone', id: 'c1', copyIdle: false, restoring: false, toStd: bits(), restoredNotDurable: bits(), ...over,
});
const write = (over: Partial<PlannedWrite> = {}): PlannedWrite => ({
  source: 'host', kind: 'write', first: 4, last: 5, fua: false, fromPosition: undefined, ...over,
});

const kinds = (steps: ReadonlyArray<{ kind: string }>): string[] => steps.map((s) => s.kind);
const localAt = (steps: readonly ApplyStep[]): number => steps.findIndex((s) => s.kind === 'apply-local');

test('a clone copy-out comes before the write is ordered, so before its local write', () => {
  const restoring = clone({ restoring: true, toStd: bits(5) });
  const positions = [r1({ mode: 'async', capturing: true }), restoring];
  assert.deepEqual(kinds(planAdmission(positions, write())), ['copy-out', 'wait-admission'],
    'the clone copies out first; the cycles let the write in last, when it is ready to go');
  // The apply plan (made once the write holds its place) never copies out: that is done by then.
  assert.ok(!kinds(planApply(positions, write()).steps).includes('copy-out'));
  // A replica write lands on STD like a host's: the clone copies out for it too.
  assert.deepEqual(kinds(planAdmission([restoring], write({ source: 'replica' }))), ['copy-out']);
  // Tracks already restored, nothing left to make durable: no copy-out.
  assert.deepEqual(kinds(planAdmission([clone({ restoring: true, toStd: bits(9) })], write())), []);
  // A restored track whose cleared bit is not yet durable: made durable before the write lands on it.
  const step = planAdmission([clone({ restoredNotDurable: bits(4) })], write())[0];
  assert.equal(step?.kind, 'copy-out');
  assert.equal(step.kind === 'copy-out' && step.durable, true);
});

test('an attached clone with an idle copy loop is told the write leaves it work', () => {
  assert.deepEqual(kinds(planAdmission([clone({ copyIdle: true })], write())), ['start-copy']);
});

test('a refusal comes first and alone: nothing else runs for a refused write', () => {
  const refusing = r2({ refused: bits(5) });
  const positions = [clone({ restoring: true, toStd: bits(4), copyIdle: true }), r1({ mode: 'async', capturing: true }), refusing];
  const plan = planAdmission(positions, write());
  assert.equal(plan.length, 1);
  const [only] = plan;
  assert.equal(only?.kind, 'refuse');
  assert.equal(only.kind === 'refuse' && only.error.code, ErrorCode.VolumeWriteDisabled);
  assert.equal(only.position, 'p0');
  assert.equal(only.at, 2);
  // Outside the refused extents, or not from a host (a chain's replica write), the write goes ahead.
  assert.notEqual(planAdmission(positions, write({ first: 6, last: 7 }))[0]?.kind, 'refuse');
  assert.notEqual(planAdmission(positions, write({ source: 'replica' }))[0]?.kind, 'refuse');
});

test('a fail-writes pair refuses host writes while its link is down, only in its extents', () => {
  const down = r1({ failWrites: true, linkUp: false, canShip: false, scope: bits(4, 5) });
  const [step] = planAdmission([down], write());
  assert.equal(step?.kind === 'refuse' && step.error.code, ErrorCode.LinkDown);
  assert.deepEqual(planAdmission([down], write({ first: 10, last: 10 })), []);
  assert.deepEqual(planAdmission([r1({ failWrites: true, linkUp: false, replicating: false })], write()), [], 'a suspended pair refuses nothing');
});

test('a sync ship runs alongside the local write; the write completes when both are done', () => {
  const plan = planApply([r1()], write());
  assert.deepEqual(kinds(plan.steps), ['ship', 'apply-local'],
    'started before the local write (alongside it), nothing after: the ship is the mirror\'s copy');
  assert.deepEqual(kinds(plan.ifLocalFails), ['owe-whole'], 'R2 may get bytes the store lacks: owed whole');
  assert.deepEqual(kinds(planApply([r1({ mode: 'semisync' })], write()).steps), ['ship', 'apply-local']);
  // Link lost since admission, fail-writes: the write is owed and failed, and still lands locally.
  assert.deepEqual(kinds(planApply([r1({ canShip: false, failWrites: true })], write()).steps), ['owe', 'fail', 'apply-local']);
  // Not shipping now (adaptive, link down and continue): owed after the local write.
  assert.deepEqual(kinds(planApply([r1({ mode: 'adaptive' })], write()).steps), ['apply-local', 'owe']);
  assert.deepEqual(kinds(planApply([r1({ canShip: false })], write()).steps), ['apply-local', 'owe']);
});

test('async capture: the write joins the open cycle before its local write, its bytes are captured after', () => {
  const plan = planApply([r1({ mode: 'async', capturing: true })], write());
  assert.deepEqual(kinds(plan.steps), ['begin-capture', 'apply-local', 'capture']);
  assert.deepEqual(kinds(planApply([r1({ mode: 'async' })], write()).steps), ['apply-local', 'owe'], 'cycles not running: owed');
});

test('internal copies get no mirror steps beyond owing what they change', () => {
  const positions: PlanPosition[] = [clone({ restoring: true, toStd: bits(4), copyIdle: true }), r1({ failWrites: true, linkUp: false, canShip: false }), r2({ refused: bits(4) })];
  const copy = write({ source: 'copy' });
  assert.deepEqual(planAdmission(positions, copy), [], 'no refusal, copy-out or admission wait');
  assert.deepEqual(kinds(planApply(positions, copy).steps), ['apply-local', 'owe'], 'no ship, no failure: the tracks are owed');
  assert.deepEqual(kinds(planApply([r1()], copy).steps), ['apply-local', 'owe'], 'even a shipping sync pair owes a copy rather than ship it');
});

test('a pair\'s own pull (a restore) goes nowhere; a chain forwards what it receives', () => {
  const own = write({ source: 'replica', fromPosition: 'pair:x:out' });
  assert.deepEqual(kinds(planApply([r1()], own).steps), ['apply-local']);
  assert.deepEqual(kinds(planApply([r1({ mode: 'async', capturing: true })], own).steps), ['apply-local']);
  // B is R2 of A→B and R1 of B→C: what B receives (marked as from its R2 bitmap) ships to C.
  assert.deepEqual(kinds(planApply([r2(), r1()], write({ source: 'replica', fromPosition: 'pair:ab:own' })).steps), ['ship', 'apply-local']);
});

test('fan-out: each R1 pair gets its own steps, by its own mode, naming its position', () => {
  const positions = [r1({ id: 'near', mode: 'sync' }), r1({ id: 'far', mode: 'async', capturing: true }), r1({ id: 'slow', mode: 'adaptive' })];
  const plan = planApply(positions, write());
  assert.deepEqual(plan.steps.map((s) => (s.kind === 'apply-local' ? s.kind : `${s.kind}:${s.position}@${s.at}`)),
    ['ship:near@0', 'begin-capture:far@1', 'apply-local', 'capture:far@1', 'owe:slow@2']);
  assert.deepEqual(plan.ifLocalFails.map((s) => s.kind !== 'apply-local' && s.position), ['near', 'far', 'slow']);
  // One pair failing the write does not take the others' steps away (pair seed 53).
  const failing = planApply([r1({ id: 'a', canShip: false, failWrites: true }), r1({ id: 'b', mode: 'adaptive' })], write());
  assert.deepEqual(kinds(failing.steps), ['owe', 'fail', 'apply-local', 'owe']);
});

test('positions outside the write, or torn down, get no steps', () => {
  assert.deepEqual(kinds(planApply([r1({ scope: bits(30) })], write()).steps), ['apply-local']);
  assert.deepEqual(planApply([r1({ scope: bits(30) })], write()).ifLocalFails, []);
  assert.deepEqual(kinds(planApply([r1({ live: false })], write()).steps), ['apply-local']);
  assert.deepEqual(planFlush([r1({ live: false })]), []);
});

test('a flush makes every shipping mirror durable; a read copies out only from a restoring clone', () => {
  const positions = [r1({ id: 'a' }), r1({ id: 'b', mode: 'semisync' }), r1({ id: 'c', mode: 'async', capturing: true }), r1({ id: 'd', canShip: false }), r2()];
  assert.deepEqual(planFlush(positions).map((s) => s.position), ['a', 'b']);
  const restoring = clone({ restoring: true, toStd: bits(3) });
  assert.deepEqual(planRead([restoring], 0, 3).map((s) => [s.kind, s.durable]), [['copy-out', false]]);
  assert.deepEqual(planRead([restoring], 4, 8), []);
  assert.deepEqual(planRead([clone({ restoredNotDurable: bits(3) })], 0, 3), [], 'a read needs nothing made durable');
});

// ---- the same guarantees over random position sets ----

function randomSet(prng: Prng): TrackBitmap {
  const b = new TrackBitmap(TRACKS);
  const n = prng.int(0, 3);
  for (let i = 0; i < n; i++) {
    const first = prng.int(0, TRACKS - 1);
    b.setRange(first, Math.min(TRACKS - 1, first + prng.int(0, 8)));
  }
  return b;
}

function randomPosition(prng: Prng, i: number): PlanPosition {
  switch (prng.int(0, 2)) {
    case 0:
      return clone({ id: `c${i}`, copyIdle: prng.chance(0.3), restoring: prng.chance(0.5), toStd: randomSet(prng), restoredNotDurable: randomSet(prng) });
    case 1: {
      const mode = PAIR_MODES[prng.int(0, PAIR_MODES.length - 1)]!;
      return r1({
        id: `p${i}`, outPosition: `out${i}`, mode, replicating: prng.chance(0.8), failWrites: prng.chance(0.5), linkUp: prng.chance(0.7),
        canShip: prng.chance(0.7), capturing: mode === 'async' && prng.chance(0.7), scope: prng.chance(0.3) ? randomSet(prng) : undefined,
        live: prng.chance(0.9),
      });
    }
    default:
      return r2({ id: `r${i}`, refused: prng.chance(0.5) ? randomSet(prng) : undefined });
  }
}

test('property: over random position sets and writes, every plan keeps the ordering rules', () => {
  const prng = new Prng(20261203);
  for (let round = 0; round < 5000; round++) {
    const positions = Array.from({ length: prng.int(0, 6) }, (_, i) => randomPosition(prng, i));
    const first = prng.int(0, TRACKS - 1);
    const sources = ['host', 'replica', 'copy'] as const;
    const source = sources[prng.int(0, 2)]!;
    const from = positions.length > 0 && prng.chance(0.2) ? positions[prng.int(0, positions.length - 1)]! : undefined;
    const w = write({
      source, first, last: Math.min(TRACKS - 1, first + prng.int(0, 4)),
      fromPosition: from?.kind === 'pair-r1' ? from.outPosition : undefined,
    });
    const context = `round ${round}: ${JSON.stringify({ w, positions: positions.map((p) => p.kind) })}`;
    const admit: AdmitStep[] = planAdmission(positions, w);
    const steps = admit.map((s) => s.kind);

    // Every step names the position it is for.
    for (const s of admit) assert.equal(positions[s.at]?.id, s.position, context);
    // A refusal comes alone; copies are never refused, nor held.
    if (steps.includes('refuse')) assert.equal(admit.length, 1, context);
    if (source === 'copy') assert.deepEqual(admit, [], context);
    if (source !== 'host') assert.ok(!steps.includes('refuse'), context);
    // Clone work comes before the cycles let the write in.
    const lastCopy = Math.max(steps.lastIndexOf('copy-out'), steps.lastIndexOf('start-copy'));
    const firstWait = steps.indexOf('wait-admission');
    if (lastCopy >= 0 && firstWait >= 0) assert.ok(lastCopy < firstWait, context);
    for (const s of admit) {
      const p = positions[s.at]!;
      if (s.kind === 'copy-out' || s.kind === 'start-copy') assert.equal(p.kind, 'clone', context);
      if (s.kind === 'wait-admission') assert.ok(p.kind === 'pair-r1' && p.capturing, context);
    }

    const plan = planApply(positions, w);
    const local = localAt(plan.steps);
    assert.equal(plan.steps.filter((s) => s.kind === 'apply-local').length, 1, context);
    for (const [i, s] of plan.steps.entries()) {
      if (s.kind === 'apply-local') continue;
      const p = positions[s.at]!;
      assert.equal(p.id, s.position, context);
      assert.ok(p.kind === 'pair-r1' && p.live && (p.scope === undefined || p.scope.anyInRange(w.first, w.last)), context);
      // What runs alongside comes before the local write; what needs its bytes, after.
      if (s.kind === 'ship' || s.kind === 'begin-capture' || s.kind === 'fail') assert.ok(i < local, context);
      if (s.kind === 'capture') assert.ok(i > local, context);
      // Only news ships or fails a write: a host's, or a replica's that did not come from this pair.
      if (s.kind === 'ship' || s.kind === 'fail') assert.notEqual(source, 'copy', context);
      if (s.kind === 'fail') assert.equal(source, 'host', context);
      if (s.kind === 'ship') assert.ok(p.canShip && (p.mode === 'sync' || p.mode === 'semisync'), context);
    }
    // Per position: exactly one way (ship | capture | owe and fail | owe | nothing for its own pull).
    for (const [at, p] of positions.entries()) {
      const mine = plan.steps.filter((s) => s.kind !== 'apply-local' && s.at === at).map((s) => s.kind).join(',');
      assert.ok(['', 'ship', 'begin-capture,capture', 'owe,fail', 'owe'].includes(mine), `${context}: ${mine}`);
      if (mine === '' && p.kind === 'pair-r1' && p.live && (p.scope === undefined || p.scope.anyInRange(w.first, w.last))) {
        assert.equal(w.fromPosition, p.outPosition, `${context}: a live pair in scope skipped only for its own pull`);
      }
      if (mine === 'begin-capture,capture') assert.ok(p.kind === 'pair-r1' && p.capturing, context);
    }
    for (const s of plan.ifLocalFails) assert.equal(s.kind, 'owe-whole', context);
  }
});
