// Crash recovery from the activity log (core/volume/mirror-positions.ts markRecovered): which
// positions the hot extents mark; the record the bitmaps are persisted in.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TrackBitmap } from '../../src/core/bitmap/track-bitmap.js';
import { applyDeltas, decodePositions, encodePositions, evictionDelta, markRecovered, type MirrorPosition } from '../../src/core/volume/mirror-positions.js';

const positions = (): MirrorPosition[] => [
  { id: 'changes', kind: 'change-tracker', marksOn: 'all', invalid: new TrackBitmap(64) },
  { id: 'protection', kind: 'clone-protection', marksOn: 'host', invalid: new TrackBitmap(64) },
  { id: 'own', kind: 'remote-own', marksOn: 'host', invalid: new TrackBitmap(64) },
  { id: 'pull', kind: 'remote-own', marksOn: 'never', invalid: new TrackBitmap(64) },
];
const counts = (ps: MirrorPosition[]): Record<string, number> => Object.fromEntries(ps.map((p) => [p.id, p.invalid.count()]));

test('a volume that was ready: the hot extents mark every position writes mark, an R2\'s own bitmap included', () => {
  const ps = positions();
  markRecovered(ps, [{ first: 8, last: 15 }], true);
  assert.deepEqual(counts(ps), { changes: 8, protection: 8, own: 8, pull: 0 });
});

test('a volume that was not ready (a write-disabled R2): its own bitmap stays as it was, replica-marked positions are marked', () => {
  const ps = positions();
  ps[2]!.invalid.set(40); // an own change persisted earlier stays
  markRecovered(ps, [{ first: 8, last: 15 }], false);
  assert.deepEqual(counts(ps), { changes: 8, protection: 8, own: 1, pull: 0 });
});

test('a positions record carries its generation; one written before generations existed reads as generation 0', () => {
  const bits = new TrackBitmap(40);
  bits.setRange(3, 9);
  const positions: MirrorPosition[] = [{ id: 'changes', kind: 'change-tracker', marksOn: 'all', invalid: bits }];
  const record = encodePositions(positions, { clone: { state: 'x' } }, 12);
  const decoded = decodePositions(record, 40)!;
  assert.equal(decoded.generation, 12);
  assert.deepEqual(decoded.extensions, { clone: { state: 'x' } });
  assert.deepEqual(decoded.positions[0]!.invalid.toArray(), bits.toArray());
  const older = record.subarray(0, record.length - 8); // the layout before generations
  assert.equal(decodePositions(older, 40)!.generation, 0);
  assert.equal(decodePositions(record.subarray(0, record.length - 3), 40), undefined, 'a trailer of the wrong length');
});

test('an eviction delta: the leaving extents\' tracks not yet durable, of the positions recovery marks', () => {
  const ps = positions();
  for (const p of ps) p.invalid.setRange(0, 63); // everything set in memory
  const durable = new Map(ps.map((p) => [p.id, new TrackBitmap(64)]));
  durable.get('changes')!.setRange(8, 11); // already durable there
  const overlay = new TrackBitmap(64);
  ps[1]!.invalid.clear(9); // a copy cleared it before its flush
  overlay.set(9);
  const shape = { extentTracks: 4, trackCount: 62, hostWrites: false };
  const delta = evictionDelta(ps, [15, 2], shape, (id) => (id === 'protection' ? overlay : undefined), (id) => durable.get(id));
  assert.deepEqual(delta, [
    { id: 'changes', runs: [{ start: 60, end: 62 }] }, // extent 2 durable; extent 15 cut at the volume's end
    { id: 'protection', runs: [{ start: 8, end: 12 }, { start: 60, end: 62 }] },
  ], 'an R2\'s own bitmap of a volume not ready and a never-marked position are not recovery\'s');
  assert.deepEqual(evictionDelta(ps, [15, 2], { ...shape, hostWrites: true }, () => undefined, (id) => durable.get(id))!.map((d) => d.id),
    ['changes', 'protection', 'own']);
  durable.delete('own');
  assert.equal(evictionDelta(ps, [2], { ...shape, hostWrites: true }, () => undefined, (id) => durable.get(id)), undefined,
    'a position the record does not hold: only a full persist will do');

  const recovered = positions();
  applyDeltas(recovered, [{ generation: 1, seq: 0, positions: [...delta!, { id: 'gone', runs: [{ start: 1, end: 2 }] }] }]);
  assert.deepEqual(counts(recovered), { changes: 2, protection: 6, own: 0, pull: 0 });
});
