// The core NBD machine in transmission: request framing, lazy decoding and every validation rule.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NbdConnection, type ExportDirectory, type ExportInfo, type NbdAction } from '../../src/core/nbd/connection.js';
import { Prng } from '../../src/core/lib/prng.js';
import { clientFlags, concat, drain, feed, infoData, metaData, option, request, summary } from '../helpers/nbd-frames.js';

const MiB = 1024 * 1024;
const SIZE = 8 * MiB;
const EPERM = 1;
const EINVAL = 22;
const ENOSPC = 28;
const EOVERFLOW = 75;
const READ = 0, WRITE = 1, DISC = 2, FLUSH = 3, TRIM = 4, CACHE = 5, WRITE_ZEROES = 6, BLOCK_STATUS = 7;
const FUA = 0x01, NO_HOLE = 0x02, DF = 0x04, REQ_ONE = 0x08, FAST_ZERO = 0x10;

function exportOf(overrides: Partial<ExportInfo> = {}): ExportDirectory {
  const info: ExportInfo = { name: 'vol', sizeBytes: SIZE, readOnly: false, canFastZero: true, description: '', ...overrides };
  return { list: () => [info], lookup: (name) => (name === 'vol' ? { kind: 'found', info } : { kind: 'unknown' }) };
}

/** A connection already in transmission (structured replies and base:allocation unless `simple`). */
function transmitting(options: { simple?: boolean; info?: Partial<ExportInfo>; allocatePayload?: (n: number) => Uint8Array } = {}): NbdConnection {
  const c = new NbdConnection(exportOf(options.info), { tls: 'off', ...(options.allocatePayload ? { allocatePayload: options.allocatePayload } : {}) });
  const handshake = options.simple
    ? concat(clientFlags(3), option(7, infoData('vol')))
    : concat(clientFlags(3), option(8), option(10, metaData('vol', ['base:allocation'])), option(7, infoData('vol')));
  const actions = feed(c, handshake);
  assert.equal(actions[actions.length - 1]!.kind, 'transmission');
  return c;
}

/** In transmission after GO asked for NBD_INFO_BLOCK_SIZE: the client promised to keep within 32 MiB. */
function negotiated(info: Partial<ExportInfo> = {}): NbdConnection {
  const c = new NbdConnection(exportOf(info));
  const actions = feed(c, concat(clientFlags(3), option(8), option(7, infoData('vol', [3]))));
  assert.equal(actions[actions.length - 1]!.kind, 'transmission');
  return c;
}

const payload = (n: number, fill: number): Uint8Array => new Uint8Array(n).fill(fill);
const errnoOf = (actions: NbdAction[]): Array<number | string> =>
  actions.map((a) => (a.kind === 'command' ? (a.command.type === 'invalid' ? a.command.errno : a.command.type) : a.kind));

test('requests split anywhere or packed together decode identically (seeded random splits)', () => {
  const stream = concat(
    request(WRITE, 0xfedcba9876543210n, 4096, 10, FUA), payload(10, 5),
    request(READ, 2n, 0, 8), request(FLUSH, 3n, 0, 0), request(42, 4n, 0, 0),
    request(WRITE, 5n, SIZE - 4, 8), payload(8, 1), // refused (ENOSPC): payload consumed
    request(WRITE_ZEROES, 6n, 0, 4096, NO_HOLE | FUA), request(TRIM, 7n, 512, 512), request(CACHE, 8n, 0, 4096),
    request(BLOCK_STATUS, 9n, 0, 4096, REQ_ONE), request(WRITE, 10n, 0, 3000), payload(3000, 9), request(DISC, 11n, 0, 0),
    request(READ, 12n, 0, 8), // after DISC: ignored
  );
  const whole = summary(feed(transmitting(), stream));
  assert.deepEqual(whole.map((s) => s.split(':')[0]), [
    'write', 'read', 'flush', 'invalid', 'invalid', 'write-zeroes', 'trim', 'cache', 'block-status', 'write', 'disconnect',
  ]);
  assert.equal(whole[0], `write:fedcba9876543210:4096:${'05'.repeat(10)}:true`, 'cookie echoed as all 8 bytes');
  assert.deepEqual(summary(feed(transmitting(), stream, new Array(stream.length).fill(1))), whole);
  const prng = new Prng(20261122);
  for (let run = 0; run < 50; run++) {
    const pieces: number[] = [];
    for (let left = stream.length; left > 0;) {
      const size = Math.min(left, prng.int(1, 200));
      pieces.push(size);
      left -= size;
    }
    assert.deepEqual(summary(feed(transmitting(), stream, pieces)), whole, `split ${pieces.join(',')}`);
  }
});

test('decoding is lazy: poll() yields one command at a time and leaves the rest as bytes', () => {
  const c = transmitting();
  for (let i = 0; i < 10; i++) c.receive(request(READ, BigInt(i), i * 512, 512));
  assert.equal(c.bufferedBytes, 280);
  const first = c.poll();
  assert.ok(first?.kind === 'command' && first.command.type === 'read' && first.command.offset === 0);
  assert.equal(c.bufferedBytes, 252, 'only one request was decoded');
  assert.equal(drain(c).length, 9);
  assert.equal(c.poll(), undefined);
});

test('a WRITE payload is assembled as it arrives; a view when it comes in one piece', () => {
  const c = transmitting();
  c.receive(request(WRITE, 1n, 0, 100_000));
  assert.deepEqual(drain(c), []);
  for (let at = 0; at < 100_000; at += 7000) c.receive(payload(Math.min(7000, 100_000 - at), at / 7000));
  const [write] = drain(c);
  assert.ok(write?.kind === 'command' && write.command.type === 'write');
  assert.equal(write.command.data.length, 100_000);
  assert.equal(write.command.data[99_999], 14);
  const chunk = concat(request(WRITE, 2n, 0, 4096), payload(4096, 3));
  c.receive(chunk);
  const [view] = drain(c);
  assert.ok(view?.kind === 'command' && view.command.type === 'write');
  assert.equal(view.command.data.buffer, chunk.buffer, 'no copy');
});

test('a payload gathered into an uninitialised buffer: every byte is the client\'s, whichever way it arrives', () => {
  // The adapter may hand out memory holding anything (Buffer.allocUnsafeSlow): garbage here.
  const allocated: number[] = [];
  const c = transmitting({ allocatePayload: (n) => { allocated.push(n); return new Uint8Array(n).fill(0xee); } });
  const prng = new Prng(7);
  const data = new Uint8Array(150_000).map((_, i) => (i * 7 + 1) & 0x7f);
  const frame = concat(request(WRITE, 1n, 0, data.length), data, request(WRITE, 2n, 4096, 5000), data.subarray(0, 5000));
  for (let at = 0; at < frame.length;) {
    const n = prng.int(1, 40_000);
    c.receive(frame.slice(at, at + n));
    at += n;
  }
  const writes = drain(c).flatMap((a) => (a.kind === 'command' && a.command.type === 'write' ? [a.command.data] : []));
  assert.equal(writes.length, 2);
  assert.deepEqual([...writes[0]!], [...data]);
  assert.deepEqual([...writes[1]!], [...data.subarray(0, 5000)]);
  assert.ok(allocated.length > 0, 'the payloads were gathered into allocated buffers');
});

test('a refused WRITE payload is dropped as it arrives, never buffered whole', () => {
  const c = transmitting({ info: { readOnly: true } });
  c.receive(request(WRITE, 1n, 0, 4 * MiB));
  assert.deepEqual(drain(c), []);
  for (let i = 0; i < 64; i++) {
    c.receive(payload(64 * 1024, 1));
    const actions = drain(c);
    assert.equal(c.bufferedBytes, 0);
    if (i < 63) assert.deepEqual(actions, []);
    else assert.deepEqual(errnoOf(actions), [EPERM]);
  }
  assert.deepEqual(errnoOf(feed(c, request(READ, 2n, 0, 512))), ['read'], 'still framed');
});

test('out-of-range requests: READ/TRIM/CACHE/BLOCK_STATUS get EINVAL, WRITE/WRITE_ZEROES get ENOSPC', () => {
  const c = transmitting();
  const actions = feed(c, concat(
    request(READ, 1n, SIZE - 100, 4096),
    request(READ, 2n, 0xffff_ffff_ffff_f000n, 8192), // offset + length overflows 64 bits
    request(READ, 3n, 2n ** 60n, 1), // beyond 2^53
    request(TRIM, 4n, SIZE, 1),
    request(CACHE, 5n, SIZE, 1),
    request(BLOCK_STATUS, 6n, SIZE, 1),
    request(WRITE_ZEROES, 7n, SIZE - 1, 2),
    request(WRITE, 8n, SIZE, 1), payload(1, 0),
    request(READ, 9n, SIZE - 512, 512), // exactly at the end: fine
    request(READ, 10n, SIZE, 0),
  ));
  assert.deepEqual(errnoOf(actions), [EINVAL, EINVAL, EINVAL, EINVAL, EINVAL, EINVAL, ENOSPC, ENOSPC, 'read', 'read']);
});

test('offsets near 2^53 against an export of 2^53 - 1 bytes: exact at the end, refused past it', () => {
  const size = Number.MAX_SAFE_INTEGER;
  const c = transmitting({ info: { sizeBytes: size } });
  const top = 2n ** 53n;
  const actions = feed(c, concat(
    request(READ, 1n, top - 4096n, 4095), // ends at 2^53 - 1: the last byte of the export
    request(READ, 2n, top - 4096n, 4096), // one byte past it
    request(READ, 3n, top, 1), // the first offset with no exact JS number
    request(READ, 4n, top - 1n, 0), // at the end, empty
  ));
  assert.deepEqual(errnoOf(actions), ['read', EINVAL, EINVAL, 'read']);
  const first = actions[0]!;
  assert.ok(first.kind === 'command' && first.command.type === 'read' && first.command.offset === Number(top - 4096n));
});

test('a client that negotiated block sizes: READ over 32 MiB is EINVAL, WRITE over 32 MiB is EINVAL after its payload is dropped', () => {
  const c = negotiated({ sizeBytes: 1024 * MiB });
  assert.deepEqual(errnoOf(feed(c, request(READ, 1n, 0, 32 * MiB + 1))), [EINVAL]);
  assert.deepEqual(errnoOf(feed(c, request(READ, 2n, 0, 32 * MiB))), ['read']);
  const oversize = 32 * MiB + 1;
  assert.deepEqual(errnoOf(feed(c, concat(request(WRITE, 3n, 0, oversize), payload(oversize, 7), request(FLUSH, 4n, 0, 0)))), [EINVAL, 'flush']);
  assert.equal(c.bufferedBytes, 0, 'the refused payload was dropped, not kept');
  const small = transmitting();
  assert.deepEqual(errnoOf(feed(small, request(WRITE, 5n, 0, 32 * MiB + 1))), ['close'], 'longer than the export and 32 MiB: closed unread');
});

test('without block-size negotiation, requests up to the export size are accepted; a long WRITE streams in 4 MiB pieces', () => {
  const size = 64 * MiB;
  const c = transmitting({ info: { sizeBytes: size } });
  assert.deepEqual(errnoOf(feed(c, request(READ, 1n, 0, size))), ['read'], 'a whole-export READ');
  assert.deepEqual(errnoOf(feed(c, request(READ, 2n, 0, size, DF))), [EOVERFLOW], 'DF: one chunk is at most 32 MiB');
  const length = 50 * 1000 * 1000; // the "single 50 MB write"
  const data = new Uint8Array(length);
  for (let i = 0; i < length; i += 4096) data[i] = (i / 4096) & 0xff;
  // Fed in 1 MiB chunks, as a socket delivers it: every piece is emitted as soon as it is complete,
  // so no buffer larger than a piece exists at any time.
  const actions: NbdAction[] = feed(c, concat(request(WRITE, 3n, 4096, length, FUA), data), new Array(60).fill(MiB));
  const writes = actions.map((a) => (a.kind === 'command' && a.command.type === 'write' ? a.command : undefined)).filter((w) => w !== undefined);
  assert.equal(writes.length, Math.ceil(length / (4 * MiB)));
  let at = 4096;
  writes.forEach((w, i) => {
    assert.equal(w.offset, at);
    assert.ok(w.data.length <= 4 * MiB);
    assert.deepEqual(w.piece, { stream: 1, last: i === writes.length - 1 });
    assert.equal(w.fua, true);
    assert.equal(Buffer.from(w.cookie).readBigUInt64BE(), 3n);
    assert.deepEqual(w.data.subarray(0, 1), data.subarray(at - 4096, at - 4096 + 1));
    at += w.data.length;
  });
  assert.equal(at - 4096, length, 'the pieces cover the write exactly');
  assert.equal(Buffer.compare(Buffer.concat(writes.map((w) => w.data)), Buffer.from(data)), 0);
  // Framing continues after the stream; a 32 MiB write is still one command.
  const after = feed(c, concat(request(WRITE, 4n, 0, 32 * MiB), payload(32 * MiB, 1), request(READ, 5n, 0, 512)));
  assert.deepEqual(summary(after).map((x) => x.split(':')[0]), ['write', 'read']);
  assert.equal((after[0] as { command: { piece?: unknown } }).command.piece, undefined);
});

test('flags: unknown bits and flags foreign to a command get EINVAL; FUA is accepted everywhere', () => {
  const c = transmitting();
  const fuaEverywhere = feed(c, concat(
    request(READ, 1n, 0, 512, FUA), request(FLUSH, 2n, 0, 0, FUA), request(CACHE, 3n, 0, 512, FUA),
    request(BLOCK_STATUS, 4n, 0, 512, FUA | REQ_ONE), request(TRIM, 5n, 0, 512, FUA), request(WRITE_ZEROES, 6n, 0, 512, FUA),
    request(READ, 7n, 0, 512, DF),
  ));
  assert.deepEqual(errnoOf(fuaEverywhere), ['read', 'flush', 'cache', 'block-status', 'trim', 'write-zeroes', 'read']);
  const bad = feed(c, concat(
    request(READ, 1n, 0, 512, 0x8000), request(READ, 2n, 0, 512, NO_HOLE), request(FLUSH, 3n, 0, 0, DF),
    request(TRIM, 4n, 0, 512, NO_HOLE), request(CACHE, 5n, 0, 512, REQ_ONE), request(BLOCK_STATUS, 6n, 0, 512, DF),
    request(WRITE_ZEROES, 7n, 0, 512, DF), request(WRITE, 8n, 0, 4, NO_HOLE), payload(4, 0), request(42, 9n, 0, 0),
    request(READ, 10n, 0, 512, 0x20),
  ));
  assert.deepEqual(errnoOf(bad), new Array(10).fill(EINVAL));
});

test('DF needs structured replies; FAST_ZERO needs to have been advertised; BLOCK_STATUS needs a context and a length', () => {
  const simple = transmitting({ simple: true });
  assert.deepEqual(errnoOf(feed(simple, concat(request(READ, 1n, 0, 512, DF), request(BLOCK_STATUS, 2n, 0, 512)))), [EINVAL, EINVAL]);
  const noFastZero = transmitting({ info: { canFastZero: false } });
  assert.deepEqual(errnoOf(feed(noFastZero, request(WRITE_ZEROES, 1n, 0, 512, FAST_ZERO))), [EINVAL]);
  const c = transmitting();
  const zero = feed(c, concat(request(WRITE_ZEROES, 1n, 0, 512, FAST_ZERO | NO_HOLE), request(BLOCK_STATUS, 2n, 0, 0)));
  assert.deepEqual(errnoOf(zero), ['write-zeroes', EINVAL]);
  assert.ok(zero[0]?.kind === 'command' && zero[0].command.type === 'write-zeroes' && zero[0].command.fastZero && zero[0].command.noHole);
});

test('a read-only export refuses WRITE, TRIM and WRITE_ZEROES with EPERM and serves READ and CACHE', () => {
  const c = transmitting({ info: { readOnly: true } });
  const actions = feed(c, concat(
    request(WRITE, 1n, 0, 512), payload(512, 1), request(TRIM, 2n, 0, 512), request(WRITE_ZEROES, 3n, 0, 512),
    request(READ, 4n, 0, 512), request(CACHE, 5n, 0, 512), request(WRITE, 6n, SIZE, 8), payload(8, 0),
  ));
  assert.deepEqual(errnoOf(actions), [EPERM, EPERM, EPERM, 'read', 'cache', EPERM]);
});

test('a bad request magic closes the connection', () => {
  const c = transmitting();
  const garbage = request(READ, 1n, 0, 512);
  garbage[0] = 0x12;
  assert.deepEqual(errnoOf(feed(c, concat(request(READ, 0n, 0, 512), garbage, request(READ, 2n, 0, 512)))), ['read', 'close']);
  assert.equal(c.ended, true);
});

test('reads into one reused buffer (receiveLent) or straight into the payload (payloadSpace): the same commands, nothing kept points into the buffer (seeded)', () => {
  const prng = new Prng(20261204);
  const big = new Uint8Array(300_000).map((_, i) => (i * 13 + 5) & 0xff);
  const stream = concat(
    request(WRITE, 1n, 0, 4096), payload(4096, 1), request(READ, 2n, 0, 512),
    request(WRITE, 3n, 8192, big.length), big, request(FLUSH, 4n, 0, 0),
    request(WRITE, 5n, 4096, 10), payload(10, 7), request(WRITE, 6n, 0, 70_000), big.subarray(0, 70_000),
    request(WRITE, 7n, 4096, 4096), payload(4096, 9), request(DISC, 8n, 0, 0),
  );
  const expected = summary(feed(transmitting(), stream));
  for (let round = 0; round < 20; round++) {
    const c = transmitting({ allocatePayload: (n) => new Uint8Array(n).fill(0xee) });
    const scratch = new Uint8Array(64 * 1024);
    const actions: NbdAction[] = [];
    let direct = 0;
    for (let at = 0; at < stream.length;) {
      const space = c.payloadSpace();
      const into = space !== undefined && prng.int(0, 1) === 1 ? space : scratch;
      // Sometimes only what the next header lacks, as the adapter reads after a large write.
      const header = into === scratch && prng.int(0, 2) === 0 ? c.requestHeaderMissing() : undefined;
      const n = Math.min(stream.length - at, into.length, header ?? prng.int(1, 50_000));
      into.set(stream.subarray(at, at + n));
      at += n;
      if (into === scratch) {
        c.receiveLent(scratch.subarray(0, n));
        actions.push(...drain(c));
        c.endLoan();
        scratch.fill(0xab); // the adapter's next read overwrites it
      } else {
        direct++;
        c.payloadFilled(n);
        actions.push(...drain(c));
      }
    }
    assert.deepEqual(summary(actions), expected, `round ${round}`);
    if (round === 0) assert.ok(direct > 0, 'some reads went straight into a payload');
  }
});

test('requestHeaderMissing: what the next request header lacks, only while one is awaited and nothing else is queued', () => {
  const handshaking = new NbdConnection(exportOf());
  assert.equal(handshaking.requestHeaderMissing(), undefined, 'not in transmission');
  const c = transmitting();
  assert.equal(c.requestHeaderMissing(), 28);
  const first = concat(request(WRITE, 1n, 0, 100_000), payload(100_000, 4));
  c.receive(first.subarray(0, 10));
  assert.deepEqual(drain(c), []);
  assert.equal(c.requestHeaderMissing(), 18);
  c.receive(first.subarray(10, 28));
  assert.equal(c.requestHeaderMissing(), undefined, 'a whole header is queued, not yet decoded');
  assert.deepEqual(drain(c), []);
  assert.equal(c.requestHeaderMissing(), undefined, 'a payload is awaited');
  c.payloadSpace()!.set(first.subarray(28));
  c.payloadFilled(100_000);
  const [write] = drain(c);
  assert.ok(write?.kind === 'command' && write.command.type === 'write' && write.command.data.every((b) => b === 4));
  assert.equal(c.requestHeaderMissing(), 28);
  assert.deepEqual(summary(feed(c, request(DISC, 2n, 0, 0))), ['disconnect']);
  assert.equal(c.requestHeaderMissing(), undefined, 'ended');
});

test('payloadSpace: only while a payload is being gathered and nothing else is queued; payloadFilled checks its count', () => {
  const c = transmitting();
  assert.equal(c.payloadSpace(), undefined, 'waiting for a request header');
  c.receive(concat(request(WRITE, 1n, 0, 100_000), payload(1000, 4)));
  assert.equal(c.payloadSpace(), undefined, 'header not yet decoded');
  assert.deepEqual(drain(c), []);
  const space = c.payloadSpace()!;
  assert.equal(space.length, 99_000);
  assert.throws(() => c.payloadFilled(99_001), RangeError);
  space.fill(4, 0, 500);
  c.payloadFilled(500);
  c.receive(payload(10, 4));
  assert.equal(c.payloadSpace(), undefined, 'received bytes are queued: they come first');
  assert.throws(() => c.payloadFilled(1), RangeError);
  assert.deepEqual(drain(c), []);
  const rest = c.payloadSpace()!;
  assert.equal(rest.length, 98_490);
  rest.fill(4);
  c.payloadFilled(rest.length);
  const [write] = drain(c);
  assert.ok(write?.kind === 'command' && write.command.type === 'write');
  assert.ok(write.command.data.every((b) => b === 4));
  assert.equal(c.payloadSpace(), undefined);
});
