// The link frame codec: layout, round trips across arbitrary chunk boundaries, strict rejection.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  DataFlag, encodeFrame, FRAME_HEADER_BYTES, FRAME_MAGIC, FrameDecoder, frameToBytes, FrameType, LINK_PROTOCOL_VERSION,
  type DecodeResult, type Frame,
} from '../../src/core/link/frame.js';
import { decodeHello, encodeHello, UNVERSIONED_PROTOCOL } from '../../src/core/link/handshake.js';
import { Prng } from '../../src/core/lib/prng.js';
import { pattern } from '../helpers/link-harness.js';

function decodeChunks(chunks: readonly Uint8Array[]): { frames: Frame[]; end: DecodeResult } {
  const decoder = new FrameDecoder();
  const frames: Frame[] = [];
  let end: DecodeResult = { kind: 'need-more' };
  for (const chunk of chunks) {
    decoder.push(chunk);
    for (;;) {
      end = decoder.next();
      if (end.kind !== 'frame') break;
      frames.push(end.frame);
    }
    if (end.kind !== 'need-more') break;
  }
  return { frames, end };
}

function splitRandomly(bytes: Uint8Array, prng: Prng, max: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let at = 0; at < bytes.length;) {
    const n = Math.min(bytes.length - at, prng.int(1, max));
    out.push(bytes.slice(at, at + n));
    at += n;
  }
  return out;
}

const concat = (parts: readonly Uint8Array[]): Uint8Array => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
};

test('the header layout is magic, version, type, flags, length, seq, crc (big-endian, 24 bytes)', () => {
  const bytes = frameToBytes(encodeFrame(FrameType.Data, DataFlag.First | DataFlag.Last, 2 ** 40 + 5, Uint8Array.of(1, 2, 3)));
  assert.equal(bytes.length, FRAME_HEADER_BYTES + 3);
  const view = new DataView(bytes.buffer);
  assert.equal(view.getUint32(0), FRAME_MAGIC);
  assert.equal(view.getUint8(4), LINK_PROTOCOL_VERSION);
  assert.equal(view.getUint8(5), FrameType.Data);
  assert.equal(view.getUint16(6), 3);
  assert.equal(view.getUint32(8), 3);
  assert.equal(view.getUint32(12), 2 ** 8);
  assert.equal(view.getUint32(16), 5);
  assert.deepEqual([...bytes.subarray(24)], [1, 2, 3]);
});

test('frames round-trip whole, packed together and split at every boundary', () => {
  const frames = [
    encodeFrame(FrameType.Heartbeat, 0, 0, new Uint8Array(0)),
    encodeFrame(FrameType.Data, DataFlag.First, 1, pattern(1000, 1)),
    encodeFrame(FrameType.Data, DataFlag.Last, 2, pattern(70_000, 2)),
    encodeFrame(FrameType.Ack, 0, Number.MAX_SAFE_INTEGER, new Uint8Array(0)),
  ];
  const stream = concat(frames.map(frameToBytes));
  const check = (chunks: Uint8Array[]): void => {
    const { frames: got, end } = decodeChunks(chunks);
    assert.equal(end.kind, 'need-more');
    assert.equal(got.length, frames.length);
    got.forEach((f, i) => {
      assert.equal(f.seq, [0, 1, 2, Number.MAX_SAFE_INTEGER][i]);
      assert.deepEqual(Buffer.from(f.payload), Buffer.from(frames[i]!.payload));
    });
    assert.equal(got[1]!.flags, DataFlag.First);
  };
  check([stream]);
  check([...stream.subarray(0, 2000)].map((b) => Uint8Array.of(b)).concat([stream.slice(2000)]));
  const prng = new Prng(42);
  for (let i = 0; i < 50; i++) check(splitRandomly(stream, prng, prng.pick([3, 50, 5000])));
});

function corrupted(mutate: (bytes: Uint8Array, view: DataView) => void): DecodeResult {
  const bytes = frameToBytes(encodeFrame(FrameType.Data, DataFlag.First | DataFlag.Last, 7, pattern(100, 3)));
  mutate(bytes, new DataView(bytes.buffer));
  return decodeChunks([bytes]).end;
}

test('bad magic, CRC, flags, type, length and sequence are protocol errors', () => {
  assert.deepEqual(corrupted((_, v) => v.setUint32(0, 0x12345678)), { kind: 'error', reason: 'bad frame magic' });
  assert.deepEqual(corrupted((b) => { b[60] = b[60]! ^ 0x10; }), { kind: 'error', reason: 'frame CRC mismatch' });
  assert.deepEqual(corrupted((b) => { b[17] = b[17]! ^ 1; }), { kind: 'error', reason: 'frame CRC mismatch' }); // seq
  assert.match((corrupted((_, v) => v.setUint16(6, 4)) as { reason: string }).reason, /bad flags/);
  assert.match((corrupted((_, v) => v.setUint8(5, 99)) as { reason: string }).reason, /unknown frame type 99/);
  assert.match((corrupted((_, v) => v.setUint32(8, 2 ** 31)) as { reason: string }).reason, /exceeds/);
  assert.match((corrupted((_, v) => v.setUint32(12, 0xffffffff)) as { reason: string }).reason, /sequence/);
  assert.deepEqual(corrupted((_, v) => v.setUint8(4, 1)), { kind: 'version-mismatch', peerVersion: 1 }, 'a v1 (unencrypted) peer');
  assert.deepEqual(corrupted((_, v) => v.setUint8(4, 3)), { kind: 'version-mismatch', peerVersion: 3 });
  // Flags on a non-DATA frame.
  const ack = frameToBytes(encodeFrame(FrameType.Ack, 0, 1, new Uint8Array(0)));
  new DataView(ack.buffer).setUint16(6, 1);
  assert.match((decodeChunks([ack]).end as { reason: string }).reason, /bad flags/);
});

test('an oversized length is refused from the header alone, before any payload arrives', () => {
  const decoder = new FrameDecoder(4096);
  const header = frameToBytes(encodeFrame(FrameType.Data, DataFlag.First, 1, pattern(5000, 1))).subarray(0, FRAME_HEADER_BYTES);
  decoder.push(header);
  assert.deepEqual(decoder.next(), { kind: 'error', reason: 'frame length 5000 exceeds 4096' });
});

test('an error is sticky: later bytes, even valid frames, are ignored', () => {
  const decoder = new FrameDecoder();
  decoder.push(new Uint8Array(FRAME_HEADER_BYTES)); // zero magic
  assert.equal(decoder.next().kind, 'error');
  decoder.push(frameToBytes(encodeFrame(FrameType.Heartbeat, 0, 0, new Uint8Array(0))));
  assert.equal(decoder.next().kind, 'error');
  assert.equal(decoder.bufferedBytes, 0);
});

test('random garbage never throws and never yields a frame', () => {
  const prng = new Prng(7);
  for (let i = 0; i < 2000; i++) {
    const garbage = new Uint8Array(prng.int(0, 200));
    prng.fill(garbage);
    if (i % 2 === 0 && garbage.length >= 4) new DataView(garbage.buffer).setUint32(0, FRAME_MAGIC);
    const { frames } = decodeChunks(splitRandomly(garbage, prng, 30));
    assert.equal(frames.length, 0);
  }
});

test('every single-bit flip of a frame is caught', () => {
  const good = frameToBytes(encodeFrame(FrameType.Data, DataFlag.Last, 9, pattern(64, 5)));
  for (let bit = 0; bit < good.length * 8; bit++) {
    const bytes = good.slice();
    bytes[bit >> 3] = bytes[bit >> 3]! ^ (1 << (bit & 7));
    const { frames, end } = decodeChunks([bytes]);
    // A flip in the length field may make the decoder wait for more bytes; it must not accept.
    assert.equal(frames.length, 0, `bit ${bit}`);
    assert.notEqual(end.kind, 'frame');
  }
});

test('HELLO payloads round-trip and malformed ones are refused', () => {
  const hello = { windowBytes: 1 << 20, nonce: pattern(32, 1), incarnation: pattern(8, 2), name: 'site-a.1', protocolVersion: 7 };
  const decoded = decodeHello(encodeHello(hello));
  assert.ok(decoded.ok);
  assert.equal(decoded.value.name, 'site-a.1');
  assert.equal(decoded.value.protocolVersion, 7);
  assert.equal(decoded.value.windowBytes, 1 << 20);
  assert.deepEqual(decoded.value.nonce, hello.nonce);
  const bytes = encodeHello(hello);
  assert.equal(decodeHello(bytes.subarray(0, bytes.length - 1)).ok, false);
  assert.equal(decodeHello(encodeHello({ ...hello, windowBytes: 100 })).ok, false);
  assert.equal(decodeHello(encodeHello({ ...hello, name: 'bad name' })).ok, false);
  assert.equal(decodeHello(new Uint8Array(0)).ok, false);
  assert.equal(decodeHello(Uint8Array.of(...bytes, 0)).ok, false, 'one byte too many');
});

test('a HELLO in the layout before it carried a version decodes as peer protocol v1', () => {
  const hello = { windowBytes: 1 << 20, nonce: pattern(32, 1), incarnation: pattern(8, 2), name: 'old-array', protocolVersion: 9 };
  const bytes = encodeHello(hello);
  // The old layout is the new one without the trailing u16 version.
  const old = decodeHello(bytes.subarray(0, bytes.length - 2));
  assert.ok(old.ok);
  assert.equal(old.value.name, 'old-array');
  assert.equal(old.value.protocolVersion, UNVERSIONED_PROTOCOL);
  assert.equal(UNVERSIONED_PROTOCOL, 1);
});
