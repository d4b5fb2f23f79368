import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ActivityLog, DEFAULT_ACTIVITY_LOG, decodeSlot, encodeSlot, maxExtentsPerSlot, recoverLog, type ActivityLogConfig } from '../../src/core/bitmap/activity-log.js';
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
  assert.deepEqual([...clean.evicted].sort((a, b) => a - b), [2, 9]);
  assert.equal(clean.seq, 4);
  log.durable(clean.seq);
  assert.deepEqual(log.hotExtents(), []);
});

test('evictions follow a least-recently-used model, extents a waiting write needs last', () => {
  for (let seed = 1; seed <= 40; seed++) {
    const prng = new Prng(seed);
    const cfg: ActivityLogConfig = { extentTracks: 1, maxActiveExtents: 16, slotCount: 4, slotBytes: 512 };
    const log = new ActivityLog(cfg);
    // The model: each use stamps an extent; the least recently stamped leave first.
    const stamps = new Map<number, number>();
    let clock = 0;
    let waiting: Array<[number, number]> = [];
    for (let step = 0; step < 400; step++) {
      const first = prng.int(0, 60);
      const last = first + (prng.chance(0.2) ? prng.int(1, 3) : 0);
      if (log.admit(first, last)) {
        for (let e = first; e <= last; e++) stamps.set(e, ++clock);
      } else {
        log.request(first, last);
        waiting.push([first, last]);
      }
      if (!prng.chance(0.3)) continue;
      // Needed: the waiting writes' extents, oldest first, as many whole writes as fit the log.
      const needed = new Set<number>();
      for (const [f, l] of waiting) {
        const more = Array.from({ length: l - f + 1 }, (_, i) => f + i).filter((e) => !needed.has(e));
        if (needed.size + more.length > cfg.maxActiveExtents) break;
        for (const e of more) needed.add(e);
      }
      const txn = log.nextTransaction();
      if (!txn) continue;
      const staying = new Set(txn.extents);
      const expected = [...stamps.keys()].filter((e) => !staying.has(e))
        .sort((a, b) => Number(needed.has(a)) - Number(needed.has(b)) || stamps.get(a)! - stamps.get(b)!);
      assert.deepEqual(txn.evicted, expected, `seed ${seed} step ${step}: evicted least recently used first`);
      const passed = [...stamps.keys()].filter((e) => staying.has(e) && !needed.has(e));
      for (const e of txn.evicted) {
        if (needed.has(e)) continue;
        for (const p of passed) assert.ok(stamps.get(p)! > stamps.get(e)!, `seed ${seed}: ${e} evicted before the older ${p}`);
      }
      log.durable(txn.seq);
      for (const e of txn.evicted) stamps.delete(e);
      for (const e of txn.extents) if (!stamps.has(e)) stamps.set(e, ++clock);
      const still = waiting;
      waiting = [];
      for (const [f, l] of still) {
        if (log.admit(f, l)) for (let e = f; e <= l; e++) stamps.set(e, ++clock);
        else {
          log.request(f, l);
          waiting.push([f, l]);
        }
      }
      assert.deepEqual(log.hotExtents(), [...stamps.keys()].sort((a, b) => a - b));
    }
  }
});

test('a transaction written with its delta counts only while that delta is whole', () => {
  const plain = encodeSlot(7, 4, [1, 2], 512);
  const withDelta = encodeSlot(8, 4, [2, 3], 512, { generation: 5, seq: 3 });
  assert.deepEqual(decodeSlot(withDelta), { seq: 8, extentTracks: 4, extents: [2, 3], delta: { generation: 5, seq: 3 } });
  assert.deepEqual(decodeSlot(plain), { seq: 7, extentTracks: 4, extents: [1, 2] });
  const asked: Array<{ generation: number; seq: number }> = [];
  const whole = recoverLog([plain, withDelta], (ref) => { asked.push(ref); return true; });
  assert.equal(whole?.seq, 8);
  assert.deepEqual(asked, [{ generation: 5, seq: 3 }]);
  assert.deepEqual(recoverLog([plain, withDelta], () => false)?.extents, [1, 2], 'its delta torn: the transaction before it stands');
  const torn = withDelta.slice();
  torn[30] = torn[30]! ^ 1; // in the delta reference
  assert.equal(decodeSlot(torn), undefined, 'the reference is under the checksum');
  assert.equal(maxExtentsPerSlot(4096) >= DEFAULT_ACTIVITY_LOG.maxActiveExtents, true, 'the default hot set fits either layout');
});
