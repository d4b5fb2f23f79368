import { test } from 'node:test';
import assert from 'node:assert/strict';
import { makeGeometry, tracksOf, trackRange, tracksRange, rangeInside } from '../../src/core/volume/geometry.js';
import { crc32c } from '../../src/core/lib/crc32c.js';
import { decodeRecord, encodeRecord } from '../../src/core/lib/checksummed-record.js';
import { isTidemarkError } from '../../src/core/errors.js';

test('geometry: tracks of 64 KiB made of 4 KiB records, short last track', () => {
  const g = makeGeometry(1024 * 1024 + 4096);
  assert.equal(g.trackCount, 17);
  assert.equal(g.recordsPerTrack, 16);
  assert.deepEqual(trackRange(g, 16), { offset: 1024 * 1024, length: 4096 });
  assert.deepEqual(tracksRange(g, 2, 16), { offset: 2 * 65536, length: 14 * 65536 + 4096 }, 'to the end of the short last track');
  assert.deepEqual(tracksRange(g, 3, 3), trackRange(g, 3));
  assert.deepEqual(tracksOf(g, 65535, 2), { first: 0, last: 1 });
  assert.equal(rangeInside(g, 2n ** 64n - 1n, 2n), false);
  // Numbers take a path without BigInt: the same answers at the edges.
  const size = g.sizeBytes;
  for (const [offset, length, inside] of [[0, size, true], [size, 0, true], [size - 1, 1, true], [size - 1, 2, false], [size, 1, false],
    [-1, 1, false], [0, -1, false], [Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER, false], [1, Number.MAX_SAFE_INTEGER, false],
    [Number.MAX_SAFE_INTEGER + 1, 0, false]] as const) {
    assert.equal(rangeInside(g, offset, length), inside, `${offset}+${length}`);
    if (Number.isSafeInteger(offset) && Number.isSafeInteger(length)) assert.equal(rangeInside(g, BigInt(offset), BigInt(length)), inside, `bigint ${offset}+${length}`);
  }
});

test('geometry rejects bad sizes with a stable error', () => {
  for (const [size, track] of [[0, 65536], [4095, 65536], [8192, 3000], [8192, 2048], [1.5, 65536]] as const) {
    assert.throws(() => makeGeometry(size, track), (e) => isTidemarkError(e, 'TM_ERR_INVALID_ARGUMENT'));
  }
});

test('crc32c matches the standard check value', () => {
  assert.equal(crc32c(new TextEncoder().encode('123456789')), 0xe3069283);
  assert.equal(crc32c(new Uint8Array(0)), 0);
});

test('checksummed records detect every kind of damage', () => {
  const record = encodeRecord(new TextEncoder().encode('{"a":1}'));
  assert.deepEqual(new TextDecoder().decode(decodeRecord(record, 'x')), '{"a":1}');
  for (let i = 0; i < record.length; i++) {
    const damaged = record.slice();
    damaged[i] = damaged[i]! ^ 0x01;
    assert.throws(() => decodeRecord(damaged, 'x'), (e) => isTidemarkError(e, 'TM_ERR_METADATA_CORRUPT'), `byte ${i}`);
  }
  assert.throws(() => decodeRecord(record.subarray(0, record.length - 1), 'x'), /corrupt/);
});
