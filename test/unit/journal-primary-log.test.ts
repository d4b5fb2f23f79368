// The primary-side journal log: its bytes (a torn or corrupt tail is where reading stops) and its
// replay (entries of granted requests, the pending request, the local redo in log order).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodePrimaryLogSegment, encodePrimaryLogRecord } from '../../src/core/journal/primary-log-codec.js';
import { replayPrimaryLog, type PrimaryLogRecord } from '../../src/core/journal/primary-log.js';
import type { TokenSpec } from '../../src/core/journal/journal-types.js';

const spec = (offset: number, length = 4, secondary = 's0'): TokenSpec => ({ pair: 'p', volume: 'v', offset, length, secondary });
const bytes = (fill: number, n = 4): Uint8Array => new Uint8Array(n).fill(fill);

const records: PrimaryLogRecord[] = [
  { kind: 'request', incarnation: 1, requestId: 1, pieces: [{ spec: spec(0), data: bytes(1) }, { spec: spec(8), data: null }] },
  { kind: 'grant', incarnation: 1, requestId: 1, first: 10, timeMs: 100 },
  { kind: 'request', incarnation: 1, requestId: 2, pieces: [{ spec: spec(4, 4, 's1'), data: bytes(2) }] },
  { kind: 'grant', incarnation: 1, requestId: 2, first: 12, timeMs: 101 },
  { kind: 'request', incarnation: 1, requestId: 3, pieces: [{ spec: spec(0), data: bytes(3) }] },
];

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

test('log records survive encoding; reading stops at a torn or corrupt tail and keeps everything before it', () => {
  const frames = records.map(encodePrimaryLogRecord);
  const all = concat(frames);
  assert.deepEqual(decodePrimaryLogSegment(all).records, records);
  assert.equal(decodePrimaryLogSegment(all).validBytes, all.length);
  const beforeLast = all.length - frames[4]!.length;
  for (const cut of [beforeLast + 1, beforeLast + 12, all.length - 1]) {
    const r = decodePrimaryLogSegment(all.subarray(0, cut));
    assert.deepEqual(r.records, records.slice(0, 4), `cut at ${cut}`);
    assert.equal(r.validBytes, beforeLast);
  }
  const flipped = all.slice();
  flipped[frames[0]!.length + frames[1]!.length + 20]! ^= 0xff; // inside the third record
  assert.deepEqual(decodePrimaryLogSegment(flipped).records, records.slice(0, 2));
  assert.deepEqual(decodePrimaryLogSegment(new Uint8Array(0)).records, []);
});

test('replay: granted requests become entries in sequence order, the last ungranted request is pending, redo follows the log', () => {
  const r = replayPrimaryLog(records);
  assert.deepEqual(r.entries.map((e) => [e.token.sequence, e.token.offset, e.token.secondary, e.token.timeMs, e.data?.[0] ?? null]),
    [[10, 0, 's0', 100, 1], [11, 8, 's0', 100, null], [12, 4, 's1', 101, 2]]);
  assert.deepEqual(r.pending && [r.pending.incarnation, r.pending.requestId, r.pending.pieces.length], [1, 3, 1]);
  assert.deepEqual(r.redo.map((p) => [p.spec.offset, p.data?.[0] ?? null]), [[0, 1], [8, null], [4, 2], [0, 3]]);
  assert.equal(r.highestRequestId, 3);
  // Everything granted: nothing pending; a grant whose request was trimmed away gives nothing.
  const granted = replayPrimaryLog([...records, { kind: 'grant', incarnation: 1, requestId: 3, first: 13, timeMs: 102 }]);
  assert.equal(granted.pending, undefined);
  assert.equal(granted.entries.length, 4);
  assert.equal(replayPrimaryLog(records.slice(1, 2)).entries.length, 0);
});
