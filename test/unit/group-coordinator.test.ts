import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GroupCoordinator, type CoordinatorCommand } from '../../src/core/group/coordinator.js';

const summary = (cmds: CoordinatorCommand[]): string[] => cmds.map((c) => `${c.kind}:${c.member}${c.kind === 'switch' ? `@${c.tag}` : ''}`);
const make = (members = ['a', 'b']): GroupCoordinator =>
  new GroupCoordinator({ members, tag: 1, cycleMs: 100, retryMs: 10, switchTimeoutMs: 1000, nowMs: 0 });

function runSwitch(c: GroupCoordinator, now: number, members: string[]): void {
  for (const m of members) c.handle({ kind: 'ready', member: m, ready: true }, now);
  for (const m of members) c.handle({ kind: 'window-opened', member: m }, now);
  for (const m of members) c.handle({ kind: 'switched', member: m, tag: c.tag + 1 }, now);
  for (const m of members) c.handle({ kind: 'window-closed', member: m }, now);
}

test('one switch: wait cycleMs, all ready, open all windows, switch all with the new tag, close all', () => {
  const c = make();
  assert.deepEqual(c.tick(50), []);
  assert.deepEqual(summary(c.tick(100)), ['query-ready:a', 'query-ready:b']);
  assert.deepEqual(summary(c.handle({ kind: 'ready', member: 'a', ready: true }, 101)), []);
  assert.deepEqual(summary(c.handle({ kind: 'ready', member: 'b', ready: false }, 101)), []);
  assert.deepEqual(c.waitingFor(), ['b']);
  assert.deepEqual(summary(c.tick(111)), ['query-ready:b'], 'a member that is not ready blocks the switch and is asked again');
  assert.deepEqual(summary(c.handle({ kind: 'ready', member: 'b', ready: true }, 112)), ['open-window:a', 'open-window:b']);
  assert.deepEqual(summary(c.handle({ kind: 'window-opened', member: 'b' }, 113)), []);
  assert.deepEqual(summary(c.handle({ kind: 'window-opened', member: 'a' }, 113)), ['switch:a@2', 'switch:b@2']);
  assert.equal(c.phase, 'switching');
  assert.deepEqual(summary(c.handle({ kind: 'switched', member: 'a', tag: 2 }, 114)), []);
  assert.deepEqual(summary(c.handle({ kind: 'switched', member: 'b', tag: 2 }, 114)), ['close-window:a', 'close-window:b']);
  assert.equal(c.tag, 2);
  c.handle({ kind: 'window-closed', member: 'a' }, 115);
  c.handle({ kind: 'window-closed', member: 'b' }, 115);
  assert.equal(c.phase, 'waiting');
  assert.deepEqual(c.tick(200), []);
  assert.deepEqual(summary(c.tick(214)), ['query-ready:a', 'query-ready:b']);
});

test('a member that cannot switch keeps every window open (asked again) until it is evicted', () => {
  const c = make(['a', 'b', 'c']);
  c.tick(100);
  for (const m of ['a', 'b', 'c']) c.handle({ kind: 'ready', member: m, ready: true }, 100);
  for (const m of ['a', 'b', 'c']) c.handle({ kind: 'window-opened', member: m }, 100);
  c.handle({ kind: 'switched', member: 'a', tag: 2 }, 101);
  c.handle({ kind: 'switch-failed', member: 'b', tag: 2, reason: 'busy' }, 101);
  c.handle({ kind: 'switched', member: 'c', tag: 2 }, 101);
  assert.equal(c.phase, 'switching');
  assert.deepEqual(summary(c.tick(111)), ['switch:b@2']);
  assert.equal(c.tag, 1, 'no member closes its window while another has not switched');
  const late = c.tick(1100);
  assert.deepEqual(summary(late), ['evict:b', 'close-window:a', 'close-window:c', 'close-window:b']);
  assert.deepEqual(c.members, ['a', 'c']);
  assert.equal(c.tag, 2);
  c.handle({ kind: 'window-closed', member: 'a' }, 1101);
  const after = c.handle({ kind: 'window-closed', member: 'c' }, 1101);
  assert.deepEqual(summary(after), ['store-table:a', 'store-table:c'], 'the new membership is stored on every member');
  assert.deepEqual(c.table().members, ['a', 'c']);
});

test('join and leave wait until no window is open, store the table on everyone, then switching resumes', () => {
  const c = make();
  c.tick(100);
  c.handle({ kind: 'ready', member: 'a', ready: true }, 100);
  c.handle({ kind: 'ready', member: 'b', ready: true }, 100); // windows opening
  assert.deepEqual(summary(c.join('z', 101)), [], 'windows are open: the join waits');
  c.handle({ kind: 'window-opened', member: 'a' }, 102);
  c.handle({ kind: 'window-opened', member: 'b' }, 102);
  c.handle({ kind: 'switched', member: 'a', tag: 2 }, 103);
  c.handle({ kind: 'switched', member: 'b', tag: 2 }, 103);
  c.handle({ kind: 'window-closed', member: 'a' }, 104);
  const stored = c.handle({ kind: 'window-closed', member: 'b' }, 104);
  assert.deepEqual(summary(stored), ['store-table:a', 'store-table:b', 'store-table:z']);
  const table = (stored[0] as Extract<CoordinatorCommand, { kind: 'store-table' }>).table;
  assert.deepEqual(table, { version: 2, members: ['a', 'b', 'z'], tag: 2 });
  assert.deepEqual(summary(c.tick(105)), [], 'not yet time to re-send');
  assert.deepEqual(summary(c.tick(115)).length, 3, 're-sent until stored');
  for (const m of ['a', 'b', 'z']) c.handle({ kind: 'table-stored', member: m, version: 2 }, 301);
  assert.equal(c.phase, 'waiting');
  assert.deepEqual(summary(c.tick(301)), ['query-ready:a', 'query-ready:b', 'query-ready:z']);
  runSwitch(c, 302, ['a', 'b', 'z']);
  assert.equal(c.tag, 3);
  const t = c.leave('b', 303);
  assert.deepEqual(summary(t), ['store-table:a', 'store-table:b', 'store-table:z']);
  c.handle({ kind: 'table-stored', member: 'a', version: 3 }, 304);
  c.handle({ kind: 'table-stored', member: 'z', version: 3 }, 304);
  assert.equal(c.phase, 'reconfiguring');
  c.tick(1400); // b never answers; it is leaving, so it is no longer waited for
  assert.equal(c.phase, 'waiting');
  assert.deepEqual(c.members, ['a', 'z']);
});

test('stale and duplicate answers are ignored; commands are re-sent until answered', () => {
  const c = make();
  c.handle({ kind: 'switched', member: 'a', tag: 2 }, 0);
  c.handle({ kind: 'window-opened', member: 'x' }, 0);
  assert.equal(c.phase, 'waiting');
  c.tick(100);
  c.handle({ kind: 'ready', member: 'a', ready: true }, 100);
  c.handle({ kind: 'ready', member: 'b', ready: true }, 100);
  c.handle({ kind: 'window-opened', member: 'a' }, 101);
  assert.deepEqual(summary(c.tick(111)), ['open-window:b']);
  c.handle({ kind: 'window-opened', member: 'b' }, 112);
  c.handle({ kind: 'switched', member: 'a', tag: 5 }, 113); // wrong tag
  assert.deepEqual(summary(c.tick(123)), ['switch:a@2', 'switch:b@2']);
});

test('a restarted coordinator (redoSwitch) runs the switch to its recorded tag once more before tags grow', () => {
  // Recorded tag 5: the crash may have hit mid-switch, with some members at 5 and others at 4.
  const c = new GroupCoordinator({ members: ['a', 'b'], tag: 5, cycleMs: 100, retryMs: 10, switchTimeoutMs: 1000, nowMs: 0, redoSwitch: true });
  assert.equal(c.table().tag, 5, 'a joiner takes the tag the members that switched already have');
  c.tick(100);
  for (const m of ['a', 'b']) c.handle({ kind: 'ready', member: m, ready: true }, 100);
  c.handle({ kind: 'window-opened', member: 'a' }, 101);
  const switches = c.handle({ kind: 'window-opened', member: 'b' }, 101);
  assert.deepEqual(summary(switches), ['switch:a@5', 'switch:b@5'], 'the interrupted switch again, not 6');
  c.handle({ kind: 'switched', member: 'a', tag: 5 }, 102); // a had switched before the crash: answers at once
  c.handle({ kind: 'switched', member: 'b', tag: 5 }, 102);
  assert.equal(c.tag, 5);
  for (const m of ['a', 'b']) c.handle({ kind: 'window-closed', member: m }, 103);
  assert.equal(c.phase, 'waiting');
  c.tick(203);
  for (const m of ['a', 'b']) c.handle({ kind: 'ready', member: m, ready: true }, 203);
  c.handle({ kind: 'window-opened', member: 'a' }, 204);
  assert.deepEqual(summary(c.handle({ kind: 'window-opened', member: 'b' }, 204)), ['switch:a@6', 'switch:b@6'], 'then tags grow again');
});

test('a member that says it is out of the group (not-member) is dropped at once and the others switch without it (cycles seed 300163)', () => {
  const c = make(['a', 'b', 'c']);
  c.tick(100);
  c.handle({ kind: 'ready', member: 'a', ready: true }, 101);
  c.handle({ kind: 'ready', member: 'b', ready: true }, 101);
  // Without the drop, c would be asked "ready?" for ever and the group would never switch again.
  const dropped = c.handle({ kind: 'not-member', member: 'c', reason: 'fell back' }, 102);
  // No window is open while polling: the smaller table is stored on the remaining members first
  // (c already knows it is out).
  assert.deepEqual(dropped.map((x) => x.kind === 'dropped' ? `${x.kind}:${x.member}:${x.reason}` : `${x.kind}:${x.member}`),
    ['dropped:c:fell back', 'store-table:a', 'store-table:b']);
  assert.deepEqual(c.members, ['a', 'b']);
  assert.equal(c.phase, 'reconfiguring');
  assert.deepEqual(c.table().members, ['a', 'b']);
  c.handle({ kind: 'table-stored', member: 'a', version: c.table().version }, 104);
  c.handle({ kind: 'table-stored', member: 'b', version: c.table().version }, 104);
  assert.equal(c.phase, 'waiting');
  c.tick(200);
  runSwitch(c, 201, ['a', 'b']);
  assert.equal(c.tag, 2, 'the remaining members switched');
  // A late answer from the dropped member changes nothing.
  assert.deepEqual(c.handle({ kind: 'not-member', member: 'c', reason: 'fell back' }, 202), []);
  assert.deepEqual(c.members, ['a', 'b']);
});

test('a joiner that answers the table with not-member (it fell back meanwhile) is dropped, and the group goes on', () => {
  const c = make(['a']);
  const asked = summary(c.join('j', 10));
  assert.deepEqual(asked, ['store-table:a', 'store-table:j']);
  const version = c.table().version;
  c.handle({ kind: 'table-stored', member: 'a', version }, 11);
  const out = c.handle({ kind: 'not-member', member: 'j', reason: 'fell back' }, 11);
  assert.deepEqual(summary(out).slice(0, 1), ['dropped:j']);
  assert.deepEqual(summary(out).slice(1), ['store-table:a'], 'the table without the joiner is stored next');
  c.handle({ kind: 'table-stored', member: 'a', version: c.table().version }, 12);
  assert.equal(c.phase, 'waiting');
  c.tick(100);
  runSwitch(c, 101, ['a']);
  assert.equal(c.tag, 2);
});

test('a group that cannot switch reports itself stalled with the cause and when it last switched; a switch clears it', () => {
  const c = new GroupCoordinator({ members: ['a', 'b'], tag: 1, cycleMs: 100, retryMs: 10, switchTimeoutMs: 1000, stallAfterMs: 5000, nowMs: 0 });
  c.tick(100);
  runSwitch(c, 100, ['a', 'b']);
  assert.equal(c.lastSwitchAtMs, 100);
  c.tick(200);
  c.handle({ kind: 'ready', member: 'a', ready: true }, 201);
  c.handle({ kind: 'ready', member: 'b', ready: false, reason: 'cycle 7 still transmitting' }, 201);
  assert.equal(c.stall(5099), null, 'not yet: under stallAfterMs since the last switch');
  const stall = c.stall(5100);
  assert.ok(stall, 'stalled after stallAfterMs');
  assert.equal(stall.lastSwitchMs, 100);
  assert.equal(stall.cause, 'polling: waiting for b (not ready: cycle 7 still transmitting)');
  c.handle({ kind: 'ready', member: 'b', ready: true }, 5200);
  c.handle({ kind: 'window-opened', member: 'a' }, 5200);
  c.handle({ kind: 'window-opened', member: 'b' }, 5200);
  c.handle({ kind: 'switched', member: 'a', tag: 3 }, 5201);
  assert.match(c.stall(5201)?.cause ?? '', /^switching: waiting for b \(no answer\)$/);
  c.handle({ kind: 'switched', member: 'b', tag: 3 }, 5202);
  assert.equal(c.stall(5202), null, 'a switch ends the stall');
  // An empty group is idle, not stalled.
  const empty = new GroupCoordinator({ members: [], tag: 1, cycleMs: 100, retryMs: 10, switchTimeoutMs: 1000, stallAfterMs: 10, nowMs: 0 });
  assert.equal(empty.stall(1_000_000), null);
});

test('a member whose window timed out before it switched gets a new window instead of waiting to be evicted', () => {
  const c = make();
  c.tick(100);
  for (const m of ['a', 'b']) c.handle({ kind: 'ready', member: m, ready: true }, 100);
  for (const m of ['a', 'b']) c.handle({ kind: 'window-opened', member: m }, 100);
  c.handle({ kind: 'switched', member: 'a', tag: 2 }, 101);
  const out = c.handle({ kind: 'switch-failed', member: 'b', tag: 2, reason: 'its write window timed out', windowClosed: true }, 101);
  assert.deepEqual(summary(out), ['open-window:b']);
  assert.deepEqual(summary(c.handle({ kind: 'switch-failed', member: 'b', tag: 2, reason: 'not ready' }, 102)), [], 'other failures just wait');
  c.handle({ kind: 'window-opened', member: 'b' }, 103);
  assert.deepEqual(summary(c.tick(112)), ['switch:b@2'], 'the switch is asked again');
  assert.deepEqual(summary(c.handle({ kind: 'switched', member: 'b', tag: 2 }, 113)), ['close-window:a', 'close-window:b']);
  assert.deepEqual(c.members, ['a', 'b'], 'nobody evicted');
});
