// The link handshake: mutual HMAC authentication, refusals, and nothing before authentication.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LinkEndpoint } from '../../src/core/link/endpoint.js';
import { DataFlag, encodeFrame, FrameDecoder, frameToBytes, FrameType, type Frame } from '../../src/core/link/frame.js';
import { deriveLinkKeys, FrameOpener, FrameSealer } from '../../src/core/link/cipher.js';
import { computeProof, decodeError, decodeHello, encodeHello, LinkErrorCode, type Hello } from '../../src/core/link/handshake.js';
import { Prng } from '../../src/core/lib/prng.js';
import { PEER_PROTOCOL_VERSION } from '../../src/core/replication/peer-protocol.js';
import {
  bytesOf, decodeAll, drainActions, LinkPair, linkConfig, OTHER_SECRET, pattern, SECRET, testCrypto,
} from '../helpers/link-harness.js';

function pair(betaSecret = SECRET, betaKnowsAlpha = true): LinkPair {
  const alpha = new LinkEndpoint(linkConfig('alpha'), 0);
  const beta = new LinkEndpoint(linkConfig('beta'), 0);
  alpha.addPeer({ name: 'beta', address: 'beta:1', secret: SECRET }, 0);
  if (betaKnowsAlpha) beta.addPeer({ name: 'alpha', address: 'alpha:1', secret: betaSecret }, 0);
  else beta.addPeer({ name: 'gamma', address: 'gamma:1', secret: SECRET }, 0);
  return new LinkPair(alpha, beta);
}

test('two arrays with the same secret authenticate each other and agree on the session', () => {
  const p = pair();
  p.run();
  const a = p.a.endpoint.stats('beta')!;
  const b = p.b.endpoint.stats('alpha')!;
  assert.equal(a.state, 'up');
  assert.equal(b.state, 'up');
  assert.ok(a.sessionId);
  assert.equal(a.sessionId, b.sessionId);
  assert.deepEqual(p.a.events.filter((e) => e.kind === 'peer-up'), [{ kind: 'peer-up', peer: 'beta' }]);
  assert.deepEqual(p.b.events.filter((e) => e.kind === 'peer-up'), [{ kind: 'peer-up', peer: 'alpha' }]);
  // The lower name dials.
  assert.equal(p.a.events[0]!.kind, 'dial');
  assert.equal(p.b.events.filter((e) => e.kind === 'dial').length, 0);
});

test('a wrong secret fails authentication on both sides and delivers nothing', () => {
  const p = pair(OTHER_SECRET);
  p.a.endpoint.send('beta', bytesOf('must not arrive'));
  p.run();
  p.advance(300);
  assert.equal(p.a.endpoint.stats('beta')!.state, 'auth-failed');
  assert.equal(p.b.endpoint.stats('alpha')!.state, 'auth-failed');
  assert.match(p.a.endpoint.stats('beta')!.lastError!, /authentication failed/);
  assert.deepEqual(p.b.delivered, []);
  assert.equal(p.b.events.filter((e) => e.kind === 'peer-up').length, 0);
  assert.equal(p.a.endpoint.stats('beta')!.connections, 0);
});

test('an unknown array name is refused with a clear error', () => {
  const p = pair(SECRET, false);
  p.run();
  const stats = p.a.endpoint.stats('beta')!;
  assert.notEqual(stats.state, 'up');
  assert.match(stats.lastError!, /alpha is not a configured peer of beta/);
});

test('the array whose name sorts higher never dials, and is refused if it does', () => {
  // beta is configured by someone to accept from alpha; a dialer claiming "zeta" (higher than beta) is refused.
  const beta = new LinkEndpoint(linkConfig('beta'), 0);
  beta.addPeer({ name: 'zeta', address: 'z:1', secret: SECRET }, 0);
  const { actions } = drainActions(beta);
  assert.equal(actions.filter((a) => a.kind === 'dial').length, 1, 'beta dials zeta');
  const alphaSide = new LinkEndpoint(linkConfig('alpha'), 0);
  alphaSide.addPeer({ name: 'beta', address: 'b:1', secret: SECRET }, 0);
  assert.equal(drainActions(alphaSide).actions.filter((a) => a.kind === 'dial').length, 1);
  const zeta = new LinkEndpoint(linkConfig('zeta'), 0);
  zeta.addPeer({ name: 'beta', address: 'b:1', secret: SECRET }, 0);
  assert.equal(drainActions(zeta).actions.filter((a) => a.kind === 'dial').length, 0, 'zeta only accepts');
  const { frames, closed } = rawDial(beta, 'zeta', [helloFrame({ name: 'zeta' })]);
  assert.equal(closed, true);
  assert.match(errorOf(frames), /lower name dials/);
});

test('names must differ and secrets must be non-trivial', () => {
  const e = new LinkEndpoint(linkConfig('alpha'), 0);
  assert.throws(() => e.addPeer({ name: 'alpha', address: 'x:1', secret: SECRET }, 0), /different/);
  assert.throws(() => e.addPeer({ name: 'beta', address: 'x:1', secret: bytesOf('short') }, 0), /at least 16/);
  assert.throws(() => new LinkEndpoint(linkConfig('bad name'), 0), /invalid array name/);
});

// ---- raw frames against an acceptor ----

const dialerNonce = pattern(32, 11);
const dialerIncarnation = pattern(8, 12);
function helloFrame(overrides: Partial<Hello> = {}, version?: number): Uint8Array {
  const hello: Hello = { windowBytes: 1 << 20, nonce: dialerNonce, incarnation: dialerIncarnation, name: 'alpha', protocolVersion: PEER_PROTOCOL_VERSION, ...overrides };
  return frameToBytes(encodeFrame(FrameType.Hello, 0, 0, encodeHello(hello), version));
}

function acceptor(): LinkEndpoint {
  const beta = new LinkEndpoint(linkConfig('beta'), 0);
  beta.addPeer({ name: 'alpha', address: 'alpha:1', secret: SECRET }, 0);
  return beta;
}

/** Feeds raw chunks to a fresh inbound connection; returns what the endpoint sent back and whether it closed. */
function rawDial(endpoint: LinkEndpoint, _peer: string, chunks: readonly Uint8Array[]): { frames: Frame[]; closed: boolean; delivered: number } {
  const id = endpoint.accept(0)!;
  const sent: Uint8Array[] = [];
  let closed = false;
  let delivered = 0;
  for (const chunk of chunks) {
    endpoint.handle({ kind: 'data', connId: id, bytes: chunk }, 0);
    const { sent: s, actions } = drainActions(endpoint);
    sent.push(...(s.get(id) ?? []));
    closed ||= actions.some((a) => a.kind === 'close' && a.connId === id);
    delivered += actions.filter((a) => a.kind === 'deliver').length;
  }
  return { frames: decodeAll(sent), closed, delivered };
}

const errorOf = (frames: Frame[]): string => {
  const error = frames.find((f) => f.type === FrameType.Error);
  return error ? decodeError(error.payload).message : '<no ERROR frame>';
};

test('a correct raw dialer gets HELLO, then the acceptor proof only after its own proof verified', () => {
  const beta = acceptor();
  const id = beta.accept(0)!;
  beta.handle({ kind: 'data', connId: id, bytes: helloFrame() }, 0);
  const afterHello = decodeAll(drainActions(beta).sent.get(id)!);
  assert.deepEqual(afterHello.map((f) => f.type), [FrameType.Hello]);
  const betaHello = decodeHello(afterHello[0]!.payload);
  assert.ok(betaHello.ok);
  const input = { dialer: { windowBytes: 1 << 20, nonce: dialerNonce, incarnation: dialerIncarnation, name: 'alpha', protocolVersion: PEER_PROTOCOL_VERSION }, acceptor: betaHello.value };
  const crypto = testCrypto();
  beta.handle({ kind: 'data', connId: id, bytes: frameToBytes(encodeFrame(FrameType.Auth, 0, 0, computeProof(crypto, SECRET, 'dialer', input))) }, 0);
  const afterAuthBytes = drainActions(beta).sent.get(id)!;
  // The AUTH is the acceptor's last clear frame; what follows is sealed under keys the dialer derives itself.
  const keys = deriveLinkKeys(crypto, SECRET, input);
  const decoder = new FrameDecoder();
  for (const chunk of afterAuthBytes) decoder.push(chunk);
  const auth = decoder.next();
  assert.ok(auth.kind === 'frame' && auth.frame.type === FrameType.Auth);
  assert.deepEqual(auth.frame.payload, computeProof(crypto, SECRET, 'acceptor', input));
  decoder.openWith(new FrameOpener(crypto, keys.acceptorToDialer));
  const resume = decoder.next();
  assert.ok(resume.kind === 'frame' && resume.frame.type === FrameType.Resume && resume.frame.seq === 0, JSON.stringify(resume));
  assert.equal(decoder.next().kind, 'need-more');
  assert.equal(decodeAll(afterAuthBytes).length, 1, 'the RESUME is not a clear frame');
  // The dialer's own sealed RESUME and DATA are accepted and delivered.
  const sealer = new FrameSealer(crypto, keys.dialerToAcceptor);
  beta.handle({ kind: 'data', connId: id, bytes: frameToBytes(sealer.seal(FrameType.Resume, 0, 0, new Uint8Array(0))) }, 0);
  beta.handle({ kind: 'data', connId: id, bytes: frameToBytes(sealer.seal(FrameType.Data, DataFlag.First | DataFlag.Last, 1, bytesOf('hello beta'))) }, 0);
  const { actions } = drainActions(beta);
  const delivered = actions.filter((a) => a.kind === 'deliver');
  assert.deepEqual(delivered.map((a) => a.kind === 'deliver' && new TextDecoder().decode(a.message)), ['hello beta']);
  assert.ok(!actions.some((a) => a.kind === 'close'));
});

test('a reflected proof (the acceptor role) or a wrong proof is refused', () => {
  for (const role of ['acceptor', 'wrong'] as const) {
    const beta = acceptor();
    const id = beta.accept(0)!;
    beta.handle({ kind: 'data', connId: id, bytes: helloFrame() }, 0);
    const betaHello = decodeHello(decodeAll(drainActions(beta).sent.get(id)!)[0]!.payload);
    assert.ok(betaHello.ok);
    const input = { dialer: { windowBytes: 1 << 20, nonce: dialerNonce, incarnation: dialerIncarnation, name: 'alpha', protocolVersion: PEER_PROTOCOL_VERSION }, acceptor: betaHello.value };
    const proof = role === 'acceptor' ? computeProof(testCrypto(), SECRET, 'acceptor', input) : pattern(32, 99);
    beta.handle({ kind: 'data', connId: id, bytes: frameToBytes(encodeFrame(FrameType.Auth, 0, 0, proof)) }, 0);
    const { sent, actions } = drainActions(beta);
    const frames = decodeAll(sent.get(id)!);
    assert.deepEqual(frames.map((f) => f.type), [FrameType.Error], 'no AUTH or RESUME is sent back');
    assert.equal(decodeError(frames[0]!.payload).code, LinkErrorCode.AuthFailed);
    assert.ok(actions.some((a) => a.kind === 'close'));
    assert.equal(beta.stats('alpha')!.state, 'auth-failed');
  }
});

test('a protocol version mismatch is named clearly', () => {
  const beta = acceptor();
  const { frames, closed } = rawDial(beta, 'alpha', [helloFrame({}, 1)]);
  assert.equal(closed, true);
  assert.match(errorOf(frames), /protocol version mismatch: this array speaks v2, peer sent v1/);
});

test('an unknown name in a raw HELLO is refused', () => {
  const { frames, closed } = rawDial(acceptor(), 'x', [helloFrame({ name: 'mallory' })]);
  assert.equal(closed, true);
  assert.match(errorOf(frames), /mallory is not a configured peer/);
});

test('data, acks or resumes before authentication close the connection and deliver nothing', () => {
  const data = frameToBytes(encodeFrame(FrameType.Data, DataFlag.First | DataFlag.Last, 1, bytesOf('sneaky')));
  const ack = frameToBytes(encodeFrame(FrameType.Ack, 0, 0, new Uint8Array(0)));
  const resume = frameToBytes(encodeFrame(FrameType.Resume, 0, 0, new Uint8Array(0)));
  for (const chunks of [[data], [ack], [resume], [helloFrame(), data], [helloFrame(), resume]]) {
    const beta = acceptor();
    const r = rawDial(beta, 'alpha', chunks);
    assert.equal(r.closed, true);
    assert.equal(r.delivered, 0);
    assert.match(errorOf(r.frames), /before authentication/);
    assert.notEqual(beta.stats('alpha')!.state, 'up');
  }
});

test('garbage bytes close the connection cleanly, never crash', () => {
  const prng = new Prng(5);
  for (let i = 0; i < 300; i++) {
    const garbage = new Uint8Array(prng.int(1, 300));
    prng.fill(garbage);
    const chunks = i % 3 === 0 ? [helloFrame(), garbage] : [garbage];
    const beta = acceptor();
    const r = rawDial(beta, 'alpha', chunks);
    assert.equal(r.delivered, 0);
    // Fewer than a header's bytes may simply wait; anything decodable as wrong closes.
    if (garbage.length >= 24 && i % 3 !== 0) assert.equal(r.closed, true, `garbage ${i}`);
  }
});

test('a connection that never authenticates is closed by the handshake timeout', () => {
  const beta = new LinkEndpoint(linkConfig('beta', { handshakeTimeoutMs: 1000 }), 0);
  beta.addPeer({ name: 'alpha', address: 'a:1', secret: SECRET }, 0);
  const id = beta.accept(0)!;
  assert.equal(beta.nextDeadlineMs(), 500, 'dead-after comes first');
  beta.handle({ kind: 'data', connId: id, bytes: helloFrame() }, 400);
  drainActions(beta);
  beta.handle({ kind: 'tick' }, 1000);
  const { actions } = drainActions(beta);
  assert.deepEqual(actions.filter((a) => a.kind === 'close'), [{ kind: 'close', connId: id, reason: 'handshake timed out' }]);
});

test('unauthenticated inbound connections are bounded', () => {
  const beta = new LinkEndpoint(linkConfig('beta', { maxPendingInbound: 3 }), 0);
  const ids = [beta.accept(0), beta.accept(0), beta.accept(0), beta.accept(0)];
  assert.deepEqual(ids.map((id) => id === undefined), [false, false, false, true]);
});

test('one source address cannot take every pending slot: the others still get in, and it gets in again once its handshakes end', () => {
  const beta = new LinkEndpoint(linkConfig('beta', { maxPendingInbound: 6, maxPendingInboundPerSource: 2, handshakeTimeoutMs: 1000 }), 0);
  const flood = [beta.accept(0, '203.0.113.9'), beta.accept(0, '203.0.113.9'), beta.accept(0, '203.0.113.9')];
  assert.deepEqual(flood.map((id) => id === undefined), [false, false, true]);
  assert.notEqual(beta.accept(0, '198.51.100.7'), undefined, 'another source is still admitted');
  beta.handle({ kind: 'tick' }, 1000); // the flood's handshakes time out
  for (const a of drainActions(beta).actions) if (a.kind === 'close') beta.handle({ kind: 'closed', connId: a.connId, reason: a.reason }, 1000);
  assert.notEqual(beta.accept(1000, '203.0.113.9'), undefined);
});

// ---- the peer protocol version in the HELLO ----

test('arrays speaking different peer protocol versions refuse each other at the handshake, and both say why', () => {
  const alpha = new LinkEndpoint(linkConfig('alpha', { protocolVersion: PEER_PROTOCOL_VERSION + 1 }), 0);
  const beta = new LinkEndpoint(linkConfig('beta'), 0);
  alpha.addPeer({ name: 'beta', address: 'beta:1', secret: SECRET }, 0);
  beta.addPeer({ name: 'alpha', address: 'alpha:1', secret: SECRET }, 0);
  const p = new LinkPair(alpha, beta);
  p.a.endpoint.send('beta', bytesOf('must not arrive'));
  p.run();
  p.advance(300);
  const a = p.a.endpoint.stats('beta')!;
  const b = p.b.endpoint.stats('alpha')!;
  assert.notEqual(a.state, 'up');
  assert.notEqual(b.state, 'up');
  const expected = new RegExp(`peer protocol version mismatch: alpha speaks v${PEER_PROTOCOL_VERSION + 1}, beta speaks v${PEER_PROTOCOL_VERSION}`);
  assert.match(b.lastError!, expected, 'the acceptor shows the refusal');
  assert.match(a.lastError!, expected, 'the dialer shows the reason the acceptor sent');
  assert.deepEqual(p.b.delivered, []);
  assert.equal(p.b.events.filter((e) => e.kind === 'peer-up').length + p.a.events.filter((e) => e.kind === 'peer-up').length, 0);
  assert.ok(p.a.logs.some((e) => e.level === 'error' && /refused by the peer/.test(e.msg)), 'the dialer logs it');
  assert.ok(p.b.logs.some((e) => e.level === 'error' && /version mismatch/.test(e.msg)), 'the acceptor logs it');
});

test('a dialer whose HELLO has no version field (the old layout) is refused as v1 before any proof', () => {
  const beta = acceptor();
  const hello = encodeHello({ windowBytes: 1 << 20, nonce: dialerNonce, incarnation: dialerIncarnation, name: 'alpha', protocolVersion: 0 });
  const oldLayout = hello.subarray(0, hello.length - 2);
  const { frames, closed } = rawDial(beta, 'alpha', [frameToBytes(encodeFrame(FrameType.Hello, 0, 0, oldLayout))]);
  assert.deepEqual(frames.map((f) => f.type), [FrameType.Error], 'no HELLO of its own, no proof');
  assert.equal(decodeError(frames[0]!.payload).code, LinkErrorCode.VersionMismatch);
  assert.match(errorOf(frames), new RegExp(`alpha speaks v1, beta speaks v${PEER_PROTOCOL_VERSION} \\(upgrade alpha\\)`));
  assert.ok(closed);
  assert.match(beta.stats('alpha')!.lastError!, /alpha speaks v1/);
});

test('a dialer answered by an acceptor of another version refuses before sending its proof', () => {
  const alpha = new LinkEndpoint(linkConfig('alpha'), 0);
  alpha.addPeer({ name: 'beta', address: 'beta:1', secret: SECRET }, 0);
  alpha.handle({ kind: 'tick' }, 0);
  const dial = drainActions(alpha).actions.find((x) => x.kind === 'dial')!;
  assert.ok(dial && dial.kind === 'dial');
  alpha.handle({ kind: 'connected', connId: dial.connId }, 0);
  drainActions(alpha);
  const betaHello = encodeHello({ windowBytes: 1 << 20, nonce: pattern(32, 5), incarnation: pattern(8, 6), name: 'beta', protocolVersion: PEER_PROTOCOL_VERSION + 3 });
  alpha.handle({ kind: 'data', connId: dial.connId, bytes: frameToBytes(encodeFrame(FrameType.Hello, 0, 0, betaHello)) }, 0);
  const { sent, actions } = drainActions(alpha);
  const frames = decodeAll(sent.get(dial.connId) ?? []);
  assert.deepEqual(frames.map((f) => f.type), [FrameType.Error], 'no AUTH proof is sent to it');
  assert.equal(decodeError(frames[0]!.payload).code, LinkErrorCode.VersionMismatch);
  assert.ok(actions.some((x) => x.kind === 'close' && x.connId === dial.connId));
  assert.match(alpha.stats('beta')!.lastError!, new RegExp(`beta speaks v${PEER_PROTOCOL_VERSION + 3}, alpha speaks v${PEER_PROTOCOL_VERSION} \\(upgrade alpha\\)`));
});
