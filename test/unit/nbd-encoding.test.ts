// NBD reply encoders, base:allocation descriptors, the errno mapping and the receive queue.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { blockStatusReply, errorReply, fillReadReplyHeader, readReplyHeaderBytes, successReply, utf8Bounded } from '../../src/core/nbd/replies.js';
import { MAX_DESCRIPTORS, statusExtents } from '../../src/core/nbd/block-status.js';
import { nbdErrnoOf, replyErrnoOf } from '../../src/core/nbd/errno.js';
import { ByteQueue } from '../../src/core/nbd/byte-queue.js';
import { ErrorCode, TidemarkError } from '../../src/core/errors.js';
import { hex } from '../helpers/nbd-frames.js';

const cookie = new Uint8Array([0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 7]);

test('simple and structured replies, byte by byte', () => {
  assert.equal(hex(successReply(false, cookie)), '67446698' + '00000000' + 'deadbeef00000007');
  assert.equal(hex(errorReply(false, cookie, 28, 'ignored')), '67446698' + '0000001c' + 'deadbeef00000007');
  assert.equal(hex(successReply(true, cookie)), '668e33ef' + '0001' + '0000' + 'deadbeef00000007' + '00000000');
  assert.equal(hex(errorReply(true, cookie, 1, 'no')),
    '668e33ef' + '0001' + '8001' + 'deadbeef00000007' + '00000008' + '00000001' + '0002' + '6e6f');
  assert.equal(hex(blockStatusReply(cookie, 1, [{ length: 4096, status: 0 }, { length: 512, status: 3 }])),
    '668e33ef' + '0001' + '0005' + 'deadbeef00000007' + '00000014' + '00000001' + '00001000' + '00000000' + '00000200' + '00000003');
});

test('a READ reply is one frame: header filled in front of the data already read', () => {
  for (const structured of [false, true]) {
    const header = readReplyHeaderBytes(structured);
    const frame = new Uint8Array(header + 4).fill(0xaa);
    fillReadReplyHeader(frame, structured, cookie, 0x1234);
    const expected = structured
      ? '668e33ef' + '0001' + '0001' + 'deadbeef00000007' + '0000000c' + '0000000000001234' + 'aaaaaaaa'
      : '67446698' + '00000000' + 'deadbeef00000007' + 'aaaaaaaa';
    assert.equal(hex(frame), expected);
  }
});

test('error messages are cut to 512 bytes without splitting a UTF-8 character', () => {
  const long = 'é'.repeat(1000);
  const bytes = utf8Bounded(long, 511);
  assert.equal(bytes.length, 510);
  assert.equal(new TextDecoder('utf-8', { fatal: true }).decode(bytes), 'é'.repeat(255));
  const reply = errorReply(true, cookie, 5, long);
  assert.ok(reply.length <= 20 + 6 + 512);
});

test('base:allocation: neighbours merge, REQ_ONE gives one descriptor within the request, never an empty answer', () => {
  const runs = [
    { offset: 0, length: 4096, kind: 'data' as const },
    { offset: 4096, length: 4096, kind: 'data' as const },
    { offset: 8192, length: 8192, kind: 'hole' as const },
  ];
  assert.deepEqual(statusExtents(runs, false, 16384), [{ length: 8192, status: 0 }, { length: 8192, status: 3 }]);
  assert.deepEqual(statusExtents(runs, true, 4096), [{ length: 4096, status: 0 }]);
  assert.deepEqual(statusExtents([], false, 512), [{ length: 512, status: 0 }]);
  const huge = statusExtents([{ offset: 0, length: 2 ** 33, kind: 'hole' }], false, 2 ** 32 - 1);
  assert.ok(huge.every((e) => e.length > 0 && e.length <= 0xffff_ffff), 'descriptor lengths fit in u32');
  assert.equal(huge.reduce((sum, e) => sum + e.length, 0), 2 ** 33, 'and together describe the whole run, split');
  const many = Array.from({ length: 5000 }, (_, i) => ({ offset: i * 512, length: 512, kind: i % 2 ? 'hole' as const : 'data' as const }));
  const capped = statusExtents(many, false, 5000 * 512);
  assert.equal(capped.length, MAX_DESCRIPTORS);
  assert.ok(capped.reduce((n, e) => n + e.length, 0) < 5000 * 512, 'a short answer; the client asks again');
});

test('one mapping from errors to NBD errno', () => {
  const tm = (code: (typeof ErrorCode)[keyof typeof ErrorCode]): TidemarkError => new TidemarkError(code, 'x');
  assert.equal(nbdErrnoOf(tm(ErrorCode.VolumeWriteDisabled)), 1);
  assert.equal(nbdErrnoOf(tm(ErrorCode.VolumeNotReady)), 108);
  assert.equal(nbdErrnoOf(tm(ErrorCode.ShuttingDown)), 108);
  assert.equal(nbdErrnoOf(tm(ErrorCode.OutOfRange)), 22);
  assert.equal(nbdErrnoOf(tm(ErrorCode.InvalidArgument)), 22);
  assert.equal(nbdErrnoOf(tm(ErrorCode.NoSpace)), 28);
  assert.equal(nbdErrnoOf(tm(ErrorCode.Unsupported)), 95);
  assert.equal(nbdErrnoOf(tm(ErrorCode.Io)), 5);
  assert.equal(nbdErrnoOf(tm(ErrorCode.LimitExceeded)), 5);
  assert.equal(nbdErrnoOf(Object.assign(new Error('disk full'), { code: 'ENOSPC' })), 28);
  assert.equal(nbdErrnoOf(Object.assign(new Error('quota'), { code: 'EDQUOT' })), 28);
  assert.equal(nbdErrnoOf(Object.assign(new Error('no'), { code: 'EOPNOTSUPP' })), 95);
  assert.equal(nbdErrnoOf(new Error('anything else')), 5);
  assert.equal(nbdErrnoOf('a string'), 5);
  assert.equal(nbdErrnoOf(null), 5);
});

test('ByteQueue: views within a chunk, copies across chunks, moveInto and skip', () => {
  const q = new ByteQueue();
  const first = new Uint8Array([1, 2, 3]);
  q.push(first);
  q.push(new Uint8Array([4, 5]));
  q.push(new Uint8Array([6, 7, 8]));
  const view = q.take(2);
  assert.equal(view.buffer, first.buffer);
  assert.deepEqual([...q.take(2)], [3, 4]);
  const target = new Uint8Array(6);
  assert.equal(q.moveInto(target, 2), 4);
  assert.deepEqual([...target], [0, 0, 5, 6, 7, 8]);
  q.push(new Uint8Array([9, 10]));
  assert.equal(q.skip(10), 2);
  assert.equal(q.length, 0);
});

test('ENOTSUP is only ever the answer to a FAST_ZERO request', () => {
  const unsupported = new TidemarkError(ErrorCode.Unsupported, 'no');
  assert.equal(replyErrnoOf(unsupported, true), 95);
  assert.equal(replyErrnoOf(unsupported, false), 5);
  assert.equal(replyErrnoOf(new TidemarkError(ErrorCode.VolumeWriteDisabled, 'no'), false), 1);
});

test('ByteQueue: a lent chunk is viewed only until its loan ends; takeKept copies out of it', () => {
  const q = new ByteQueue();
  const lent = new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]);
  q.pushLent(lent);
  const view = q.take(2);
  assert.equal(view.buffer, lent.buffer, 'read at once: a view is fine');
  const kept = q.takeKept(3);
  assert.notEqual(kept.buffer, lent.buffer);
  assert.throws(() => q.pushLent(new Uint8Array(1)), RangeError, 'one loan at a time');
  q.endLoan();
  lent.fill(0);
  assert.deepEqual([...kept], [3, 4, 5]);
  assert.deepEqual([...q.take(3)], [6, 7, 8], 'the unread rest was copied when the loan ended');
  const owned = new Uint8Array([9, 9]);
  q.push(owned);
  assert.equal(q.takeKept(2).buffer, owned.buffer, 'an owned chunk is still viewed');
});
