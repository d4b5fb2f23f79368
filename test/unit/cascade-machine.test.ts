import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CascadeMachine, CASCADE_RETRY_MS, type CascadeAction, type CascadeFacts } from '../../src/core/cascade/cascade-machine.js';
import { newCascadeRecord, parseCascadeRecord, type CascadeRecord } from '../../src/core/cascade/cascade-record.js';

// R2VOL without a source pair (the app settles such a record at create).
const base = (everyMs: number | null = 1000): CascadeRecord => ({
  ...newCascadeRecord({ name: 'cas', volume: 'r2', clone: 'cv', peer: 'c', remoteVolume: 'cr', remoteClone: 'cp', everyMs, createdAtMs: 0 }),
  sourceSettled: true,
});

type CloneState = CascadeFacts['clone']['state'];
const facts = (clone: CloneState, pair: CascadeFacts['pair'] = { exists: false }, splitAtMs: number | null = null): CascadeFacts =>
  ({ clone: { state: clone, splitAtMs }, pair, source: { kind: 'none' }, trackCount: 100 });
const pair = (intent: 'replicating' | 'suspended' | 'split', owed = 0, persisted: number | null = owed, quiet = owed === 0, bytesShipped = 0) =>
  ({ exists: true as const, intent, owedTracks: owed, persistedOwed: persisted, quiet, bytesShipped });

const kinds = (actions: CascadeAction[]): string[] => actions.map((a) => a.type);
const persisted = (actions: CascadeAction[]): CascadeRecord => {
  const p = actions.find((a) => a.type === 'persist');
  assert.ok(p && p.type === 'persist', `no persist in ${kinds(actions).join(',')}`);
  return p.record;
};

/** Drives a machine through one whole cycle on a healthy array; returns it in phase complete. */
function fullCycle(m: CascadeMachine, t: number, splitAt: number, first: boolean, owed = 7, bytes = 7 * 65536, from = 0): void {
  const p0 = first ? { exists: false as const } : pair('replicating', 0, 0, true, from);
  m.handle({ type: 'tick', facts: facts(first ? 'missing' : 'split', p0, 0) }, t);
  const a = m.poll();
  if (first) {
    assert.deepEqual(kinds(a), ['establish-clone']);
    m.handle({ type: 'done', action: 'establish-clone' }, t);
  } else {
    assert.deepEqual(kinds(a), ['persist', 'suspend-pair']);
    assert.equal(persisted(a).phase, 'synchronizing');
    m.handle({ type: 'done', action: 'suspend-pair' }, t);
    m.handle({ type: 'tick', facts: facts('split', pair('suspended', owed, owed, true, from)) }, t);
    assert.deepEqual(kinds(m.poll()), ['reestablish-clone']);
    m.handle({ type: 'done', action: 'reestablish-clone' }, t);
  }
  const suspended = first ? { exists: false as const } : pair('suspended', owed, owed, true, from);
  m.handle({ type: 'tick', facts: facts('synchronizing', suspended) }, t + 1);
  assert.deepEqual(m.poll(), [], 'nothing while the clone copies');
  m.handle({ type: 'tick', facts: facts('synchronized', suspended) }, t + 2);
  const s = m.poll();
  assert.deepEqual(kinds(s), ['persist', 'split-clone']);
  assert.equal(persisted(s).phase, 'splitting');
  m.handle({ type: 'done', action: 'split-clone' }, t + 2);
  m.handle({ type: 'tick', facts: facts('split', suspended, splitAt) }, t + 3);
  const sh = m.poll();
  assert.deepEqual(kinds(sh), ['persist', 'ship']);
  assert.equal(persisted(sh).phase, 'shipping');
  assert.equal(persisted(sh).splitAtMs, splitAt);
  assert.equal(persisted(sh).tracksShipping, first ? 100 : owed);
  m.handle({ type: 'done', action: 'ship' }, t + 3);
  m.handle({ type: 'tick', facts: facts('split', pair('replicating', owed, owed, false, from), splitAt) }, t + 4);
  m.handle({ type: 'tick', facts: facts('split', pair('replicating', 3, owed, false, from + bytes / 2), splitAt) }, t + 5);
  // Everything acknowledged but not yet clean on disk: not complete.
  m.handle({ type: 'tick', facts: facts('split', pair('replicating', 0, 3, true, from + bytes), splitAt) }, t + 6);
  assert.deepEqual(m.poll(), []);
  m.handle({ type: 'tick', facts: facts('split', pair('replicating', 0, 0, true, from + bytes), splitAt) }, t + 7);
  const r = m.poll();
  assert.deepEqual(kinds(r), ['persist', 'suspend-pair']);
  assert.equal(persisted(r).phase, 'refreshing');
  m.handle({ type: 'done', action: 'suspend-pair' }, t + 7);
  m.handle({ type: 'tick', facts: facts('split', pair('suspended', 0, 0, true, from + bytes), splitAt) }, t + 8);
  assert.deepEqual(kinds(m.poll()), ['refresh-remote']);
  assert.equal(m.record.consistentAtMs === splitAt, false, 'C holds the new image only once refreshed');
  m.handle({ type: 'done', action: 'refresh-remote' }, t + 9);
  const done = m.poll();
  assert.deepEqual(kinds(done), ['persist']);
  assert.equal(persisted(done).phase, 'complete');
  assert.equal(persisted(done).consistentAtMs, splitAt);
}

test('a cycle: suspend, reattach, split, ship until clean on disk, suspend, refresh the far image; counters and consistentAt', () => {
  const m = new CascadeMachine(base());
  fullCycle(m, 0, 5, true, 100, 1000);
  assert.equal(m.record.cycles, 1);
  assert.equal(m.record.tracksShippedLast, 100);
  assert.equal(m.record.bytesShippedLast, 1000);
  fullCycle(m, 1000, 1003, false, 7, 3000, 1000);
  assert.equal(m.record.cycles, 2);
  assert.equal(m.record.consistentAtMs, 1003);
  assert.equal(m.record.tracksShippedLast, 7);
  assert.equal(m.record.bytesShippedLast, 3000, 'counter deltas only');
  assert.equal(m.record.bytesShipped, 4000);
});

test('no overlap: a cycle due while one ships starts when it completes; not before it is due', () => {
  const m = new CascadeMachine(base(1000));
  fullCycle(m, 0, 5, true);
  // Complete at t=9; the next is due at 1000 (the first started at 0).
  assert.equal(m.nextDueAtMs, 1000);
  m.handle({ type: 'tick', facts: facts('split', pair('suspended'), 5) }, 999);
  assert.deepEqual(m.poll(), []);
  m.handle({ type: 'tick', facts: facts('split', pair('suspended'), 5) }, 1000);
  assert.deepEqual(kinds(m.poll()), ['persist', 'reestablish-clone']);
  // This cycle runs long: ticks past its own next due time do nothing new while it ships.
  const slow = new CascadeMachine({ ...base(100), phase: 'shipping', splitAtMs: 50, cycleStartedAtMs: 0 });
  slow.handle({ type: 'tick', facts: facts('split', pair('replicating', 9, 9, false), 50) }, 5000);
  assert.deepEqual(slow.poll(), []);
  assert.equal(slow.phase, 'shipping');
});

test('on command only (no --every): cascade cycle starts one; a request during a cycle runs right after it', () => {
  const m = new CascadeMachine({ ...base(null), phase: 'complete', cycles: 1 });
  m.handle({ type: 'tick', facts: facts('split', pair('suspended')) }, 1e9);
  assert.deepEqual(m.poll(), []);
  m.handle({ type: 'request-cycle' }, 5);
  m.handle({ type: 'tick', facts: facts('split', pair('suspended')) }, 6);
  const a = m.poll();
  assert.deepEqual(kinds(a), ['persist', 'reestablish-clone']);
  assert.equal(persisted(a).requested, false);
  assert.equal(persisted(a).cycleStartedAtMs, 6);
});

test('restart in each phase re-derives the next action from the clone and the pair (every action repeatable)', () => {
  const at = (phase: CascadeRecord['phase'], extra: Partial<CascadeRecord> = {}): CascadeMachine =>
    new CascadeMachine({ ...base(), phase, cycles: 3, ...extra });
  const next = (m: CascadeMachine, f: CascadeFacts): string[] => {
    m.handle({ type: 'tick', facts: f }, 10);
    return kinds(m.poll());
  };
  // synchronizing: the reestablish may not have happened (clone still split), the pair may still be replicating.
  assert.deepEqual(next(at('synchronizing'), facts('split', pair('replicating'))), ['suspend-pair']);
  assert.deepEqual(next(at('synchronizing'), facts('split', pair('suspended'))), ['reestablish-clone']);
  assert.deepEqual(next(at('synchronizing'), facts('synchronizing', pair('suspended'))), []);
  // splitting: split done or not; a restart re-marked hot tracks (synchronizing again): wait.
  assert.deepEqual(next(at('splitting'), facts('synchronized', pair('suspended'))), ['split-clone']);
  assert.deepEqual(next(at('splitting'), facts('synchronizing', pair('suspended'))), []);
  const shipped = at('splitting');
  assert.deepEqual(next(shipped, facts('split', pair('suspended', 4), 77)), ['persist', 'ship']);
  assert.equal(shipped.record.splitAtMs, 77);
  // shipping: resumed or not.
  assert.deepEqual(next(at('shipping', { splitAtMs: 1 }), facts('split', pair('suspended', 4), 1)), ['ship']);
  assert.deepEqual(next(at('shipping', { splitAtMs: 1 }), facts('split', pair('replicating', 4), 1)), []);
  // refreshing: suspended or not; refreshing again is harmless (CRVOL did not change since).
  assert.deepEqual(next(at('refreshing', { splitAtMs: 1 }), facts('split', pair('replicating'), 1)), ['suspend-pair']);
  assert.deepEqual(next(at('refreshing', { splitAtMs: 1 }), facts('split', pair('suspended'), 1)), ['refresh-remote']);
});

test('a failed action is retried after a pause, with the record persisted again first; the error is shown meanwhile', () => {
  const m = new CascadeMachine({ ...base(), phase: 'refreshing', splitAtMs: 3 });
  m.handle({ type: 'tick', facts: facts('split', pair('suspended'), 3) }, 100);
  assert.deepEqual(kinds(m.poll()), ['refresh-remote']);
  m.handle({ type: 'failed', action: 'refresh-remote', error: 'link down' }, 100);
  assert.match(m.lastError ?? '', /refresh-remote: link down/);
  m.handle({ type: 'tick', facts: facts('split', pair('suspended'), 3) }, 100 + CASCADE_RETRY_MS - 1);
  assert.deepEqual(kinds(m.poll()), ['persist']);
  m.handle({ type: 'tick', facts: facts('split', pair('suspended'), 3) }, 100 + CASCADE_RETRY_MS);
  assert.deepEqual(kinds(m.poll()), ['refresh-remote']);
  assert.equal(m.record.cycles, 0, 'a failed refresh completes nothing');
  m.handle({ type: 'done', action: 'refresh-remote' }, 2000);
  assert.equal(m.lastError, null);
  assert.equal(m.record.cycles, 1);
});

test('close: clean at once between cycles; during shipping it waits for the cycle to complete', () => {
  const idle = new CascadeMachine({ ...base(), phase: 'complete', cycles: 2 });
  idle.handle({ type: 'close' }, 0);
  idle.handle({ type: 'tick', facts: facts('split', pair('suspended')) }, 1);
  assert.deepEqual(kinds(idle.poll()), ['persist', 'finish']);
  idle.handle({ type: 'done', action: 'finish' }, 1);
  assert.equal(idle.finished, true);

  const busy = new CascadeMachine({ ...base(), phase: 'shipping', splitAtMs: 5 });
  busy.handle({ type: 'close' }, 0);
  busy.handle({ type: 'tick', facts: facts('split', pair('replicating', 3, 3, false), 5) }, 1);
  assert.deepEqual(kinds(busy.poll()), ['persist'], 'the close is recorded, nothing else yet');
  busy.handle({ type: 'tick', facts: facts('split', pair('replicating'), 5) }, 2);
  assert.deepEqual(kinds(busy.poll()), ['persist', 'suspend-pair']);
  busy.handle({ type: 'done', action: 'suspend-pair' }, 2);
  busy.handle({ type: 'tick', facts: facts('split', pair('suspended'), 5) }, 3);
  assert.deepEqual(kinds(busy.poll()), ['refresh-remote']);
  busy.handle({ type: 'done', action: 'refresh-remote' }, 3);
  busy.poll();
  busy.handle({ type: 'tick', facts: facts('split', pair('suspended'), 5) }, 1e9);
  assert.deepEqual(kinds(busy.poll()), ['finish'], 'no new cycle once closing');
});

test('an operator-changed pair or clone blocks the cycle with a reason instead of acting on it', () => {
  const m = new CascadeMachine({ ...base(), phase: 'synchronizing' });
  m.handle({ type: 'tick', facts: facts('split', pair('split')) }, 0);
  assert.deepEqual(m.poll(), []);
  assert.match(m.lastError ?? '', /pair to c is split/);
  const r = new CascadeMachine({ ...base(), phase: 'splitting' });
  r.handle({ type: 'tick', facts: facts('restoring', pair('suspended')) }, 0);
  assert.deepEqual(r.poll(), []);
  assert.match(r.lastError ?? '', /restoring/);
});

test('a stored record is validated', () => {
  const good = base();
  assert.deepEqual(parseCascadeRecord(JSON.parse(JSON.stringify(good)), 'x'), good);
  assert.throws(() => parseCascadeRecord({ ...good, phase: 'flying' }, 'x'), /TM_ERR_METADATA_CORRUPT|bad phase/);
  assert.throws(() => parseCascadeRecord({ ...good, cycles: -1 }, 'x'), /cycles/);
  assert.throws(() => parseCascadeRecord({ ...good, clone: '../x' }, 'x'), /clone/);
});

test('R2VOL fed by a pair: no split in a link session the source has not confirmed (a resync would tear the image)', () => {
  const src = (upEpoch: string | null, confirmedEpoch: string | null): CascadeFacts['source'] => ({ kind: 'pair', upEpoch, confirmedEpoch });
  const m = new CascadeMachine({ ...base(), phase: 'synchronizing', sourceSettled: true, sourceEpoch: 'b:1' });
  const f = (source: CascadeFacts['source']): CascadeFacts => ({ ...facts('synchronized', pair('suspended')), source });
  // The link came back (a new session): the source may be resyncing R2VOL.
  m.handle({ type: 'tick', facts: f(src('b:2', 'b:1')) }, 0);
  assert.deepEqual(kinds(m.poll()), ['persist']);
  assert.equal(m.record.sourceSettled, false);
  assert.match(m.waitingFor ?? '', /source/);
  // The link went down again: R2VOL does not change, but it was not confirmed whole: still wait.
  m.handle({ type: 'tick', facts: f(src(null, 'b:1')) }, 1);
  assert.deepEqual(m.poll(), []);
  m.handle({ type: 'tick', facts: f(src('b:2', 'b:2')) }, 2);
  const a = m.poll();
  assert.deepEqual(kinds(a), ['persist', 'split-clone']);
  assert.equal(persisted(a).sourceSettled, true);
  assert.equal(m.waitingFor, null);
  // A source that dies while settled leaves R2VOL consistent, and the cascade goes on with the link down…
  m.handle({ type: 'done', action: 'split-clone' }, 3);
  const down = new CascadeMachine({ ...m.record, phase: 'synchronizing' });
  // …but a restart confirms anew (a session that began during an action may not be on disk): it waits.
  down.handle({ type: 'tick', facts: f(src(null, null)) }, 3);
  assert.deepEqual(down.poll(), []);
  assert.match(down.waitingFor ?? '', /source/);
  down.handle({ type: 'tick', facts: f(src('b2:1', 'b2:1')) }, 4);
  assert.deepEqual(kinds(down.poll()), ['persist', 'split-clone']);
});
