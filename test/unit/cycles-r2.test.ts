import { test } from 'node:test';
import assert from 'node:assert/strict';
import { R2Cycles, type R2Action, type R2Persisted, type PersistedCycle } from '../../src/core/replication/cycles/r2-cycles.js';
import type { CycleRecord } from '../../src/core/replication/cycles/cycle-messages.js';
import { ErrorCode, isTidemarkError } from '../../src/core/errors.js';

const RB = 4096;
const cfg = { volumeBytes: 16 * RB };
const rec = (record: number, version: number, fill: number): CycleRecord =>
  ({ record, version, ranges: [{ start: 0, end: RB }], data: new Uint8Array(RB).fill(fill) });
const kinds = (actions: R2Action[]): string[] => actions.map((a) => (a.kind === 'send' ? `send:${a.message.kind}` : a.kind));

/** Receive a whole cycle with one record per entry of fills, seal it and persist it. */
function deliver(r2: R2Cycles, cycle: number, tag: number, fills: number[]): void {
  r2.handle({ kind: 'records', cycle, records: fills.map((f, i) => rec(i, 1, f)) });
  r2.handle({ kind: 'seal', cycle, tag, recordCount: fills.length, versionSum: fills.length });
  r2.poll();
  r2.cyclePersisted(cycle);
}

test('receive, seal, persist, commit, apply; duplicates are idempotent; the highest version wins', () => {
  const r2 = new R2Cycles(cfg, { appliedCycle: 0, appliedTag: 0 });
  r2.handle({ kind: 'records', cycle: 1, records: [rec(3, 2, 9)] });
  r2.handle({ kind: 'records', cycle: 1, records: [rec(3, 1, 8), rec(4, 1, 1)] }); // reordered older version
  r2.handle({ kind: 'records', cycle: 1, records: [rec(4, 1, 1)] }); // duplicate
  assert.deepEqual(kinds(r2.poll()), ['send:records-ack', 'send:records-ack', 'send:records-ack']);
  r2.handle({ kind: 'seal', cycle: 1, tag: 1, recordCount: 2, versionSum: 3 });
  const persist = r2.poll();
  assert.equal(persist.length, 1);
  const p = persist[0]!;
  assert.ok(p.kind === 'persist-cycle');
  assert.deepEqual(p.records.map((r) => [r.record, r.version, r.data[0]]), [[3, 2, 9], [4, 1, 1]]);
  r2.handle({ kind: 'seal', cycle: 1, tag: 1, recordCount: 2, versionSum: 3 }); // before persisted: no ack yet
  assert.deepEqual(r2.poll(), []);
  r2.cyclePersisted(1);
  assert.deepEqual(kinds(r2.poll()), ['send:seal-ack']);
  r2.handle({ kind: 'commit', cycle: 1, tag: 1 });
  assert.deepEqual(kinds(r2.poll()), ['persist-commit']);
  r2.commitPersisted(1);
  assert.deepEqual(kinds(r2.poll()), ['apply', 'send:commit-ack']);
  assert.equal(r2.recoverablePoint.cycle, 1);
  assert.equal(r2.appliedCycle, 0);
  r2.applyDone(1);
  assert.equal(r2.appliedCycle, 1);
  // late duplicates of everything are acknowledged again
  r2.handle({ kind: 'records', cycle: 1, records: [rec(3, 2, 9)] });
  r2.handle({ kind: 'seal', cycle: 1, tag: 1, recordCount: 2, versionSum: 3 });
  r2.handle({ kind: 'commit', cycle: 1, tag: 1 });
  assert.deepEqual(kinds(r2.poll()), ['send:records-ack', 'send:seal-ack', 'send:commit-ack']);
  assert.ok(r2.idle);
});

test('receive N−1 while applying N−2; the commit of N−1 waits for that apply', () => {
  const r2 = new R2Cycles(cfg, { appliedCycle: 0, appliedTag: 0 });
  deliver(r2, 1, 1, [1]);
  r2.handle({ kind: 'commit', cycle: 1, tag: 1 });
  r2.poll();
  r2.commitPersisted(1);
  assert.deepEqual(kinds(r2.poll()), ['apply', 'send:commit-ack']);
  deliver(r2, 2, 2, [2, 2]); // received while cycle 1 applies
  assert.deepEqual(kinds(r2.poll()), ['send:seal-ack']);
  r2.handle({ kind: 'commit', cycle: 2, tag: 2 });
  r2.poll();
  r2.commitPersisted(2);
  assert.deepEqual(r2.poll(), [], 'cycle 2 is not applied nor acknowledged while cycle 1 applies');
  assert.equal(r2.recoverablePoint.cycle, 2);
  r2.applyDone(1);
  assert.deepEqual(kinds(r2.poll()), ['apply', 'send:commit-ack']);
});

test('a seal R2 cannot match (it lost its receive slot) is refused; records for an unexpected cycle are a sticky protocol error', () => {
  const r2 = new R2Cycles(cfg, { appliedCycle: 4, appliedTag: 4 });
  r2.handle({ kind: 'records', cycle: 5, records: [rec(0, 1, 1)] });
  r2.poll();
  r2.handle({ kind: 'seal', cycle: 5, tag: 5, recordCount: 2, versionSum: 2 });
  assert.deepEqual(r2.poll().map((a) => (a.kind === 'send' ? a.message : a.kind)), [{ kind: 'seal-nack', cycle: 5, recordCount: 1 }]);
  r2.handle({ kind: 'records', cycle: 5, records: [rec(1, 1, 1)] });
  r2.handle({ kind: 'seal', cycle: 5, tag: 5, recordCount: 2, versionSum: 2 });
  r2.poll();
  r2.cyclePersisted(5);
  assert.throws(() => r2.handle({ kind: 'records', cycle: 6, records: [rec(0, 1, 1)] }), (e) => isTidemarkError(e, ErrorCode.Protocol));
  assert.throws(() => r2.handle({ kind: 'commit', cycle: 5, tag: 5 }), (e) => isTidemarkError(e, ErrorCode.Protocol), 'sticky');
  const other = new R2Cycles(cfg, { appliedCycle: 0, appliedTag: 0 });
  assert.throws(() => other.handle({ kind: 'records', cycle: 3, records: [] }), (e) => isTidemarkError(e, ErrorCode.Protocol));
  const third = new R2Cycles(cfg, { appliedCycle: 0, appliedTag: 0 });
  assert.throws(() => third.handle({ kind: 'commit', cycle: 1, tag: 1 }), (e) => isTidemarkError(e, ErrorCode.Protocol));
  const fourth = new R2Cycles(cfg, { appliedCycle: 0, appliedTag: 0 });
  assert.throws(() => fourth.handle({ kind: 'records', cycle: 1, records: [rec(16, 1, 1)] }), (e) => isTidemarkError(e, ErrorCode.Protocol));
});

test('recover: a committed cycle is applied again, a complete uncommitted one waits, an incomplete one is discarded', () => {
  const c = (cycle: number, committed: boolean, complete = true): PersistedCycle =>
    ({ cycle, tag: cycle * 10, complete, committed, records: [rec(cycle, 1, cycle)] });
  const persisted: R2Persisted = { appliedCycle: 6, appliedTag: 60, cycles: [c(6, true), c(8, false), c(7, true)] };
  const r2 = R2Cycles.recover(cfg, persisted);
  assert.deepEqual(kinds(r2.poll()), ['discard', 'apply']);
  assert.deepEqual(r2.recoveryState(), {
    appliedCycle: 6, appliedTag: 60, committedCycle: 7, committedTag: 70, received: { cycle: 8, tag: 80, complete: true },
  });
  // R1 re-sends the seal and commit of 8 (it never saw the acks): answered idempotently.
  r2.handle({ kind: 'seal', cycle: 8, tag: 80, recordCount: 1, versionSum: 1 });
  assert.deepEqual(kinds(r2.poll()), ['send:seal-ack']);
  r2.applyDone(7);
  r2.handle({ kind: 'commit', cycle: 8, tag: 80 });
  r2.poll();
  r2.commitPersisted(8);
  assert.deepEqual(kinds(r2.poll()), ['apply', 'send:commit-ack']);

  const incomplete = R2Cycles.recover(cfg, { appliedCycle: 2, appliedTag: 2, cycles: [c(3, false, false)] });
  assert.deepEqual(kinds(incomplete.poll()), ['discard']);
  assert.equal(incomplete.recoveryState().received, null);
  assert.throws(() => R2Cycles.recover(cfg, { appliedCycle: 2, appliedTag: 2, cycles: [c(4, false)] }),
    (e) => isTidemarkError(e, ErrorCode.MetadataCorrupt));
});

test('after a disaster: apply or discard the complete cycle; R2 then refuses R1', () => {
  const a = new R2Cycles(cfg, { appliedCycle: 0, appliedTag: 0 });
  deliver(a, 1, 1, [1]);
  a.poll();
  assert.deepEqual(a.recoveryState().received, { cycle: 1, tag: 1, complete: true });
  a.resolveAfterDisaster('apply');
  assert.deepEqual(kinds(a.poll()), ['persist-commit']);
  a.commitPersisted(1);
  assert.deepEqual(kinds(a.poll()), ['apply'], 'no acknowledgement goes to a dead R1');
  a.applyDone(1);
  assert.equal(a.appliedCycle, 1);
  assert.throws(() => a.handle({ kind: 'commit', cycle: 2, tag: 2 }), (e) => isTidemarkError(e, ErrorCode.Protocol));

  const b = new R2Cycles(cfg, { appliedCycle: 0, appliedTag: 0 });
  deliver(b, 1, 1, [1]);
  b.poll();
  b.resolveAfterDisaster('discard');
  assert.deepEqual(kinds(b.poll()), ['discard']);
  assert.equal(b.recoverablePoint.cycle, 0);

  const c = new R2Cycles(cfg, { appliedCycle: 0, appliedTag: 0 });
  c.handle({ kind: 'records', cycle: 1, records: [rec(0, 1, 1)] });
  assert.deepEqual(c.recoveryState().received, { cycle: 1, tag: null, complete: false });
  assert.throws(() => c.resolveAfterDisaster('apply'), (e) => isTidemarkError(e, ErrorCode.InvalidState));
});
