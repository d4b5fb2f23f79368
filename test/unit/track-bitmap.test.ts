import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TrackBitmap } from '../../src/core/bitmap/track-bitmap.js';
import { Prng } from '../../src/core/lib/prng.js';

test('set, clear and test single tracks across word boundaries', () => {
  const b = new TrackBitmap(70);
  for (const t of [0, 31, 32, 63, 64, 69]) b.set(t);
  assert.deepEqual(b.toArray(), [0, 31, 32, 63, 64, 69]);
  assert.equal(b.count(), 6);
  b.clear(32);
  assert.equal(b.test(32), false);
  assert.equal(b.test(31), true);
  assert.throws(() => b.set(70), /outside bitmap/);
});

test('ranges, runs and set algebra agree with a boolean-array model', () => {
  const prng = new Prng(42);
  for (let round = 0; round < 200; round++) {
    const size = prng.int(1, 300);
    const a = new TrackBitmap(size);
    const b = new TrackBitmap(size);
    const ma = new Array<boolean>(size).fill(false);
    const mb = new Array<boolean>(size).fill(false);
    for (let i = 0; i < 10; i++) {
      const first = prng.int(0, size - 1);
      const last = prng.int(first, size - 1);
      const [bm, mm] = prng.chance(0.5) ? [a, ma] : [b, mb];
      const value = prng.chance(0.7);
      if (value) bm.setRange(first, last); else bm.clearRange(first, last);
      for (let t = first; t <= last; t++) mm[t] = value;
    }
    assert.deepEqual(a.toArray(), ma.flatMap((v, i) => (v ? [i] : [])));
    assert.equal(a.count(), ma.filter(Boolean).length);
    const runs = [...a.runs()];
    for (const r of runs) {
      assert.ok(r.start < r.end);
      for (let t = r.start; t < r.end; t++) assert.equal(ma[t], true);
      if (r.start > 0) assert.equal(ma[r.start - 1], false);
      if (r.end < size) assert.equal(ma[r.end], false);
    }
    const or = a.copy().or(b);
    const and = a.copy().and(b);
    const andNot = a.copy().andNot(b);
    for (let t = 0; t < size; t++) {
      assert.equal(or.test(t), ma[t]! || mb[t]!);
      assert.equal(and.test(t), ma[t]! && mb[t]!);
      assert.equal(andNot.test(t), ma[t]! && !mb[t]!);
    }
    assert.equal(and.isSubsetOf(a), true);
    const restored = TrackBitmap.fromBytes(size, a.toBytes());
    assert.equal(restored.equals(a), true);
  }
});

test('full bitmaps have no bits past the end', () => {
  for (const size of [1, 31, 32, 33, 64, 65]) {
    const b = TrackBitmap.full(size);
    assert.equal(b.count(), size);
    assert.equal(b.nextClear(0), -1);
    assert.deepEqual([...b.runs()], [{ start: 0, end: size }]);
  }
});

test('count, isEmpty and anyInRange agree with a boolean-array model after every kind of change', () => {
  const prng = new Prng(7);
  for (let round = 0; round < 300; round++) {
    const size = prng.int(1, 200);
    const b = new TrackBitmap(size);
    const m = new Array<boolean>(size).fill(false);
    const other = new TrackBitmap(size);
    const mo = new Array<boolean>(size).fill(false);
    for (let t = 0; t < size; t++) if (prng.chance(0.3)) { other.set(t); mo[t] = true; }
    for (let step = 0; step < 25; step++) {
      const first = prng.int(0, size - 1);
      const last = prng.int(first, size - 1);
      switch (prng.int(0, 8)) {
        case 0: b.set(first); b.set(first); m[first] = true; break; // twice: counted once
        case 1: b.clear(first); b.clear(first); m[first] = false; break;
        case 2: b.setRange(first, last); for (let t = first; t <= last; t++) m[t] = true; break;
        case 3: b.clearRange(first, last); for (let t = first; t <= last; t++) m[t] = false; break;
        case 4: b.or(other); for (let t = 0; t < size; t++) m[t] = m[t]! || mo[t]!; break;
        case 5: b.and(other); for (let t = 0; t < size; t++) m[t] = m[t]! && mo[t]!; break;
        case 6: b.andNot(other); for (let t = 0; t < size; t++) m[t] = m[t]! && !mo[t]!; break;
        case 7: if (prng.chance(0.2)) { b.setAll(); m.fill(true); } break;
        default: if (prng.chance(0.2)) { b.clearAll(); m.fill(false); } break;
      }
      const setCount = m.filter(Boolean).length;
      assert.equal(b.count(), setCount);
      assert.equal(b.isEmpty(), setCount === 0);
      assert.equal(b.copy().count(), setCount);
      assert.equal(TrackBitmap.fromBytes(size, b.toBytes()).count(), setCount);
      const q1 = prng.int(0, size - 1);
      const q2 = prng.int(q1, size - 1);
      assert.equal(b.anyInRange(q1, q2), m.slice(q1, q2 + 1).some(Boolean), `anyInRange(${q1}, ${q2}) of size ${size}`);
    }
  }
});

test('anyInRange: a set track just past the range is not in it; a range past the end is clipped', () => {
  const b = new TrackBitmap(1 << 20);
  b.set((1 << 20) - 1);
  assert.equal(b.anyInRange(0, 1000), false);
  assert.equal(b.anyInRange(0, (1 << 20) - 1), true);
  assert.equal(b.anyInRange((1 << 20) - 1, (1 << 20) + 50), true, 'a range past the end is clipped');
  assert.equal(b.anyInRange(5, 4), false, 'an empty range');
});
