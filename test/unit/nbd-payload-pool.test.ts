// The NBD server's reused WRITE payload buffers: what comes back, what is handed out again, the cap, poisoning.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PayloadPool } from '../../src/adapters/nbd-server/payload-pool.js';

test('a released buffer is handed out again for the same length; small and huge ones are not pooled', () => {
  const pool = new PayloadPool(1024 * 1024, false);
  const a = pool.acquire(65536);
  // A Buffer's slice() is a view: code that copies a payload's part with slice() must get a copy.
  assert.ok(!Buffer.isBuffer(a), 'a plain Uint8Array');
  pool.release(a);
  assert.equal(pool.heldBytes, 65536);
  assert.equal(pool.acquire(65536), a);
  assert.equal(pool.heldBytes, 0);
  assert.notEqual(pool.acquire(65536), a, 'not handed out twice while out');
  const small = pool.acquire(512);
  pool.release(small);
  assert.equal(pool.heldBytes, 0, 'below 4 KiB: left to the collector');
  const huge = pool.acquire(8 * 1024 * 1024);
  pool.release(huge);
  assert.equal(pool.heldBytes, 0, 'above 4 MiB: left to the collector');
});

test('only buffers that are out come back, once: a foreign buffer or a second release is ignored', () => {
  const pool = new PayloadPool(1024 * 1024, false);
  pool.release(new Uint8Array(8192));
  assert.equal(pool.heldBytes, 0);
  const a = pool.acquire(8192);
  pool.release(a);
  pool.release(a);
  assert.equal(pool.heldBytes, 8192);
  const first = pool.acquire(8192);
  const second = pool.acquire(8192);
  assert.equal(first, a);
  assert.notEqual(second, a, 'a double release must not hand one buffer to two writes');
});

test('the pool holds at most its cap; poisoning overwrites what is given back', () => {
  const pool = new PayloadPool(3 * 65536, true);
  const out = [0, 1, 2, 3].map(() => pool.acquire(65536));
  for (const b of out) b.fill(7);
  for (const b of out) pool.release(b);
  assert.equal(pool.heldBytes, 3 * 65536);
  assert.ok(out.every((b) => b.every((x) => x === 0xdb)), 'every released buffer is poisoned, kept or not');
});
