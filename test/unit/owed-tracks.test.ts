// OwedTracks: due times (what an adaptive pair's minimum age counts from) and the tracks owed whole.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { OwedTracks } from '../../src/core/replication/owed-tracks.js';
import { TrackBitmap } from '../../src/core/bitmap/track-bitmap.js';
import { makeGeometry } from '../../src/core/volume/geometry.js';

const TRACK = 64 * 1024;
const fresh = (): OwedTracks => new OwedTracks(makeGeometry(16 * TRACK), new TrackBitmap(16), 0);

test('a written track is due from its oldest unshipped change; rewrites do not postpone it', () => {
  const owed = fresh();
  owed.markWrite(3 * TRACK, 4096, 1000);
  owed.markWrite(3 * TRACK + 8192, 4096, 1900);
  assert.equal(owed.dueBy(3, 999), false);
  assert.equal(owed.dueBy(3, 1000), true, 'due from the first change, not the last');
  const selection = owed.take(3);
  assert.deepEqual(owed.recordsOf(selection), [0, 2]);
  owed.markWrite(3 * TRACK, 4096, 5000);
  assert.equal(owed.dueBy(3, 4999), false, 'a write after the shipment starts a new wait');
});

test('tracks owed whole and shipments given back are due at once', () => {
  const owed = fresh();
  owed.markWhole(5, 6, 1000);
  assert.equal(owed.dueBy(5, 0), true);
  owed.markWrite(8 * TRACK, 4096, 1000);
  owed.markWhole(8, 8, 1000);
  assert.equal(owed.dueBy(8, 0), true, 'marked whole later: no longer waiting');
  owed.markWrite(9 * TRACK, 4096, 1000);
  const taken = owed.take(9);
  owed.markWrite(9 * TRACK + 4096, 4096, 7000);
  owed.giveBack(9, taken, 7001);
  assert.equal(owed.dueBy(9, 0), true, 'a failed shipment was due already: it stays due');
  owed.clearAll();
  owed.markWrite(9 * TRACK, 4096, 8000);
  assert.equal(owed.dueBy(9, 7999), false, 'clearAll forgets old due times');
});

test('tracks owed whole are counted apart from those whose changed records are known', () => {
  const owed = fresh();
  owed.markWhole(0, 4, 0);
  owed.markWrite(8 * TRACK, 4096, 0);
  owed.markWrite(9 * TRACK, 4096, 0);
  assert.equal(owed.count, 7);
  assert.equal(owed.wholeCount, 5);
  owed.markWrite(2 * TRACK, 4096, 0); // already owed whole: stays whole
  owed.markWhole(8, 8, 0); // known records, now owed whole
  assert.equal(owed.wholeCount, 6);
  owed.take(9);
  owed.take(0);
  assert.equal(owed.count, 5);
  assert.equal(owed.wholeCount, 5);
  owed.giveBack(9, Uint32Array.of(1), 0);
  assert.equal(owed.wholeCount, 5, 'a shipment given back with its records is not whole');
});
