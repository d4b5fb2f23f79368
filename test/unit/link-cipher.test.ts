// Sealed frames after the handshake: key derivation, the AEAD codec, and what the endpoint does
// with altered, replayed, reordered or foreign frames (the connection resets, the session goes on
// on a new connection, nothing wrong is delivered). Also: no (key, nonce) is ever used twice,
// across reconnects, retransmissions and restarts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { deriveLinkKeys, FrameOpener, FrameSealer, hkdfSha256, TAG_BYTES } from '../../src/core/link/cipher.js';
import { LinkEndpoint } from '../../src/core/link/endpoint.js';
import { DataFlag, encodeFrame, FRAME_HEADER_BYTES, FrameDecoder, frameToBytes, FrameType, type DecodeResult } from '../../src/core/link/frame.js';
import type { Hello } from '../../src/core/link/handshake.js';
import type { LinkConfig } from '../../src/core/link/types.js';
import { PEER_PROTOCOL_VERSION } from '../../src/core/replication/peer-protocol.js';
import { connectedPair, LinkPair, linkConfig, pattern, SECRET, testCrypto } from '../helpers/link-harness.js';

const crypto = testCrypto(7);
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const fromHex = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'hex'));

function hello(name: string, nonceSeed: number, overrides: Partial<Hello> = {}): Hello {
  return { windowBytes: 1 << 20, nonce: pattern(32, nonceSeed), incarnation: pattern(8, nonceSeed + 100), name, protocolVersion: PEER_PROTOCOL_VERSION, ...overrides };
}
const hellos = { dialer: hello('alpha', 1), acceptor: hello('beta', 2) };

/** One direction of one connection: a sealer and the matching decoder. */
function channel(keys = deriveLinkKeys(crypto, SECRET, hellos)): { sealer: FrameSealer; decoder: FrameDecoder } {
  const decoder = new FrameDecoder();
  decoder.openWith(new FrameOpener(crypto, keys.dialerToAcceptor));
  return { sealer: new FrameSealer(crypto, keys.dialerToAcceptor), decoder };
}

function decodeOne(decoder: FrameDecoder, bytes: Uint8Array): DecodeResult {
  decoder.push(bytes);
  return decoder.next();
}

const reasonOf = (r: DecodeResult): string => (r.kind === 'error' ? r.reason : `<${r.kind}>`);

test('HKDF-SHA256 over the injected HMAC matches RFC 5869 test case 1', () => {
  const okm = hkdfSha256(crypto, fromHex('000102030405060708090a0b0c'), new Uint8Array(22).fill(0x0b), fromHex('f0f1f2f3f4f5f6f7f8f9'), 42);
  assert.equal(hex(okm), '3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865');
});

test('keys differ per direction, per connection (nonces), per incarnation and per HELLO content', () => {
  const base = deriveLinkKeys(crypto, SECRET, hellos);
  assert.equal(base.dialerToAcceptor.length, 32);
  assert.notEqual(hex(base.dialerToAcceptor), hex(base.acceptorToDialer));
  assert.deepEqual(deriveLinkKeys(crypto, SECRET, hellos), base, 'both sides derive the same keys');
  const variants: Array<[string, typeof hellos]> = [
    ['another dialer nonce (a new connection)', { ...hellos, dialer: hello('alpha', 3) }],
    ['another acceptor nonce (a new connection)', { ...hellos, acceptor: hello('beta', 4) }],
    ['another incarnation (a restart)', { ...hellos, acceptor: { ...hellos.acceptor, incarnation: pattern(8, 55) } }],
    ['a HELLO window altered in flight', { ...hellos, dialer: { ...hellos.dialer, windowBytes: 1 << 21 } }],
  ];
  const seen = new Set([hex(base.dialerToAcceptor), hex(base.acceptorToDialer)]);
  for (const [what, input] of variants) {
    const keys = deriveLinkKeys(crypto, SECRET, input);
    for (const key of [keys.dialerToAcceptor, keys.acceptorToDialer]) {
      assert.ok(!seen.has(hex(key)), `${what} gives new keys`);
      seen.add(hex(key));
    }
  }
  const other = deriveLinkKeys(crypto, new TextEncoder().encode('another secret of 16+ bytes'), hellos);
  assert.notEqual(hex(other.dialerToAcceptor), hex(base.dialerToAcceptor), 'the secret is the key material');
});

test('sealed frames round-trip in order; the payload is not readable on the wire', () => {
  const { sealer, decoder } = channel();
  const secretData = new TextEncoder().encode('REPLICATED-BLOCK-'.repeat(4000));
  const frames = [
    sealer.seal(FrameType.Resume, 0, 0, new Uint8Array(0)),
    sealer.seal(FrameType.Data, DataFlag.First, 1, secretData),
    sealer.seal(FrameType.Data, DataFlag.Last, 2, pattern(1, 9)),
    sealer.seal(FrameType.Ack, 0, 2 ** 40, new Uint8Array(0)),
    sealer.seal(FrameType.Heartbeat, 0, 0, new Uint8Array(0)),
  ];
  const wire = Buffer.concat(frames.map(frameToBytes));
  assert.equal(wire.indexOf('REPLICATED-BLOCK-'), -1, 'no plaintext on the wire');
  assert.equal(frames[1]!.payload.length, secretData.length + TAG_BYTES);
  // Split at an awkward boundary to exercise the incremental decoder in sealed mode.
  decoder.push(wire.subarray(0, 37));
  decoder.push(wire.subarray(37));
  const out = [];
  for (let r = decoder.next(); r.kind === 'frame'; r = decoder.next()) out.push(r.frame);
  assert.deepEqual(out.map((f) => [f.type, f.flags, f.seq]), [
    [FrameType.Resume, 0, 0], [FrameType.Data, DataFlag.First, 1], [FrameType.Data, DataFlag.Last, 2], [FrameType.Ack, 0, 2 ** 40], [FrameType.Heartbeat, 0, 0],
  ]);
  assert.deepEqual(out[1]!.payload, secretData);
  assert.deepEqual(out[2]!.payload, pattern(1, 9));
});

test('an altered ciphertext, tag or header is rejected as failing authentication', () => {
  const cases: Array<[string, (b: Uint8Array) => void]> = [
    ['ciphertext byte', (b) => { b[FRAME_HEADER_BYTES + 10]! ^= 0x01; }],
    ['tag byte', (b) => { b[b.length - 1]! ^= 0x80; }],
    ['header seq', (b) => { b[19]! ^= 0x01; }],
    ['header flags', (b) => { b[7]! ^= DataFlag.Last; }],
    ['header type', (b) => { b[5] = FrameType.Resume; }],
  ];
  for (const [what, alter] of cases) {
    const { sealer, decoder } = channel();
    const bytes = frameToBytes(what === 'header type'
      ? sealer.seal(FrameType.Ack, 0, 5, new Uint8Array(0))
      : sealer.seal(FrameType.Data, DataFlag.First, 1, pattern(100, 1)));
    alter(bytes);
    const r = decodeOne(decoder, bytes);
    assert.equal(r.kind, 'error', what);
    assert.match(reasonOf(r), /frame authentication failed \(frame counter 0\): altered in flight or not sealed with this connection's keys/, what);
    // Sticky: the genuine next frame is not accepted after a failure.
    assert.equal(decodeOne(decoder, frameToBytes(sealer.seal(FrameType.Heartbeat, 0, 0, new Uint8Array(0)))).kind, 'error', what);
  }
});

test('a replayed, reordered or dropped frame is rejected with a reason saying which', () => {
  {
    const { sealer, decoder } = channel();
    const f0 = frameToBytes(sealer.seal(FrameType.Data, DataFlag.First | DataFlag.Last, 1, pattern(10, 1)));
    assert.equal(decodeOne(decoder, f0).kind, 'frame');
    assert.match(reasonOf(decodeOne(decoder, f0)), /^replayed frame rejected: frame counter 0, expected 1$/);
  }
  {
    const { sealer, decoder } = channel();
    const f0 = frameToBytes(sealer.seal(FrameType.Data, DataFlag.First, 1, pattern(10, 1)));
    const f1 = frameToBytes(sealer.seal(FrameType.Data, DataFlag.Last, 2, pattern(10, 2)));
    assert.match(reasonOf(decodeOne(decoder, f1)), /^frame out of order rejected: frame counter 1, expected 0/);
    assert.equal(decodeOne(decoder, f0).kind, 'error', 'and the connection stays failed');
  }
  {
    // A replay that also rewrites the counter field to the expected one still fails: the nonce is implicit.
    const { sealer, decoder } = channel();
    const f0 = frameToBytes(sealer.seal(FrameType.Data, DataFlag.First | DataFlag.Last, 1, pattern(10, 1)));
    assert.equal(decodeOne(decoder, f0).kind, 'frame');
    const forged = f0.slice();
    new DataView(forged.buffer).setUint32(20, 1);
    assert.match(reasonOf(decodeOne(decoder, forged)), /frame authentication failed \(frame counter 1\)/);
  }
});

test("a frame sealed under another connection's keys (or the other direction's) is rejected", () => {
  const a = deriveLinkKeys(crypto, SECRET, hellos);
  const b = deriveLinkKeys(crypto, SECRET, { ...hellos, dialer: hello('alpha', 5) });
  for (const [what, key] of [['another connection', b.dialerToAcceptor], ['the other direction (reflection)', a.acceptorToDialer]] as const) {
    const { decoder } = channel(a);
    const foreign = frameToBytes(new FrameSealer(crypto, key).seal(FrameType.Data, DataFlag.First | DataFlag.Last, 1, pattern(10, 1)));
    assert.match(reasonOf(decodeOne(decoder, foreign)), /frame authentication failed/, what);
  }
  // A clear (CRC-checked) frame, valid before authentication, is no longer accepted either: its
  // CRC does not pass as the counter, and even with the counter forged there is no valid tag.
  const { decoder } = channel(a);
  assert.equal(decodeOne(decoder, frameToBytes(encodeFrame(FrameType.Heartbeat, 0, 0, new Uint8Array(0)))).kind, 'error');
  const { decoder: decoder2 } = channel(a);
  const clear = frameToBytes(encodeFrame(FrameType.Ack, 0, 3, new Uint8Array(TAG_BYTES)));
  new DataView(clear.buffer).setUint32(20, 0);
  assert.match(reasonOf(decodeOne(decoder2, clear)), /frame authentication failed/);
});

test('every single-bit flip of a sealed frame is caught (never yields a frame)', () => {
  const keys = deriveLinkKeys(crypto, SECRET, hellos);
  const good = frameToBytes(new FrameSealer(crypto, keys.dialerToAcceptor).seal(FrameType.Data, DataFlag.First, 9, pattern(40, 5)));
  let flips = 0;
  for (let bit = 0; bit < good.length * 8; bit++) {
    const bytes = good.slice();
    bytes[bit >> 3]! ^= 1 << (bit & 7);
    const decoder = new FrameDecoder();
    decoder.openWith(new FrameOpener(crypto, keys.dialerToAcceptor));
    const r = decodeOne(decoder, bytes);
    // A longer length leaves the decoder waiting (the dead timer ends that); all else is an error.
    assert.ok(r.kind === 'error' || r.kind === 'version-mismatch' || (r.kind === 'need-more' && bit >= 64 && bit < 96), `bit ${bit}: ${r.kind}`);
    flips++;
  }
  assert.equal(flips, (FRAME_HEADER_BYTES + 40 + TAG_BYTES) * 8);
});

// ---- the endpoint: a bad frame resets the connection, the session survives ----

const pair = connectedPair;

const texts = (list: readonly Uint8Array[]): string[] => list.map((m) => new TextDecoder().decode(m));

for (const [what, tamper, expected] of [
  ['a flipped ciphertext byte', (q: Uint8Array[]) => { const f = q[0]!.slice(); f[FRAME_HEADER_BYTES + 3]! ^= 0x20; q[0] = f; }, /frame authentication failed/],
  ['a replayed frame', (q: Uint8Array[]) => { q.push(q[0]!.slice()); }, /replayed frame rejected/],
  ['two frames swapped', (q: Uint8Array[]) => { const t = q[0]!; q[0] = q[1]!; q[1] = t; }, /frame out of order rejected/],
  ['an injected frame', (q: Uint8Array[]) => {
    // The attacker sees the counters on the wire and puts the expected one in its frame, but has no key.
    const forged = frameToBytes(new FrameSealer(crypto, new Uint8Array(32)).seal(FrameType.Data, DataFlag.First | DataFlag.Last, 1, new TextEncoder().encode('pair.apply forged')));
    new DataView(forged.buffer).setUint32(20, new DataView(q[0]!.buffer, q[0]!.byteOffset).getUint32(20));
    q.unshift(forged);
  }, /frame authentication failed/],
] as const) {
  test(`${what} on an open connection resets it; the session resumes on a new one, exactly once and unaltered`, () => {
    const p = pair();
    p.a.endpoint.send('beta', new TextEncoder().encode('first message'));
    p.a.endpoint.send('beta', new TextEncoder().encode('second message'));
    p.drain();
    const [wire] = p.wires(p.a);
    assert.ok(wire && wire.queue.length >= 2, 'two DATA frames queued');
    const connBefore = wire.fromId;
    tamper(wire.queue);
    p.run();
    p.advance(500);
    assert.ok(p.b.logs.some((l) => l.msg === 'link protocol error' && expected.test(String(l.fields.reason))),
      JSON.stringify(p.b.logs.map((l) => l.fields.reason)));
    assert.deepEqual(texts(p.b.delivered).filter((t) => t !== 'first message' && t !== 'second message'), [], 'nothing forged delivered');
    assert.deepEqual(texts(p.b.delivered), ['first message', 'second message']);
    assert.equal(p.a.endpoint.stats('beta')!.state, 'up');
    assert.ok(!p.a.out.has(connBefore), 'the tampered connection was closed');
    assert.equal(p.b.events.filter((e) => e.kind === 'session-reset').length, 0, 'the session survived');
  });
}

test('a HELLO altered in flight (window, not covered by the proofs) leaves the sides with different keys: the link resets, then recovers', () => {
  const alpha = new LinkEndpoint(linkConfig('alpha'), 0);
  const beta = new LinkEndpoint(linkConfig('beta'), 0);
  alpha.addPeer({ name: 'beta', address: 'beta:1', secret: SECRET }, 0);
  beta.addPeer({ name: 'alpha', address: 'alpha:1', secret: SECRET }, 0);
  const p = new LinkPair(alpha, beta);
  p.drain();
  const [wire] = p.wires(p.a);
  assert.ok(wire && wire.queue.length === 1, 'the dialer HELLO is queued');
  const decoded = new FrameDecoder();
  decoded.push(wire.queue[0]!);
  const helloFrame = decoded.next();
  assert.ok(helloFrame.kind === 'frame' && helloFrame.frame.type === FrameType.Hello);
  const payload = helloFrame.frame.payload.slice();
  new DataView(payload.buffer).setUint32(0, 4 * 1024 * 1024); // a different window, CRC recomputed by the attacker
  wire.queue[0] = frameToBytes(encodeFrame(FrameType.Hello, 0, 0, payload));
  p.run();
  assert.ok([...p.a.logs, ...p.b.logs].some((l) => /frame authentication failed/.test(String(l.fields.reason))), 'the first sealed frame did not open');
  p.advance(500);
  assert.equal(p.a.endpoint.stats('beta')!.state, 'up', 'a clean reconnect works');
  p.a.endpoint.send('beta', new TextEncoder().encode('through'));
  p.run();
  assert.deepEqual(texts(p.b.delivered), ['through']);
});

test('no (key, nonce) is ever used twice: reconnects, retransmissions, parallel streams and restarts', () => {
  const used = new Set<string>();
  let seals = 0;
  const recording = (name: string, seed: number): LinkConfig => {
    const base = linkConfig(name, { streams: 2 });
    const inner = testCrypto(seed);
    return {
      ...base,
      crypto: {
        ...inner,
        aeadSeal: (key, nonce, aad, plaintext) => {
          const id = `${hex(key)}/${hex(nonce)}`;
          assert.ok(!used.has(id), `(key, nonce) reused: ${id}`);
          used.add(id);
          seals++;
          return inner.aeadSeal(key, nonce, aad, plaintext);
        },
      },
    };
  };
  const p = pair({}, { a: recording('alpha', 11), b: recording('beta', 12) });
  const sent: string[] = [];
  for (let round = 0; round < 6; round++) {
    for (let i = 0; i < 5; i++) {
      const m = `round ${round} message ${i}`;
      if (!p.a.endpoint.canSend('beta', m.length)) break;
      p.a.endpoint.send('beta', new TextEncoder().encode(m));
      sent.push(m);
    }
    p.drain();
    // Cut while packets are in flight: they go again on another connection, sealed afresh.
    const wire = p.wires(p.a)[0];
    if (wire) p.cut(p.a, wire.fromId);
    p.advance(300);
  }
  assert.deepEqual(texts(p.b.delivered), sent);
  assert.ok(p.a.endpoint.stats('beta')!.retransmittedPackets > 0, 'some packets were retransmitted');
  // A restart of beta (new incarnation) starts a new session with new keys.
  const beta2 = new LinkEndpoint(recording('beta', 13), p.nowMs);
  beta2.addPeer({ name: 'alpha', address: 'alpha:1', secret: SECRET }, p.nowMs);
  p.restart(p.b, beta2);
  p.advance(500);
  p.a.endpoint.send('beta', new TextEncoder().encode('after restart'));
  p.run();
  assert.equal(texts(p.b.delivered).at(-1), 'after restart');
  assert.ok(seals > 50, `seals ${seals}`);
});
