// Reliable delivery: reassembly, the send window, retransmission after reconnects without
// duplicates, session resets, and reordering across parallel streams.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LinkEndpoint } from '../../src/core/link/endpoint.js';
import { DataFlag, encodeFrame, frameToBytes, FrameType } from '../../src/core/link/frame.js';
import { ReceiveSide, SendSide, type OutgoingPacket } from '../../src/core/link/session.js';
import { Prng } from '../../src/core/lib/prng.js';
import { bytesOf, connectedPair, linkConfig, pattern, SECRET } from '../helpers/link-harness.js';

const KiB = 1024;

const pair = connectedPair;

const hexOf = (messages: readonly Uint8Array[]): string[] => messages.map((m) => Buffer.from(m).toString('hex'));

test('packets arriving in any order are reassembled; an incomplete message is never delivered', () => {
  const send = new SendSide({ windowBytes: 1 << 20, maxPacketBytes: 100, maxMessageBytes: 10_000 });
  const messages = [pattern(250, 1), new Uint8Array(0), pattern(100, 2), pattern(1, 3)];
  for (const m of messages) send.accept(m);
  const frames: OutgoingPacket[] = [];
  for (let f = send.next(1, 1 << 20); f; f = send.next(1, 1 << 20)) frames.push(f.packet);
  assert.equal(frames.length, 3 + 1 + 1 + 1);
  const prng = new Prng(3);
  for (let trial = 0; trial < 50; trial++) {
    const order = frames.map((f, i) => ({ f, k: prng.next(), i })).sort((x, y) => x.k - y.k);
    const receive = new ReceiveSide({ windowBytes: 1 << 20, maxMessageBytes: 10_000 });
    const delivered: Uint8Array[] = [];
    const decode = (i: number) => ({
      type: FrameType.Data, flags: frames[i]!.flags, seq: frames[i]!.seq, payload: frames[i]!.payload,
    });
    for (const { i } of order) {
      const r = receive.receive(decode(i));
      assert.ok(r.ok);
      delivered.push(...r.delivered);
      // Delivered is always a prefix of the whole messages.
      assert.deepEqual(hexOf(delivered), hexOf(messages.slice(0, delivered.length)));
      // A duplicate changes nothing.
      const again = receive.receive(decode(i));
      assert.ok(again.ok && again.duplicate && again.delivered.length === 0);
    }
    assert.deepEqual(hexOf(delivered), hexOf(messages));
    assert.equal(receive.heldOutOfOrderBytes, 0);
  }
});

test('malformed packet sequences and a window overrun are protocol errors', () => {
  const r = new ReceiveSide({ windowBytes: 64 * KiB, maxMessageBytes: 1000 });
  assert.deepEqual(r.receive({ type: FrameType.Data, flags: 0, seq: 1, payload: bytesOf('x') }), { ok: false, reason: 'a packet continues no message' });
  const r2 = new ReceiveSide({ windowBytes: 64 * KiB, maxMessageBytes: 1000 });
  assert.ok(r2.receive({ type: FrameType.Data, flags: DataFlag.First, seq: 1, payload: bytesOf('x') }).ok);
  assert.deepEqual(r2.receive({ type: FrameType.Data, flags: DataFlag.First, seq: 2, payload: bytesOf('y') }), { ok: false, reason: 'a message started inside another' });
  const r3 = new ReceiveSide({ windowBytes: 64 * KiB, maxMessageBytes: 1000 });
  assert.ok(r3.receive({ type: FrameType.Data, flags: DataFlag.First, seq: 1, payload: new Uint8Array(600) }).ok);
  assert.deepEqual(r3.receive({ type: FrameType.Data, flags: DataFlag.Last, seq: 2, payload: new Uint8Array(600) }), { ok: false, reason: 'message exceeds 1000 bytes' });
  const r4 = new ReceiveSide({ windowBytes: 64 * KiB, maxMessageBytes: 1 << 20 });
  let seq = 2;
  let result;
  do result = r4.receive({ type: FrameType.Data, flags: 0, seq: seq++, payload: new Uint8Array(16 * KiB) }); while (result.ok);
  assert.equal(result.reason, 'peer overran the receive window');
  assert.ok(r4.heldOutOfOrderBytes <= 64 * KiB);
});

test('the send window: canSend says no when full, send-space follows the peer ack', () => {
  const p = pair({ windowBytes: 64 * KiB, maxPacketBytes: 8 * KiB, maxMessageBytes: 32 * KiB });
  const alpha = p.a.endpoint;
  let accepted = 0;
  while (alpha.canSend('beta', 20 * KiB)) { alpha.send('beta', pattern(20 * KiB, accepted)); accepted++; }
  assert.equal(accepted, 3);
  assert.ok(alpha.stats('beta')!.unackedBytes <= 64 * KiB);
  assert.throws(() => alpha.send('beta', pattern(20 * KiB, 9)), /window/);
  assert.throws(() => alpha.canSend('beta', 33 * KiB), /exceeds/);
  p.run();
  p.advance(10); // acknowledgements may wait ackDelayMs
  assert.equal(p.b.delivered.length, 3);
  assert.ok(p.a.events.some((e) => e.kind === 'send-space' && e.peer === 'beta'));
  assert.equal(alpha.stats('beta')!.unackedBytes, 0);
  assert.equal(alpha.canSend('beta', 20 * KiB), true);
});

test('after a connection is cut mid-transfer the link reconnects and resends without loss or duplicates', () => {
  const p = pair({ windowBytes: 256 * KiB, maxPacketBytes: 4 * KiB, maxMessageBytes: 64 * KiB });
  const sent: Uint8Array[] = [];
  const prng = new Prng(11);
  for (let round = 0; round < 6; round++) {
    for (let i = 0; i < 10; i++) {
      const m = pattern(prng.int(0, 40 * KiB), sent.length + 100);
      if (!p.a.endpoint.canSend('beta', m.length)) break;
      p.a.endpoint.send('beta', m);
      sent.push(m);
    }
    p.drain();
    // Let part of the bytes through, then cut: the rest is lost in flight.
    const wire = p.wires(p.a)[0]!;
    wire.queue.splice(Math.floor(wire.queue.length / 2));
    p.deliverOnly(wire);
    p.cut(p.a, wire.fromId);
    assert.equal(p.a.endpoint.stats('beta')!.state, 'down');
    p.advance(200);
    assert.equal(p.a.endpoint.stats('beta')!.state, 'up');
  }
  p.advance(100);
  assert.deepEqual(hexOf(p.b.delivered), hexOf(sent));
  const stats = p.a.endpoint.stats('beta')!;
  assert.ok(stats.retransmittedPackets > 0);
  assert.equal(stats.unackedBytes, 0);
  assert.equal(p.b.endpoint.stats('alpha')!.messagesReceived, sent.length);
  assert.ok(p.a.events.some((e) => e.kind === 'peer-down'));
});

test('a peer that restarts resets the session: unacked messages are reported, nothing old arrives', () => {
  const p = pair();
  p.a.endpoint.send('beta', bytesOf('delivered'));
  p.run();
  p.advance(10); // its acknowledgement may wait ackDelayMs
  assert.equal(p.b.delivered.length, 1);
  p.a.endpoint.send('beta', bytesOf('lost 1'));
  p.a.endpoint.send('beta', bytesOf('lost 2'));
  p.drain(); // queued on the wire, never delivered
  const sessionBefore = p.a.endpoint.stats('beta')!.sessionId;
  const beta2 = new LinkEndpoint(linkConfig('beta'), p.nowMs);
  beta2.addPeer({ name: 'alpha', address: 'alpha:1', secret: SECRET }, p.nowMs);
  p.restart(p.b, beta2);
  p.b.delivered.length = 0;
  p.advance(300);
  assert.deepEqual(p.a.events.filter((e) => e.kind === 'session-reset'), [{ kind: 'session-reset', peer: 'beta', undeliveredMessages: 2 }]);
  assert.equal(p.a.endpoint.stats('beta')!.state, 'up');
  assert.notEqual(p.a.endpoint.stats('beta')!.sessionId, sessionBefore);
  assert.deepEqual(p.b.delivered, []);
  p.a.endpoint.send('beta', bytesOf('new session'));
  p.b.endpoint.send('alpha', bytesOf('hello from the new beta'));
  p.run();
  assert.deepEqual(p.b.delivered.map((m) => Buffer.from(m).toString()), ['new session']);
  assert.deepEqual(p.a.delivered.map((m) => Buffer.from(m).toString()), ['hello from the new beta']);
});

test('with two streams packets overtake each other and are still delivered in order', () => {
  const p = pair({ streams: 2, maxPacketBytes: 1 * KiB, windowBytes: 256 * KiB, maxMessageBytes: 64 * KiB });
  assert.equal(p.a.endpoint.stats('beta')!.connections, 2);
  const sent: Uint8Array[] = [];
  for (let i = 0; i < 20; i++) {
    const m = pattern(500 + i * 700, i);
    p.a.endpoint.send('beta', m);
    sent.push(m);
  }
  p.drain();
  const [w1, w2] = p.wires(p.a);
  assert.ok(w1!.queue.length > 0 && w2!.queue.length > 0, 'both streams carry packets');
  // Deliver the second stream completely first: everything it carries is held until the gaps fill.
  p.deliverOnly(w2!);
  p.drain();
  const early = p.b.delivered.length;
  assert.ok(early < sent.length);
  p.run();
  assert.deepEqual(hexOf(p.b.delivered), hexOf(sent));
  // And cutting one of two streams moves its packets to the other.
  for (let i = 0; i < 10; i++) { const m = pattern(3000, 1000 + i); p.a.endpoint.send('beta', m); sent.push(m); }
  p.drain();
  const [x] = p.wires(p.a);
  p.cut(p.a, x!.fromId);
  assert.equal(p.a.endpoint.stats('beta')!.state, 'up', 'one stream is still open');
  p.advance(200);
  assert.deepEqual(hexOf(p.b.delivered), hexOf(sent));
  assert.equal(p.a.endpoint.stats('beta')!.connections, 2, 'the lost stream was re-dialled');
});

test('a silent peer is declared dead after deadAfterMs, heartbeats keep a quiet link alive', () => {
  const p = pair({ heartbeatIntervalMs: 100, deadAfterMs: 350 });
  p.advance(2000);
  assert.equal(p.a.endpoint.stats('beta')!.state, 'up', 'heartbeats alone keep it up');
  // Black-hole the connection: bytes written are dropped from now on.
  const wire = p.wires(p.a)[0]!;
  const back = p.wires(p.b)[0]!;
  const drop = (): void => { wire.queue = []; back.queue = []; };
  for (let t = 0; t < 400; t += 5) { drop(); p.nowMs += 5; p.a.endpoint.handle({ kind: 'tick' }, p.nowMs); p.b.endpoint.handle({ kind: 'tick' }, p.nowMs); p.drain(); drop(); }
  assert.notEqual(p.a.endpoint.stats('beta')!.state, 'up');
  assert.match(p.a.endpoint.stats('beta')!.lastError!, /nothing received/);
});

test('a corrupted length that leaves the decoder waiting is caught by the frame-based dead timer', () => {
  const p = pair({ heartbeatIntervalMs: 100, deadAfterMs: 350 });
  const wire = p.wires(p.a)[0]!;
  // A header claiming a 900 KB payload; the valid heartbeats that follow are swallowed as "payload".
  const bogus = frameToBytes(encodeFrame(FrameType.Data, DataFlag.First, 1, new Uint8Array(0)));
  new DataView(bogus.buffer).setUint32(8, 900_000);
  wire.queue.push(bogus);
  p.advance(1000);
  assert.match(p.b.endpoint.stats('alpha')!.lastError ?? '', /nothing received/);
  assert.equal(p.a.endpoint.stats('beta')!.state, 'up', 'reconnected');
  p.a.endpoint.send('beta', bytesOf('after the stall'));
  p.run();
  assert.deepEqual(p.b.delivered.map((m) => Buffer.from(m).toString()), ['after the stall']);
});

test('reconnect backoff grows exponentially with jitter and is capped', () => {
  const alpha = new LinkEndpoint(linkConfig('alpha', { backoffInitialMs: 100, backoffMaxMs: 1600, random: () => 0.5 }), 0);
  alpha.addPeer({ name: 'beta', address: 'beta:1', secret: SECRET }, 0);
  let now = 0;
  const gaps: number[] = [];
  for (let attempt = 0; attempt < 8; attempt++) {
    const dial = alpha.poll();
    assert.equal(dial?.kind, 'dial');
    if (dial?.kind !== 'dial') return;
    alpha.handle({ kind: 'closed', connId: dial.connId, reason: 'refused' }, now);
    while (alpha.poll()) { /* logs */ }
    const next = alpha.nextDeadlineMs()!;
    gaps.push(next - now);
    now = next;
    alpha.handle({ kind: 'tick' }, now);
  }
  assert.deepEqual(gaps, [75, 150, 300, 600, 1200, 1200, 1200, 1200]); // 3/4 of the doubling backoff at r = 0.5
});

test('send to an unknown peer is NotFound; removing a peer closes its connections', () => {
  const p = pair();
  assert.throws(() => p.a.endpoint.send('nobody', bytesOf('x')), (e: unknown) => (e as { code?: string }).code === 'TM_ERR_NOT_FOUND');
  p.a.endpoint.removePeer('beta', p.nowMs);
  p.run();
  assert.equal(p.a.endpoint.stats('beta'), undefined);
  assert.notEqual(p.b.endpoint.stats('alpha')!.state, 'up');
});

test('a retransmitted packet is the same packet (sequence, flags, payload), framed afresh for its new connection', () => {
  const send = new SendSide({ windowBytes: 1 << 20, maxPacketBytes: 100, maxMessageBytes: 1000 });
  send.accept(pattern(150, 1));
  const first = send.next(1, 1 << 20)!;
  send.connectionLost(1);
  const again = send.next(2, 1 << 20)!;
  assert.equal(again.retransmit, true);
  assert.equal(again.packet, first.packet);
  assert.equal(again.packet.seq, 1);
  assert.equal(send.next(2, 1 << 20)!.retransmit, false);
  assert.ok(!send.ack(5).ok, 'acknowledging more than was sent is refused');
  assert.ok(encodeFrame(FrameType.Heartbeat, 0, 0, new Uint8Array(0)));
});

/** Frame types queued on a node's wires (the type byte is readable in sealed frames too). */
const queuedTypes = (node: { out: Map<number, { queue: Uint8Array[] }> }): number[] =>
  [...node.out.values()].flatMap((w) => w.queue.map((frame) => frame[5]!));

test('an acknowledgement rides with the reply: one write each way per request, no ACK frame alone', () => {
  const p = pair({ ackDelayMs: 5 });
  p.a.endpoint.send('beta', bytesOf('request'));
  p.drain();
  assert.deepEqual(queuedTypes(p.a), [FrameType.Data]);
  p.deliverOnly(p.wires(p.a)[0]!);
  p.drain();
  assert.equal(p.b.delivered.length, 1);
  assert.deepEqual(queuedTypes(p.b), [], 'the ACK waits for something to ride with');
  p.b.endpoint.send('alpha', bytesOf('reply'));
  p.drain();
  assert.deepEqual(queuedTypes(p.b), [FrameType.Ack, FrameType.Data], 'the ACK leaves with the reply, in the same batch of writes');
  p.deliverOnly(p.wires(p.b)[0]!);
  p.drain();
  assert.equal(p.a.endpoint.stats('beta')!.unackedBytes, 0, 'the request is acknowledged');
  assert.deepEqual(queuedTypes(p.a), [], 'the reply\'s ACK waits too');
});

test('with nothing to ride with, the acknowledgement goes alone after ackDelayMs', () => {
  const p = pair({ ackDelayMs: 5 });
  p.a.endpoint.send('beta', bytesOf('one-way'));
  p.drain();
  p.deliverOnly(p.wires(p.a)[0]!);
  p.drain();
  assert.deepEqual(queuedTypes(p.b), []);
  p.b.endpoint.handle({ kind: 'tick' }, p.nowMs + 4);
  p.drain();
  assert.deepEqual(queuedTypes(p.b), [], 'not before the delay');
  assert.equal(p.b.endpoint.nextDeadlineMs(), p.nowMs + 5, 'the delay is a deadline of the endpoint');
  p.b.endpoint.handle({ kind: 'tick' }, p.nowMs + 5);
  p.drain();
  assert.deepEqual(queuedTypes(p.b), [FrameType.Ack]);
});

test('past half the receive window the acknowledgement goes at once', () => {
  const p = pair({ ackDelayMs: 5, windowBytes: 64 * KiB, maxPacketBytes: 16 * KiB, maxMessageBytes: 64 * KiB });
  p.a.endpoint.send('beta', pattern(40 * KiB, 1));
  p.drain();
  p.deliverOnly(p.wires(p.a)[0]!);
  p.drain();
  assert.equal(p.b.delivered.length, 1);
  assert.deepEqual(queuedTypes(p.b), [FrameType.Ack]);
});

test('an acknowledgement sent on a connection that dies is repeated on a surviving one', () => {
  const p = pair({ ackDelayMs: 0, streams: 2 });
  p.advance(50);
  assert.equal(p.wires(p.a).length, 2, 'two streams');
  p.a.endpoint.send('beta', bytesOf('m'));
  p.drain();
  const carrying = p.wires(p.a).find((w) => w.queue.length > 0)!;
  p.deliverOnly(carrying);
  p.drain();
  // beta acknowledged on the connection the data came by; that ACK is lost with it.
  const back = p.wires(p.b).find((w) => w.toId === carrying.fromId)!;
  assert.deepEqual(back.queue.map((f) => f[5]), [FrameType.Ack]);
  p.cut(p.a, carrying.fromId);
  p.drain();
  assert.deepEqual(queuedTypes(p.b), [FrameType.Ack], 'repeated on the other stream');
  p.run();
  assert.equal(p.a.endpoint.stats('beta')!.unackedBytes, 0);
});
