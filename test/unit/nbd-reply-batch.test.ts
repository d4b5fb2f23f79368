// The batch of small NBD replies one event-loop turn writes together.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ReplyBatch, MAX_BATCHED_FRAME_BYTES } from '../../src/adapters/nbd-server/reply-batch.js';
import { errorReply, successReply } from '../../src/core/nbd/replies.js';

const cookie = (n: number): Uint8Array => new Uint8Array(8).map((_, i) => (n * 31 + i) & 0xff);

test('frames leave in the order added; success replies are encoded as successReply() would', () => {
  const batch = new ReplyBatch();
  assert.equal(batch.take(), undefined, 'nothing to write');
  const error = errorReply(true, cookie(2), 5, 'disk on fire');
  batch.addSuccess(true, cookie(1));
  batch.add(error);
  batch.addSuccess(false, cookie(3));
  const out = batch.take()!;
  assert.deepEqual(new Uint8Array(out), new Uint8Array([...successReply(true, cookie(1)), ...error, ...successReply(false, cookie(3))]));
  assert.equal(batch.empty, true);
  assert.equal(batch.take(), undefined);
});

test('what take() returned stays intact while the batch is reused (the socket may still hold it)', () => {
  const batch = new ReplyBatch();
  batch.addSuccess(false, cookie(7));
  const first = batch.take()!;
  const copy = Uint8Array.from(first);
  batch.addSuccess(false, cookie(8));
  batch.add(new Uint8Array(16).fill(0x55));
  assert.deepEqual(new Uint8Array(first), copy);
});

test('fits() says when to take the batch first; too large a frame or an overfull batch is refused', () => {
  const batch = new ReplyBatch();
  assert.throws(() => batch.add(new Uint8Array(MAX_BATCHED_FRAME_BYTES + 1)), RangeError);
  let added = 0;
  while (batch.fits(20)) {
    batch.addSuccess(true, cookie(added));
    added++;
  }
  assert.ok(added >= 128, `room for a full window of structured success replies (${added})`);
  assert.throws(() => batch.addSuccess(true, cookie(0)), RangeError);
  assert.equal(batch.take()!.length, added * 20);
  assert.equal(batch.fits(20), true);
});
