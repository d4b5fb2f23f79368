import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PEER_MISSING_RECHECK_MS, PairLifecycle, type LifecycleRecord, type PairAction, type PairFacts } from '../../src/core/replication/pair-lifecycle.js';

const R1: LifecycleRecord = { role: 'R1', intent: 'replicating', mode: 'sync', generation: 3, protects: false };
const QUIET: PairFacts = { quiet: true, owedTracks: 0, capturing: false, groupReady: true };
const OWING: PairFacts = { quiet: false, owedTracks: 5, capturing: false, groupReady: true };

const types = (actions: PairAction[]): string[] => actions.map((a) => a.type);

function only<T extends PairAction['type']>(actions: PairAction[], type: T): Extract<PairAction, { type: T }> {
  assert.deepEqual(types(actions), [type]);
  return actions[0] as Extract<PairAction, { type: T }>;
}

/** An R1 whose link just came back after it was down: it must reconcile first. */
function afterLinkLoss(record: LifecycleRecord = R1): PairLifecycle {
  const m = new PairLifecycle(record, { linkUp: true, live: true });
  m.handle({ type: 'link-down' }, 0);
  m.handle({ type: 'link-up' }, 0);
  return m;
}

test('a live half (made with its peer just now) may ship at once; one loaded at start reconciles first', () => {
  assert.equal(new PairLifecycle(R1, { linkUp: true, live: true }).mayShip, true);
  const loaded = new PairLifecycle(R1, { linkUp: true, live: false });
  assert.equal(loaded.mayShip, false);
  loaded.handle({ type: 'tick', facts: OWING }, 0);
  only(loaded.poll(), 'ask-peer-status');
});

test('after the link returns nothing ships until the reconcile for that link session is done', () => {
  const m = afterLinkLoss();
  assert.equal(m.mayShip, false);
  const ask = only(m.poll(), 'ask-peer-status');
  m.handle({ type: 'tick', facts: OWING }, 0);
  assert.deepEqual(m.poll(), [], 'one reconcile at a time, and no push meanwhile');
  m.handle({ type: 'peer-status', epoch: ask.epoch, status: { exists: true, role: 'R2', intent: 'replicating', generation: 3 } }, 0);
  const confirm = only(m.poll(), 'confirm-replicating');
  assert.equal(confirm.generation, 3);
  assert.equal(m.mayShip, false, 'still not: R2 has not confirmed');
  m.handle({ type: 'resync', facts: OWING }, 0);
  m.handle({ type: 'step-done', step: 'reconcile', epoch: confirm.epoch }, 0);
  assert.equal(m.mayShip, true);
  assert.ok(types(m.poll()).includes('push'));
});

test('a reconcile that outlived its link session counts for nothing; the next session reconciles again', () => {
  const m = afterLinkLoss();
  const ask = only(m.poll(), 'ask-peer-status');
  m.handle({ type: 'peer-status', epoch: ask.epoch, status: { exists: true, role: 'R2', intent: 'replicating', generation: 3 } }, 0);
  const confirm = only(m.poll(), 'confirm-replicating');
  m.handle({ type: 'link-down' }, 0);
  m.handle({ type: 'resync', facts: OWING }, 0);
  m.handle({ type: 'step-done', step: 'reconcile', epoch: confirm.epoch }, 0);
  assert.equal(m.needsReconcile, true);
  assert.equal(m.mayShip, false);
  m.handle({ type: 'link-up' }, 0);
  const again = only(m.poll().filter((a) => a.type !== 'push'), 'ask-peer-status');
  assert.notEqual(again.epoch, ask.epoch);
  // A late answer for the old session is ignored.
  m.handle({ type: 'peer-status', epoch: ask.epoch, status: { exists: true, role: 'R1', intent: 'replicating', generation: 9 } }, 0);
  assert.deepEqual(m.poll(), []);
});

test('a failed reconcile step is retried on the next tick while the link is up', () => {
  const m = afterLinkLoss();
  const ask = only(m.poll(), 'ask-peer-status');
  m.handle({ type: 'step-failed', step: 'reconcile', epoch: ask.epoch, error: 'timed out' }, 0);
  assert.equal(m.needsReconcile, true);
  m.handle({ type: 'tick', facts: OWING }, 0);
  only(m.poll(), 'ask-peer-status');
});

test('the peer moved to a newer generation: a swap finished there makes this half R2; a failover there is adopted', () => {
  const swapped = afterLinkLoss();
  const ask = only(swapped.poll(), 'ask-peer-status');
  swapped.handle({ type: 'peer-status', epoch: ask.epoch, status: { exists: true, role: 'R1', intent: 'replicating', generation: 4 } }, 0);
  assert.equal(only(swapped.poll(), 'become-r2').generation, 4);

  const failed = afterLinkLoss();
  const ask2 = only(failed.poll(), 'ask-peer-status');
  failed.handle({ type: 'peer-status', epoch: ask2.epoch, status: { exists: true, role: 'R2', intent: 'failed-over', generation: 4 } }, 0);
  const adopt = only(failed.poll(), 'adopt-failover');
  assert.equal(adopt.generation, 4);
  failed.handle({ type: 'record', record: { ...R1, intent: 'failed-over', generation: 4 } }, 0);
  failed.handle({ type: 'step-done', step: 'reconcile', epoch: adopt.epoch }, 0);
  assert.equal(failed.needsReconcile, false);
  assert.equal(failed.mayShip, false, 'a failed-over R1 ships nothing');
  assert.deepEqual(failed.poll(), []);
});

test('an older or equal generation on the peer is not adopted: R1 confirms its own', () => {
  const m = afterLinkLoss();
  const ask = only(m.poll(), 'ask-peer-status');
  m.handle({ type: 'peer-status', epoch: ask.epoch, status: { exists: true, role: 'R2', intent: 'failed-over', generation: 3 } }, 0);
  only(m.poll(), 'confirm-replicating');
});

test('a peer without its half: the pair shows the peer missing, ships nothing, and asks again while the link stays up', () => {
  const m = afterLinkLoss();
  const ask = only(m.poll(), 'ask-peer-status');
  m.handle({ type: 'peer-status', epoch: ask.epoch, status: { exists: false } }, 0);
  assert.equal(m.peerMissing, true);
  assert.equal(m.mayShip, false);
  // The link stays up: the half asks again after a while, and ships once the peer has its half.
  m.handle({ type: 'tick', facts: OWING }, PEER_MISSING_RECHECK_MS - 1);
  assert.deepEqual(m.poll(), [], 'not at once');
  m.handle({ type: 'tick', facts: OWING }, PEER_MISSING_RECHECK_MS);
  const again = only(m.poll(), 'ask-peer-status');
  m.handle({ type: 'tick', facts: OWING }, PEER_MISSING_RECHECK_MS + 10);
  assert.deepEqual(m.poll(), [], 'one question at a time');
  m.handle({ type: 'peer-status', epoch: again.epoch, status: { exists: true, role: 'R2', intent: 'replicating', generation: 3 } }, PEER_MISSING_RECHECK_MS + 20);
  assert.equal(m.peerMissing, false);
  const confirm = only(m.poll(), 'confirm-replicating');
  m.handle({ type: 'resync', facts: OWING }, PEER_MISSING_RECHECK_MS + 30);
  m.handle({ type: 'step-done', step: 'reconcile', epoch: confirm.epoch }, PEER_MISSING_RECHECK_MS + 40);
  assert.equal(m.mayShip, true);
});

test('a restoring R1 pulls once reconciled, and on every tick after (the pull is idempotent)', () => {
  const m = afterLinkLoss({ ...R1, intent: 'restoring' });
  const ask = only(m.poll(), 'ask-peer-status');
  m.handle({ type: 'peer-status', epoch: ask.epoch, status: { exists: true, role: 'R2', intent: 'restoring', generation: 3 } }, 0);
  only(m.poll(), 'restore');
  m.handle({ type: 'tick', facts: OWING }, 0);
  only(m.poll(), 'restore');
});

test('--protect-with: a resync has R2 split its clone first; nothing ships until it did', () => {
  const m = afterLinkLoss({ ...R1, protects: true });
  const ask = only(m.poll(), 'ask-peer-status');
  m.handle({ type: 'peer-status', epoch: ask.epoch, status: { exists: true, role: 'R2', intent: 'replicating', generation: 3 } }, 0);
  const confirm = only(m.poll(), 'confirm-replicating');
  m.handle({ type: 'resync', facts: OWING }, 0);
  assert.deepEqual(m.poll(), [], 'the protection waits for the reconcile to end');
  m.handle({ type: 'step-done', step: 'reconcile', epoch: confirm.epoch }, 0);
  const protect = only(m.poll(), 'protect');
  assert.equal(protect.whole, false, 'R2 was not seen whole: it keeps the clone it has');
  assert.equal(m.mayShip, false);
  m.handle({ type: 'tick', facts: OWING }, 0);
  assert.deepEqual(m.poll(), [], 'one protection request at a time');
  m.handle({ type: 'step-done', step: 'protect', epoch: protect.epoch }, 0);
  assert.equal(m.mayShip, true);
  only(m.poll(), 'push');
});

test('--protect-with: a failed protection is retried; R2 may refresh its clone only if R1 saw it whole since', () => {
  const m = new PairLifecycle({ ...R1, protects: true }, { linkUp: true, live: true });
  m.handle({ type: 'r2-whole', facts: QUIET }, 0);
  m.handle({ type: 'resync', facts: OWING }, 0);
  const first = only(m.poll(), 'protect');
  assert.equal(first.whole, true);
  m.handle({ type: 'step-failed', step: 'protect', epoch: first.epoch, error: 'clone busy' }, 0);
  m.handle({ type: 'session-reset' }, 0); // R2 restarted: what it held undurably may be gone
  m.handle({ type: 'tick', facts: OWING }, 0);
  assert.equal(only(m.poll(), 'protect').whole, false);
});

test('--protect-with: a tick between a resume\'s record change and its resync protects first; nothing ships before the split', () => {
  // Found by the cascade kill -9 test: the tick pushed owed tracks while R2 was refreshing its
  // clone, and the clone split holding some of them (C's image not a prefix of the writes).
  const m = new PairLifecycle({ ...R1, protects: true }, { linkUp: true, live: true });
  m.handle({ type: 'r2-whole', facts: QUIET }, 0); // the last cycle shipped everything
  m.handle({ type: 'record', record: { ...R1, intent: 'suspended', protects: true } }, 0);
  m.handle({ type: 'record', record: { ...R1, protects: true } }, 0);
  assert.equal(m.mayShip, false, 'the intent is replicating but the resync is not decided yet');
  m.handle({ type: 'tick', facts: OWING }, 0);
  const protect = only(m.poll(), 'protect');
  assert.equal(protect.whole, true);
  assert.equal(m.mayShip, false);
  // The app's own resync decision arrives late: it adds nothing while the protection runs.
  m.handle({ type: 'resync', facts: OWING }, 0);
  assert.deepEqual(m.poll(), []);
  m.handle({ type: 'step-done', step: 'protect', epoch: protect.epoch }, 0);
  assert.equal(m.mayShip, true);
  only(m.poll(), 'push');
});

test('a resume with nothing owed, or without --protect-with, ships after the resync decision, from the tick if need be', () => {
  const plain = new PairLifecycle({ ...R1, intent: 'suspended' }, { linkUp: true, live: true });
  plain.handle({ type: 'record', record: R1 }, 0);
  assert.equal(plain.mayShip, false);
  plain.handle({ type: 'tick', facts: OWING }, 0);
  only(plain.poll(), 'push');
  assert.equal(plain.mayShip, true);
  const guarded = new PairLifecycle({ ...R1, intent: 'suspended', protects: true }, { linkUp: true, live: true });
  guarded.handle({ type: 'record', record: { ...R1, protects: true } }, 0);
  guarded.handle({ type: 'resync', facts: QUIET }, 0);
  only(guarded.poll(), 'push');
  assert.equal(guarded.mayShip, true);
  // A record change that keeps it replicating (a mode change) is no resync.
  guarded.handle({ type: 'record', record: { ...R1, protects: true, mode: 'adaptive' } }, 0);
  assert.equal(guarded.mayShip, true);
});

test('a resync with nothing owed, or without --protect-with, pushes at once', () => {
  const plain = new PairLifecycle(R1, { linkUp: true, live: true });
  plain.handle({ type: 'resync', facts: OWING }, 0);
  only(plain.poll(), 'push');
  const guarded = new PairLifecycle({ ...R1, protects: true }, { linkUp: true, live: true });
  guarded.handle({ type: 'resync', facts: QUIET }, 0);
  only(guarded.poll(), 'push');
});

test('async cycles start only from a quiet, reconciled pair whose group tag is known; one start at a time', () => {
  const m = new PairLifecycle({ ...R1, mode: 'async' }, { linkUp: true, live: true });
  m.handle({ type: 'tick', facts: OWING }, 0);
  assert.deepEqual(types(m.poll()), ['push'], 'not while tracks are owed');
  m.handle({ type: 'tick', facts: { ...QUIET, groupReady: false } }, 0);
  assert.deepEqual(types(m.poll()), ['push'], 'not before the group told it its tag');
  m.handle({ type: 'tick', facts: QUIET }, 0);
  const [, start] = m.poll();
  assert.equal(start?.type, 'start-cycles');
  m.handle({ type: 'tick', facts: QUIET }, 0);
  assert.deepEqual(types(m.poll()), ['push'], 'a start is in flight');
  m.handle({ type: 'step-failed', step: 'start-cycles', epoch: 0, error: 'R2 refused' }, 0);
  m.handle({ type: 'tick', facts: QUIET }, 0);
  assert.deepEqual(types(m.poll()), ['push', 'start-cycles']);
  m.handle({ type: 'link-down' }, 0);
  assert.equal(m.cyclesMayStart(QUIET), false);
  assert.equal(new PairLifecycle(R1, { linkUp: true, live: true }).cyclesMayStart(QUIET), false, 'sync mode runs no cycles');
});

test('R2 halves and retired halves ask for nothing', () => {
  const r2 = new PairLifecycle({ ...R1, role: 'R2' }, { linkUp: true, live: false });
  r2.handle({ type: 'tick', facts: OWING }, 0);
  assert.deepEqual(r2.poll(), []);
  assert.equal(r2.mayShip, false);
  const retired = afterLinkLoss();
  retired.handle({ type: 'retire' }, 0);
  assert.deepEqual(retired.poll(), []);
  retired.handle({ type: 'tick', facts: OWING }, 0);
  assert.deepEqual(retired.poll(), []);
  assert.equal(retired.mayShip, false);
});
