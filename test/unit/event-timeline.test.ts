// The event timeline and the history rings: bounded, cursors that survive overflow and restarts,
// states turned into events, rates from totals.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventTimeline } from '../../src/app/observe/event-timeline.js';
import { SampleRing } from '../../src/app/observe/sample-ring.js';
import { EstateHistory, type WatchedClone, type WatchedPair } from '../../src/app/observe/estate-history.js';
import { kindOf } from '../../src/app/observe/observatory.js';
import { zeroTotals } from '../../src/app/observe/io-counters.js';

test('the timeline keeps the last N events; a cursor past the ring reports what it missed', () => {
  let now = Date.UTC(2026, 11, 3);
  const timeline = new EventTimeline(() => now, 5);
  for (let i = 1; i <= 8; i++) {
    now += 1000;
    timeline.record('pair', `event ${i}`, 'db', { i, blob: 'x'.repeat(600), list: ['a', 'b'], gone: undefined });
  }
  const all = timeline.since(0);
  assert.deepEqual(all.events.map((e) => e.seq), [4, 5, 6, 7, 8]);
  assert.equal(all.missed, 3);
  assert.equal(all.next, 8);
  assert.equal(all.events[0]!.at, new Date(Date.UTC(2026, 11, 3) + 4000).toISOString());
  assert.equal((all.events[0]!.fields.blob as string).length, 501, 'long fields are capped');
  assert.equal(all.events[0]!.fields.list, 'a, b');
  assert.ok(!('gone' in all.events[0]!.fields));
  assert.deepEqual(timeline.since(6).events.map((e) => e.seq), [7, 8]);
  assert.equal(timeline.since(6).missed, 0);
  assert.deepEqual(timeline.since(6, 1).events.map((e) => e.seq), [7]);
  assert.deepEqual(timeline.since(8), { events: [], next: 8, missed: 0 });
  // A cursor from an earlier run of the array (larger than anything now) starts over.
  assert.deepEqual(timeline.since(500).events.map((e) => e.seq), [4, 5, 6, 7, 8]);
});

test('a long poll wakes on the next event, or at its timeout', async () => {
  const timeline = new EventTimeline(() => Date.now(), 10);
  timeline.record('link', 'link to west up', 'west');
  const started = Date.now();
  const waiting = timeline.waitAfter(1, 5000);
  setTimeout(() => timeline.record('link', 'link to west down: gone', 'west'), 20);
  await waiting;
  assert.ok(Date.now() - started < 4000, 'woken by the event, not the timeout');
  assert.equal(timeline.since(1).events[0]!.message, 'link to west down: gone');
  const t0 = Date.now();
  await timeline.waitAfter(2, 50);
  assert.ok(Date.now() - t0 >= 40, 'no event: waits out its timeout');
  await timeline.waitAfter(1, 5000); // an older cursor answers at once
  const pending = timeline.waitAfter(2, 60_000);
  timeline.close(); // the array stops: a waiting reader is answered, a later one at once
  await pending;
  await timeline.waitAfter(2, 60_000);
});

test('event-port messages are sorted by the words they start with', () => {
  assert.equal(kindOf('pair suspend'), 'pair');
  assert.equal(kindOf('replica protected by a clone split before resync'), 'pair');
  assert.equal(kindOf('group member evicted'), 'group');
  assert.equal(kindOf('link to west up'), 'link');
  assert.equal(kindOf('volume created'), 'array');
});

test('a sample ring holds its capacity, oldest first', () => {
  const ring = new SampleRing<number>(3);
  for (let i = 1; i <= 5; i++) ring.push(i);
  assert.deepEqual(ring.toArray(), [3, 4, 5]);
  assert.deepEqual(ring.toArray((n) => n > 3), [4, 5]);
  assert.equal(ring.size, 3);
});

test('the history turns observed state changes into events and keeps worst lag and rates per sample', () => {
  let now = 1_000_000;
  const timeline = new EventTimeline(() => now, 100);
  let pairs: WatchedPair[] = [{ pair: 'db', id: 'east.db.1', peer: 'west', role: 'R1', state: 'synchronizing', lagSeconds: 0, tracksOwed: 10, bytesOwed: 640 * 1024 }];
  let clones: WatchedClone[] = [];
  const io = { ...zeroTotals() };
  let sent = 0;
  const history = new EstateHistory({
    pairs: () => pairs, peers: () => [{ name: 'west', bytesSent: sent, bytesReceived: 0, rttMs: 1.25 }], volumes: () => ['db'],
    io: () => ({ ...io }), clones: () => clones,
  }, { nowMs: () => now, timeline, tickMs: 1000, ticksPerSample: 2, samplesKept: 3 });
  history.tick(); // first look (sample 1: no rate yet)
  assert.equal(timeline.latest, 0, 'the first look is the baseline, not a change');
  now += 1000;
  pairs = [{ ...pairs[0]!, lagSeconds: 7 }];
  history.tick();
  now += 1000;
  pairs = [{ ...pairs[0]!, state: 'synchronized', lagSeconds: 0, tracksOwed: 0, bytesOwed: 0 }];
  io.writeOps += 20;
  io.writeBytes += 20 * 4096;
  sent += 2 * 1024 * 1024;
  clones = [{ std: 'db', clone: 'snap', state: 'synchronizing' }];
  history.tick(); // sample 2
  const events = timeline.since(0).events;
  assert.deepEqual(events.map((e) => e.message), ['pair db: synchronizing → synchronized', 'clone session db/snap: synchronizing']);
  assert.deepEqual(events[0]!.fields, { from: 'synchronizing', to: 'synchronized', role: 'R1', peer: 'west', tracksOwed: 0 });
  const h = history.history();
  assert.equal(h.sampleMs, 2000);
  assert.deepEqual(h.pairs.db!.lagSeconds, [0, 7], 'the spike between samples is kept');
  assert.deepEqual(h.volumes.db!.writeOpsPerSecond, [10]);
  assert.deepEqual(h.volumes.db!.writeBytesPerSecond, [40960]);
  assert.deepEqual(h.peers.west!.sentBytesPerSecond, [1024 * 1024]);
  assert.deepEqual(h.peers.west!.rttMs, [1.25]);
  assert.deepEqual(history.history(1_000_000).pairs.db!.t, [1_002_000], 'sinceMs: only newer samples');
  for (let i = 0; i < 10; i++) { now += 1000; history.tick(); }
  assert.equal(history.history().pairs.db!.t.length, 3, 'bounded by samplesKept');
  clones = [];
  pairs = [];
  history.tick();
  assert.equal(timeline.since(2).events[0]!.message, 'clone session db/snap ended');
  assert.deepEqual(history.history().pairs, {}, 'a deleted pair\'s history goes with it');
  pairs = [{ pair: 'new', id: 'east.new.2', peer: 'west', role: 'R2', state: 'synchronizing', lagSeconds: 0, tracksOwed: 0, bytesOwed: 0 }];
  history.tick();
  assert.equal(timeline.since(3).events[0]!.message, 'pair new: synchronizing', 'a pair made after the start is announced');
});

test('a failing look is reported and sampling goes on; it never throws into the timer', async () => {
  const errors: unknown[] = [];
  let fail = true;
  let looks = 0;
  const history = new EstateHistory({
    pairs: () => {
      looks++;
      if (fail) throw new Error('pair table busy');
      return [];
    },
    peers: () => [], volumes: () => [], io: () => zeroTotals(), clones: () => [],
  }, { nowMs: () => Date.now(), timeline: new EventTimeline(() => Date.now(), 10), tickMs: 10, onError: (e) => errors.push(e) });
  history.start();
  await new Promise((resolve) => setTimeout(resolve, 60));
  fail = false;
  await new Promise((resolve) => setTimeout(resolve, 60));
  history.stop();
  assert.ok(errors.length >= 2, `${errors.length} errors reported`);
  assert.equal((errors[0] as Error).message, 'pair table busy');
  assert.ok(looks > errors.length, 'looked again after the failures');
});
