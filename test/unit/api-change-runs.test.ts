// The change-runs pager of the HTTP API and the error-to-status mapping.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TrackBitmap } from '../../src/core/bitmap/track-bitmap.js';
import { ErrorCode, TidemarkError } from '../../src/core/errors.js';
import { collectRuns } from '../../src/adapters/http/routes.js';
import { httpStatusOf, toTidemarkError } from '../../src/adapters/http/error-status.js';

function bitmap(size: number, tracks: number[]): TrackBitmap {
  const b = new TrackBitmap(size);
  for (const t of tracks) b.set(t);
  return b;
}

test('runs cover every set track, including one that reaches the last track', () => {
  const b = bitmap(100, [0, 1, 2, 40, 63, 64, 97, 98, 99]);
  assert.deepEqual(collectRuns(b, 100, 0, 10), {
    runs: [{ start: 0, end: 3 }, { start: 40, end: 41 }, { start: 63, end: 65 }, { start: 97, end: 100 }],
    nextTrack: null,
  });
});

test('paging: maxRuns cuts the list and nextTrack resumes exactly there', () => {
  const b = bitmap(1000, [5, 6, 300, 999]);
  const first = collectRuns(b, 1000, 0, 2);
  assert.deepEqual(first, { runs: [{ start: 5, end: 7 }, { start: 300, end: 301 }], nextTrack: 999 });
  assert.deepEqual(collectRuns(b, 1000, first.nextTrack!, 2), { runs: [{ start: 999, end: 1000 }], nextTrack: null });
  assert.deepEqual(collectRuns(b, 1000, 6, 10).runs[0], { start: 6, end: 7 }, 'a page may start inside a run');
});

test('empty bitmaps and a start past the end give no runs', () => {
  assert.deepEqual(collectRuns(new TrackBitmap(10), 10, 0, 5), { runs: [], nextTrack: null });
  assert.deepEqual(collectRuns(TrackBitmap.full(10), 10, 10, 5), { runs: [], nextTrack: null });
  assert.deepEqual(collectRuns(TrackBitmap.full(10), 10, 0, 5), { runs: [{ start: 0, end: 10 }], nextTrack: null });
});

test('every error code has an HTTP status; framework errors keep the client/server distinction', () => {
  for (const code of Object.values(ErrorCode)) {
    const status = httpStatusOf(code);
    assert.ok(status >= 400 && status < 600, `${code} → ${status}`);
  }
  assert.equal(httpStatusOf(ErrorCode.NotFound), 404);
  assert.equal(httpStatusOf(ErrorCode.VolumeBusy), 409);
  const invalid = toTidemarkError(Object.assign(new Error('Unexpected end of JSON input'), { statusCode: 400, code: 'FST_ERR_CTP_INVALID_JSON' }));
  assert.equal(invalid.code, ErrorCode.InvalidArgument);
  assert.equal(toTidemarkError(Object.assign(new Error('too big'), { statusCode: 413 })).code, ErrorCode.LimitExceeded);
  assert.equal(toTidemarkError(new TypeError('boom')).code, ErrorCode.Internal);
  const own = new TidemarkError(ErrorCode.AlreadyExists, 'x');
  assert.equal(toTidemarkError(own), own);
});
