import { test } from 'node:test';
import assert from 'node:assert/strict';
import { getU64, setU64 } from '../../src/core/lib/u64.js';

test('u64 words: exact round trip up to 2^53 - 1, the same bytes as BigInt, -1 from 2^53 on', () => {
  const view = new DataView(new ArrayBuffer(8));
  for (const value of [0, 1, 2 ** 32 - 1, 2 ** 32, 2 ** 32 + 1, 2 ** 52 + 3, Number.MAX_SAFE_INTEGER]) {
    setU64(view, 0, value);
    assert.equal(view.getBigUint64(0), BigInt(value), `bytes of ${value}`);
    assert.equal(getU64(view, 0), value);
  }
  for (const big of [2n ** 53n, 2n ** 53n + 1n, 2n ** 64n - 1n]) {
    view.setBigUint64(0, big);
    assert.equal(getU64(view, 0), -1, `${big}`);
  }
  for (const bad of [-1, 0.5, 2 ** 53, Number.NaN]) assert.throws(() => setU64(view, 0, bad), `${bad}`);
});
