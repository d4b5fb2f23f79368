import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DeltaRing, decodeDelta, deltasOf, encodeDelta, newlySetRuns, type BitmapDelta } from '../../src/core/bitmap/bitmap-deltas.js';
import { encodeSlot } from '../../src/core/bitmap/activity-log.js';
import { TrackBitmap } from '../../src/core/bitmap/track-bitmap.js';
import { Prng } from '../../src/core/lib/prng.js';

const delta: BitmapDelta = {
  generation: 7,
  seq: 2,
  positions: [
    { id: 'changes', runs: [{ start: 0, end: 3 }, { start: 64, end: 65 }] },
    { id: 'pair:döt', runs: [{ start: 100, end: 164 }] },
  ],
};

test('a delta decodes to what was encoded; a torn, foreign or out-of-range slot does not decode', () => {
  const bytes = encodeDelta(delta, 4096)!;
  assert.equal(bytes.length, 4096);
  assert.deepEqual(decodeDelta(bytes, 1000), delta);
  for (const at of [0, 5, 9, 17, 30, 4095]) {
    const torn = bytes.slice();
    torn[at] = torn[at]! ^ 0x40;
    assert.equal(decodeDelta(torn, 1000), undefined, `byte ${at} flipped`);
  }
  assert.equal(decodeDelta(new Uint8Array(4096), 1000), undefined, 'a never-written slot');
  assert.equal(decodeDelta(encodeSlot(3, 64, [1, 2], 4096), 1000), undefined, 'an activity-log slot');
  assert.equal(decodeDelta(bytes, 150), undefined, 'a run past the volume');
});

test('a delta that does not fit its slot is not encoded', () => {
  const runs = Array.from({ length: 100 }, (_, i) => ({ start: i * 2, end: i * 2 + 1 }));
  assert.equal(encodeDelta({ generation: 1, seq: 0, positions: [{ id: 'changes', runs }] }, 512), undefined);
  assert.ok(encodeDelta({ generation: 1, seq: 0, positions: [{ id: 'changes', runs }] }, 4096));
});

test('only the deltas of the base generation count', () => {
  const slots = [encodeDelta({ ...delta, generation: 6 }, 512)!, encodeDelta(delta, 512)!, new Uint8Array(512), encodeDelta({ ...delta, seq: 3 }, 512)!];
  assert.deepEqual(deltasOf(7, slots, 1000).map((d) => d.seq), [2, 3]);
  assert.deepEqual(deltasOf(8, slots, 1000), []);
});

test('newly set runs: tracks of the ranges set in memory or the overlay and not yet durable, merged', () => {
  const bits = new TrackBitmap(256);
  const extra = new TrackBitmap(256);
  const durable = new TrackBitmap(256);
  bits.setRange(0, 9);
  durable.setRange(4, 5);
  extra.set(12);
  bits.setRange(13, 20);
  bits.set(100); // outside the ranges
  bits.setRange(62, 66); // across two adjacent ranges: one run
  const ranges = [{ first: 0, last: 15 }, { first: 48, last: 63 }, { first: 64, last: 79 }];
  assert.deepEqual(newlySetRuns(ranges, bits, extra, durable), [
    { start: 0, end: 4 }, { start: 6, end: 10 }, { start: 12, end: 16 }, { start: 62, end: 67 },
  ]);
  assert.deepEqual(newlySetRuns(ranges, new TrackBitmap(256), undefined, durable), []);
});

test('newly set runs match a track-by-track model', () => {
  const prng = new Prng(11);
  for (let round = 0; round < 200; round++) {
    const size = prng.int(1, 300);
    const [bits, extra, durable] = [0, 1, 2].map(() => {
      const b = new TrackBitmap(size);
      for (let i = prng.int(0, size); i > 0; i--) b.set(prng.int(0, size - 1));
      return b;
    }) as [TrackBitmap, TrackBitmap, TrackBitmap];
    const ranges: Array<{ first: number; last: number }> = [];
    for (let t = prng.int(0, 8); t < size; t += prng.int(1, 40)) {
      const last = Math.min(size - 1, t + prng.int(0, 20));
      ranges.push({ first: t, last });
      t = last + 1;
    }
    const expected: number[] = [];
    for (const r of ranges) for (let t = r.first; t <= r.last; t++) if ((bits.test(t) || extra.test(t)) && !durable.test(t)) expected.push(t);
    const runs = newlySetRuns(ranges, bits, extra, durable);
    assert.deepEqual(runs.flatMap((r) => Array.from({ length: r.end - r.start }, (_, i) => r.start + i)), expected);
    for (let i = 1; i < runs.length; i++) assert.ok(runs[i]!.start > runs[i - 1]!.end, 'runs are maximal');
  }
});

test('the ring: deltas until it is full, then a full persist starts the next generation', () => {
  const ring = new DeltaRing(2, 5);
  assert.equal(ring.baseGeneration, 5);
  assert.equal(ring.nextDelta(), 0);
  ring.deltaDone();
  assert.equal(ring.nextDelta(), 1);
  ring.deltaSkipped(); // did not fit: the slot stays free
  assert.equal(ring.nextDelta(), 1);
  ring.deltaDone();
  assert.equal(ring.nextDelta(), undefined, 'full: persist everything');
  const generation = ring.fullStarted();
  assert.equal(generation, 6);
  ring.fullDone(generation);
  assert.equal(ring.baseGeneration, 6);
  assert.equal(ring.nextDelta(), 0);
  ring.deltaDone();
});

test('the ring: after a failed full persist no delta is written until one succeeds, and no generation is reused', () => {
  const ring = new DeltaRing(4, 1);
  const failed = ring.fullStarted();
  ring.fullFailed();
  assert.equal(ring.nextDelta(), undefined, 'the base on disk may be generation 1 or 2');
  assert.equal(ring.baseGeneration, 1);
  const next = ring.fullStarted();
  assert.ok(next > failed, 'a generation that may be on disk is never written again');
  ring.fullDone(next);
  assert.equal(ring.nextDelta(), 0);
  ring.deltaFailed();
  assert.equal(ring.nextDelta(), undefined, 'a failed delta write: persist everything');
});

test('no delta slots: every eviction persists everything', () => {
  assert.equal(new DeltaRing(0, 0).nextDelta(), undefined);
});
