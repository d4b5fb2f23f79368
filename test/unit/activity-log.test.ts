import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ActivityLog, decodeSlot, encodeSlot, leastRecentlyUsed, recoverLog, type ActivityLogConfig } from '../../src/core/bitmap/activity-log.js';
import { Prng } from '../../src/core/lib/prng.js';

const config: ActivityLogConfig = { extentTracks: 4, maxActiveExtents: 16, slotCount: 4, slotBytes: 512 };

test('a write to a cold extent waits for a durable transaction; hot writes pass', () => {
  const log = new ActivityLog(config);
  assert.equal(log.admit(0, 1), false);
  log.request(0, 1);
  const txn = log.nextTransaction();
  assert.ok(txn);
  assert.deepEqual(txn.extents, [0]);
  assert.equal(log.admit(0, 1), false, 'not hot until durable');
  log.durable(txn.seq);
  assert.equal(log.admit(0, 3), true);
  assert.equal(log.admit(3, 4), false, 'track 4 is in extent 1');
});

test('requests made while a transaction is in flight are grouped into the next one', () => {
  const log = new ActivityLog(config);
  log.request(0, 0);
  const first = log.nextTransaction()!;
  log.request(8, 8);
  log.request(12, 12);
  assert.equal(log.nextTransaction(), undefined, 'one transaction in flight at a time');
  log.durable(first.seq);
  const second = log.nextTransaction()!;
  assert.deepEqual(second.extents, [0, 2, 3]);
  assert.deepEqual(second.evicted, []);
});

test('the least recently used extent is evicted, and writes to it wait while it leaves', () => {
  const log = new ActivityLog(config);
  for (let e = 0; e < 16; e++) {
    log.request(e * 4, e * 4);
    const t = log.nextTransaction()!;
    log.durable(t.seq);
  }
  for (let e = 1; e < 16; e++) assert.equal(log.admit(e * 4, e * 4), true);
  log.request(16 * 4, 16 * 4);
  const t = log.nextTransaction()!;
  assert.deepEqual(t.evicted, [0], 'extent 0 was used least recently');
  assert.equal(t.extents.length, 16);
  assert.equal(log.admit(0, 0), false, 'a leaving extent is not hot');
  log.durable(t.seq);
  assert.deepEqual(log.hotExtents().includes(0), false);
});

test('slots round-trip, torn slots are rejected, recovery takes the newest valid slot', () => {
  const a = encodeSlot(7, 4, [1, 2, 3], 512);
  const b = encodeSlot(8, 4, [5], 512);
  assert.deepEqual(decodeSlot(a), { seq: 7, extentTracks: 4, extents: [1, 2, 3] });
  const torn = b.slice();
  torn[40] = torn[40]! ^ 0xff;
  assert.equal(decodeSlot(torn), undefined);
  assert.deepEqual(recoverLog([a, torn, new Uint8Array(512)])?.extents, [1, 2, 3]);
  assert.deepEqual(recoverLog([a, b])?.extents, [5]);
  assert.equal(recoverLog([new Uint8Array(512)]), undefined);
});

test('a clean transaction empties the hot set', () => {
  const log = new ActivityLog(config, { seq: 3, extentTracks: 4, extents: [2, 9] });
  assert.equal(log.admit(8, 8), true);
  const clean = log.cleanTransaction();
  assert.deepEqual(clean.extents, []);
  assert.deepEqual(clean.evicted, [2, 9]);
  assert.equal(clean.seq, 4);
  log.durable(clean.seq);
  assert.deepEqual(log.hotExtents(), []);
});

test('eviction picks the least recently used extents, those a waiting write needs last, ties in order', () => {
  const prng = new Prng(5);
  for (let round = 0; round < 300; round++) {
    const n = prng.int(1, 60);
    const extents = Uint32Array.from({ length: n }, (_, i) => i * 3 + prng.int(0, 2));
    const used = Float64Array.from({ length: n }, () => prng.int(0, 10));
    const needed = new Set(Array.from(extents).filter(() => prng.chance(0.2)));
    const count = prng.int(0, n);
    const reference = Array.from(extents.keys())
      .sort((a, b) => Number(needed.has(extents[a]!)) - Number(needed.has(extents[b]!)) || used[a]! - used[b]! || a - b)
      .slice(0, count).map((i) => extents[i]!);
    assert.deepEqual(leastRecentlyUsed(extents, used, count, (e) => needed.has(e)), reference);
  }
});
