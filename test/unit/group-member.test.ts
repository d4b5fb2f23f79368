// The member side of the consistency-group protocol (src/core/group/member.ts), which the daemon
// and the cycles simulator both drive.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GroupMemberMachine, answerToEvent, type MemberAction, type MemberPairFacts } from '../../src/core/group/member.js';
import type { MembershipTable } from '../../src/core/group/group-record.js';

const ME = 'e1/db1';
const ref = (key: string) => {
  const [array, volume] = key.split('/') as [string, string];
  return { array, volume, pairId: `${array}.${volume}`, r2Array: 'w', r2Volume: `${volume}-r` };
};
const table = (members: string[], version = 2, coordinator = 'c', epoch = 0): MembershipTable =>
  ({ group: 'g', coordinator, epoch, version, cycleMs: 100, tag: 7, members: members.map(ref) });
const inGroup: MemberPairFacts = { group: 'g', replicating: true, cycles: { grouped: true, ready: true, captureTag: 7 }, notReadyReason: 'busy' };
const standalone: MemberPairFacts = { group: null, replicating: true, cycles: { grouped: false, ready: true, captureTag: 30 }, notReadyReason: 'busy' };
const kinds = (actions: readonly MemberAction[]): string[] => actions.map((a) => a.kind);
const make = (): GroupMemberMachine => new GroupMemberMachine({ name: ME, windowTimeoutMs: 400, silentCoordinatorMs: 10_000 }, null, 0);

test('a window: held, switched inside it, closed by the coordinator', () => {
  const m = make();
  const open = m.command({ kind: 'open-window' }, 'g', 'c', inGroup, 1);
  assert.deepEqual(open.answer, { kind: 'window-opened' });
  const hold = open.actions[0]!;
  assert.equal(hold.kind, 'hold-writes');
  const id = hold.kind === 'hold-writes' ? hold.window : -1;
  assert.deepEqual(m.held(id), [{ kind: 'arm-window-timer', window: id, afterMs: 400 }]);
  assert.deepEqual(m.command({ kind: 'open-window' }, 'g', 'c', inGroup, 2).actions, [], 'a re-sent open changes nothing');
  const sw = m.command({ kind: 'switch', tag: 8 }, 'g', 'c', inGroup, 3);
  assert.deepEqual(sw, { answer: { kind: 'switched', tag: 8 }, actions: [{ kind: 'switch-cycles', tag: 8 }] });
  const again = m.command({ kind: 'switch', tag: 8 }, 'g', 'c', { ...inGroup, cycles: { grouped: true, ready: false, captureTag: 8 } }, 4);
  assert.deepEqual(again, { answer: { kind: 'switched', tag: 8 }, actions: [] }, 'idempotent once the cycles have the tag');
  assert.deepEqual(m.command({ kind: 'close-window' }, 'g', 'c', inGroup, 5), { answer: { kind: 'window-closed' }, actions: [{ kind: 'release-writes', window: id }] });
  assert.deepEqual(m.windowExpired(id), [], 'a closed window does not expire');
});

test('no switch without a held window; a member not ready says why', () => {
  const m = make();
  const none = m.command({ kind: 'switch', tag: 8 }, 'g', 'c', inGroup, 1);
  assert.equal(none.answer?.kind, 'switch-failed');
  assert.deepEqual(none.actions, []);
  const open = m.command({ kind: 'open-window' }, 'g', 'c', inGroup, 2);
  const id = (open.actions[0] as { window: number }).window;
  assert.equal(m.command({ kind: 'switch', tag: 8 }, 'g', 'c', inGroup, 3).answer?.kind, 'switch-failed', 'the hold has not taken effect yet');
  m.held(id);
  const busy = { ...inGroup, cycles: { grouped: true, ready: false, captureTag: 7 }, notReadyReason: 'cycle 6 transmitting' };
  assert.deepEqual(m.command({ kind: 'switch', tag: 8 }, 'g', 'c', busy, 4).answer, { kind: 'switch-failed', tag: 8, reason: 'not ready: cycle 6 transmitting' });
  assert.deepEqual(m.command({ kind: 'query-ready', tag: 7 }, 'g', 'c', busy, 5).answer, { kind: 'ready', ready: false, reason: 'cycle 6 transmitting' });
  const waiting = m.command({ kind: 'query-ready', tag: 7 }, 'g', 'c', { ...inGroup, cycles: null }, 6);
  assert.deepEqual(waiting.actions, [{ kind: 'adopt-tag', tag: 7 }], 'cycles not yet started take the group\'s tag');
});

test('a window that times out before a switch just closes; the next switch asks for a new one', () => {
  const m = make();
  const id = (m.command({ kind: 'open-window' }, 'g', 'c', inGroup, 1).actions[0] as { window: number }).window;
  m.held(id);
  assert.deepEqual(kinds(m.windowExpired(id)), ['release-writes']);
  assert.equal(m.closedOnOwn, true);
  const sw = m.command({ kind: 'switch', tag: 8 }, 'g', 'c', inGroup, 500);
  assert.deepEqual(sw.answer, { kind: 'switch-failed', tag: 8, reason: 'its write window timed out', windowClosed: true });
  assert.deepEqual(answerToEvent(ME, sw.answer!), { kind: 'switch-failed', member: ME, tag: 8, reason: 'its write window timed out', windowClosed: true });
  const reopened = m.command({ kind: 'open-window' }, 'g', 'c', inGroup, 501);
  m.held((reopened.actions[0] as { window: number }).window);
  assert.equal(m.command({ kind: 'switch', tag: 8 }, 'g', 'c', inGroup, 502).answer?.kind, 'switched');
});

test('a window that times out after a switch: fall back and suspend first, then release the writes, then forget the table', () => {
  const m = make();
  m.command({ kind: 'store-table', table: table([ME, 'e2/db2']) }, 'g', 'c', standalone, 0);
  const id = (m.command({ kind: 'open-window' }, 'g', 'c', inGroup, 1).actions[0] as { window: number }).window;
  m.held(id);
  m.command({ kind: 'switch', tag: 8 }, 'g', 'c', inGroup, 2);
  const expired = m.windowExpired(id);
  assert.deepEqual(kinds(expired), ['fall-back', 'release-writes', 'keep-table']);
  assert.equal(m.table, null);
  // Suspended and out of the group: it says so, and an old table does not bring it back.
  const out: MemberPairFacts = { group: null, replicating: false, cycles: null, notReadyReason: 'suspended' };
  assert.equal(m.command({ kind: 'query-ready', tag: 8 }, 'g', 'c', out, 3).answer?.kind, 'not-member');
  assert.equal(m.command({ kind: 'store-table', table: table([ME, 'e2/db2'], 3) }, 'g', 'c', out, 4).answer?.kind, 'not-member');
});

test('tables: listed → enter the group; not listed → leave; a pair that left comes back only when added again', () => {
  const m = make();
  const joined = m.command({ kind: 'store-table', table: table([ME]) }, 'g', 'c', standalone, 1);
  assert.deepEqual(joined.answer, { kind: 'table-stored', version: 2 });
  assert.deepEqual(kinds(joined.actions), ['enter-group', 'keep-table']);
  const left = m.command({ kind: 'store-table', table: table(['e2/db2'], 3) }, 'g', 'c', inGroup, 2);
  assert.deepEqual(kinds(left.actions), ['leave-group', 'keep-table']);
  assert.equal(m.command({ kind: 'store-table', table: table([ME], 4) }, 'g', 'c', standalone, 3).answer?.kind, 'not-member',
    'a stale join or an old table does not bring it back');
  m.rejoin();
  assert.deepEqual(kinds(m.command({ kind: 'store-table', table: table([ME], 5) }, 'g', 'c', standalone, 4).actions), ['enter-group', 'keep-table']);
  assert.deepEqual(m.command({ kind: 'store-table', table: table(['e2/db2'], 1) }, 'g', 'c', inGroup, 5, true),
    { answer: { kind: 'table-stored', version: 1 }, actions: [] }, 'a table the transport knows is stale changes nothing');
});

test('leaving with a window open in which it switched falls back instead', () => {
  const m = make();
  m.command({ kind: 'store-table', table: table([ME]) }, 'g', 'c', standalone, 0);
  const id = (m.command({ kind: 'open-window' }, 'g', 'c', inGroup, 1).actions[0] as { window: number }).window;
  m.held(id);
  m.command({ kind: 'switch', tag: 8 }, 'g', 'c', inGroup, 2);
  assert.deepEqual(kinds(m.leave(inGroup)), ['fall-back', 'release-writes', 'keep-table']);
});

test('a window closed while its hold was pending is released when the hold lands', () => {
  const m = make();
  const id = (m.command({ kind: 'open-window' }, 'g', 'c', inGroup, 1).actions[0] as { window: number }).window;
  assert.deepEqual(kinds(m.command({ kind: 'close-window' }, 'g', 'c', inGroup, 2).actions), ['release-writes']);
  assert.deepEqual(m.held(id), [{ kind: 'release-writes', window: id }]);
});

test('commands from a coordinator other than the table\'s are superseded; a newer epoch from it takes over', () => {
  const m = make();
  m.command({ kind: 'store-table', table: table([ME], 2, 'c', 0) }, 'g', 'c', standalone, 1);
  assert.deepEqual(m.command({ kind: 'query-ready', tag: 7 }, 'g', 'old', inGroup, 2).answer, { kind: 'superseded', coordinator: 'c', epoch: 0 });
  assert.equal(m.command({ kind: 'store-table', table: table([ME], 1, 'd', 0) }, 'g', 'd', inGroup, 3).answer?.kind, 'superseded', 'same epoch');
  assert.equal(m.command({ kind: 'store-table', table: table([ME], 1, 'd', 1) }, 'g', 'd', inGroup, 4).answer?.kind, 'table-stored', 'newer epoch');
  assert.equal(m.table?.coordinator, 'd');
});

test('evicted: fall back and suspend; a member not in the group answers not-member instead', () => {
  const m = make();
  assert.deepEqual(m.command({ kind: 'evict', reason: 'late' }, 'g', 'c', standalone, 1).answer, { kind: 'not-member', reason: 'not in group g' });
  const evicted = m.command({ kind: 'evict', reason: 'late' }, 'g', 'c', inGroup, 2);
  assert.equal(evicted.answer?.kind, 'evicted');
  assert.deepEqual(evicted.actions[0], { kind: 'fall-back', reason: 'evicted from group g: late' });
});

test('a silent coordinator: the member asks whether it still belongs, at most once per silence, and leaves if not', () => {
  const m = new GroupMemberMachine({ name: ME, windowTimeoutMs: null, silentCoordinatorMs: 1000 }, table([ME]));
  assert.equal(m.membershipCheckDue(0, standalone), false, 'in no group: nothing to ask');
  assert.equal(m.membershipCheckDue(0, inGroup), true, 'never heard since the array started');
  assert.equal(m.membershipCheckDue(10, inGroup), false, 'asked already');
  m.command({ kind: 'query-ready', tag: 7 }, 'g', 'c', inGroup, 500);
  assert.equal(m.membershipCheckDue(1400, inGroup), false, 'heard 900 ms ago');
  assert.equal(m.membershipCheckDue(1500, inGroup), true);
  assert.deepEqual(m.membershipAnswer(true, inGroup), []);
  assert.deepEqual(kinds(m.membershipAnswer(false, inGroup)), ['fall-back', 'keep-table'], 'group cycles: suspend, as an evicted member');
  const m2 = new GroupMemberMachine({ name: ME, windowTimeoutMs: null, silentCoordinatorMs: 1000 }, table([ME]));
  const waitingForTag = { ...inGroup, cycles: null };
  assert.deepEqual(kinds(m2.membershipAnswer(undefined, waitingForTag)), ['leave-group', 'keep-table'], 'no group cycles yet: just leave');
});
