// The journal's core machines on examples: the sequencer, a primary position, a secondary queue.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Sequencer } from '../../src/core/journal/sequencer.js';
import { JournalPrimary, type PrimaryAction, type PrimaryConfig } from '../../src/core/journal/journal-primary.js';
import { JournalSecondary, emptyDurable, type SecondaryAction } from '../../src/core/journal/journal-secondary.js';
import { splitWrite, type JournalMessage, type Token, type TokenSpec } from '../../src/core/journal/journal-types.js';

const spec = (volume: string, offset: number, length: number, secondary = 's0'): TokenSpec => ({ pair: `${volume}>${secondary}`, volume, offset, length, secondary });
const tok = (sequence: number, secondary = 's0', length = 4): Token => ({ ...spec('v', sequence * 8, length, secondary), sequence, timeMs: sequence });
const msg = (from: string, continuity: number, tokens: Token[], entries: Token[] = [], role: 'primary' | 'sequencer' = 'primary'): JournalMessage => ({
  journal: 'j', from, role, type: 'data', continuity, tokens, entries: entries.map((token) => ({ token, data: new Uint8Array(token.length).fill(token.sequence) })),
});
const kinds = (actions: readonly { kind: string }[]): string[] => actions.map((a) => a.kind);

test('sequencer: contiguous ranges in request order, a repeated request gets the same numbers, every secondary gets every token', () => {
  const s = new Sequencer({ journal: 'j', self: 'p0', secondaries: ['s0', 's1'], retransmitMs: 10, windowMessages: 8 });
  s.handle({ kind: 'request', from: 'p1', incarnation: 1, requestId: 1, specs: [spec('a', 0, 4), spec('a', 4, 4, 's1')] }, 5);
  s.handle({ kind: 'request', from: 'p0', incarnation: 1, requestId: 1, specs: [spec('b', 0, 4)] }, 6);
  s.handle({ kind: 'request', from: 'p1', incarnation: 1, requestId: 1, specs: [spec('a', 0, 4), spec('a', 4, 4, 's1')] }, 7);
  const actions = s.poll(7);
  const grants = actions.filter((a) => a.kind === 'grant');
  assert.deepEqual(grants.map((g) => [g.to, g.grant.first, g.grant.count, g.grant.timeMs]), [['p1', 1, 2, 5], ['p0', 3, 1, 6], ['p1', 1, 2, 5]]);
  const sends = actions.filter((a) => a.kind === 'send');
  assert.deepEqual(sends.map((a) => [a.to, a.message.continuity, a.message.tokens.map((t) => `${t.sequence}:${t.secondary}`)]),
    [['s0', 1, ['1:s0', '2:s1', '3:s0']], ['s1', 1, ['1:s0', '2:s1', '3:s0']]]);
  assert.equal(s.issued, 3);
  // Unacknowledged fan-out is sent again after a quiet spell; an ack stops it.
  assert.deepEqual(kinds(s.poll(16)), []);
  assert.deepEqual(kinds(s.poll(17)), ['send', 'send']);
  s.handle({ kind: 'ack', from: 's0', ackUpTo: 1 }, 18);
  assert.deepEqual(s.poll(30).map((a) => a.kind === 'send' && a.to), ['s1']);
  // A restarted primary (new incarnation) reusing request id 1 gets new numbers.
  s.handle({ kind: 'request', from: 'p1', incarnation: 2, requestId: 1, specs: [spec('a', 0, 4)] }, 31);
  const g = s.poll(31).find((a) => a.kind === 'grant');
  assert.equal(g?.kind === 'grant' && g.grant.first, 4);
});

const primaryConfig = (over: Partial<PrimaryConfig> = {}): PrimaryConfig => ({
  journal: 'j', self: 'p1', sequencer: 'p0', tokens: 'ahead', intervalMs: 10, batchBytes: 12, retransmitMs: 50, windowMessages: 4, incarnation: 1, maxPendingBytes: 1e12, ...over,
});

test('primary: writes waiting while a request is out go in one request; ahead completes at the grant; data leaves by bytes or interval', () => {
  const p = new JournalPrimary(primaryConfig());
  p.handle({ kind: 'write', writeId: 1, specs: [spec('v', 0, 4)] }, 0);
  const first = p.poll(0);
  assert.deepEqual(first.map((a) => a.kind === 'request' && a.specs.length), [1]);
  p.handle({ kind: 'write', writeId: 2, specs: [spec('v', 4, 4)] }, 1);
  p.handle({ kind: 'write', writeId: 3, specs: [spec('v', 8, 4)] }, 1);
  assert.deepEqual(kinds(p.poll(1)), [], 'no second request while one is out');
  p.handle({ kind: 'grant', grant: { requestId: 1, first: 10, count: 1, timeMs: 1 } }, 2);
  const afterGrant = p.poll(2);
  assert.deepEqual(afterGrant.map((a) => `${a.kind}${a.kind === 'request' ? `:${a.specs.length}` : ''}`), ['tokens', 'token-done', 'request:2']);
  p.handle({ kind: 'grant', grant: { requestId: 2, first: 11, count: 2, timeMs: 3 } }, 3);
  p.poll(3);
  p.handle({ kind: 'captured', writeId: 1, data: [new Uint8Array(4)] }, 4);
  assert.deepEqual(kinds(p.poll(4)), [], '4 bytes of 12: waits for more or for the interval');
  p.handle({ kind: 'captured', writeId: 2, data: [new Uint8Array(4)] }, 5);
  p.handle({ kind: 'captured', writeId: 3, data: [new Uint8Array(4)] }, 5);
  const sent = p.poll(5).filter((a): a is Extract<PrimaryAction, { kind: 'send' }> => a.kind === 'send');
  assert.equal(sent.length, 1);
  assert.deepEqual(sent[0]!.message.tokens.map((t) => t.sequence), [10, 11, 12], 'the tokens since the previous message');
  assert.deepEqual(sent[0]!.message.entries.map((e) => e.token.sequence), [10, 11, 12]);
  assert.equal(sent[0]!.message.continuity, 1);
  // By interval: one more entry leaves 10 ms after it was captured.
  p.handle({ kind: 'write', writeId: 4, specs: [spec('v', 0, 4)] }, 6);
  p.poll(6);
  p.handle({ kind: 'grant', grant: { requestId: 3, first: 13, count: 1, timeMs: 6 } }, 6);
  p.poll(6);
  p.handle({ kind: 'captured', writeId: 4, data: [new Uint8Array(4)] }, 7);
  assert.deepEqual(kinds(p.poll(16)), []);
  const late = p.poll(17);
  assert.deepEqual(late.map((a) => a.kind === 'send' && a.message.continuity), [2]);
});

test('primary, tokens sync: a write completes only when every secondary of its pieces holds its token; tokens leave at once', () => {
  const p = new JournalPrimary(primaryConfig({ tokens: 'sync' }));
  p.handle({ kind: 'write', writeId: 1, specs: [spec('v', 0, 4, 's0'), spec('v', 4, 4, 's1')] }, 0);
  p.poll(0);
  p.handle({ kind: 'grant', grant: { requestId: 1, first: 1, count: 2, timeMs: 0 } }, 1);
  const actions = p.poll(1);
  assert.deepEqual(actions.map((a) => (a.kind === 'send' ? `send:${a.to}:${a.message.tokens.length}:${a.message.entries.length}` : a.kind)),
    ['tokens', 'send:s0:1:0', 'send:s1:1:0']);
  p.handle({ kind: 'ack', from: 's0', ackUpTo: 1 }, 2);
  assert.deepEqual(kinds(p.poll(2)), []);
  p.handle({ kind: 'ack', from: 's1', ackUpTo: 1 }, 3);
  assert.deepEqual(kinds(p.poll(3)), ['token-done']);
  // Unacknowledged messages are sent again, in order, after the retransmit time.
  p.handle({ kind: 'captured', writeId: 1, data: [new Uint8Array(4), new Uint8Array(4)] }, 4);
  p.poll(20);
  const again = p.poll(80).filter((a) => a.kind === 'send');
  assert.deepEqual(again.map((a) => a.kind === 'send' && `${a.to}:${a.message.continuity}`), ['s0:2', 's1:2']);
});

test('primary: beyond maxPendingBytes of captured bytes not yet acknowledged, new writes wait for their numbers', () => {
  const p = new JournalPrimary(primaryConfig({ maxPendingBytes: 8, batchBytes: 4096, intervalMs: 0 }));
  p.handle({ kind: 'write', writeId: 1, specs: [spec('v', 0, 8)] }, 0);
  p.poll(0);
  p.handle({ kind: 'grant', grant: { requestId: 1, first: 1, count: 1, timeMs: 0 } }, 0);
  p.poll(0);
  p.handle({ kind: 'captured', writeId: 1, data: [new Uint8Array(8)] }, 1);
  const sent = p.poll(1).find((a) => a.kind === 'send');
  assert.ok(sent);
  assert.equal(p.pendingBytes, 8);
  p.handle({ kind: 'write', writeId: 2, specs: [spec('v', 8, 4)] }, 2);
  assert.deepEqual(kinds(p.poll(2)), [], 'held: 8 bytes in flight');
  p.handle({ kind: 'ack', from: 's0', ackUpTo: 1 }, 3);
  assert.equal(p.pendingBytes, 0);
  assert.deepEqual(kinds(p.poll(3)), ['request']);
});

test('splitWrite: one piece per pair whose extents the write touches', () => {
  const pairs = [
    { id: 'a', volume: 'v', secondary: 's0', extents: [{ offset: 0, length: 100 }] },
    { id: 'b', volume: 'v', secondary: 's1', extents: [{ offset: 100, length: 100 }] },
    { id: 'c', volume: 'w', secondary: 's0', extents: undefined },
  ];
  assert.deepEqual(splitWrite(pairs, 'v', 90, 20).map((s) => [s.pair, s.offset, s.length]), [['a', 90, 10], ['b', 100, 10]]);
  assert.deepEqual(splitWrite(pairs, 'v', 300, 20), []);
  assert.deepEqual(splitWrite(pairs, 'w', 5, 5).map((s) => [s.pair, s.offset, s.length]), [['c', 5, 5]]);
});

const secondary = (self = 's0', secondaries = ['s0']) =>
  new JournalSecondary({ journal: 'j', self, secondaries, announceMs: 100 }, emptyDurable());

const applies = (actions: readonly SecondaryAction[]): string[] =>
  actions.filter((a) => a.kind === 'apply').map((a) => (a.kind === 'apply' ? `${a.upTo}:${a.entries.map((e) => e.token.sequence).join(',')}` : ''));

test('secondary: applies only runs of complete entries, in order; numbers of other secondaries only need their token', () => {
  const s = secondary('s0', ['s0', 's9']);
  s.handle({ kind: 'watermark', from: 's9', completeUpTo: 10 }, 0);
  // Tokens 1..4 from the sequencer (3 is another secondary's); data for 1, 2 and 4.
  s.handle({ kind: 'message', message: msg('p0', 1, [tok(1), tok(2), tok(3, 's9'), tok(4)], [], 'sequencer') }, 0);
  s.handle({ kind: 'message', message: msg('p1', 1, [], [tok(2), tok(4)]) }, 1);
  assert.equal(s.completeUpTo, 0);
  assert.deepEqual(applies(s.poll(1)), []);
  assert.deepEqual([s.blockedAt?.sequence, s.blockedAt?.token?.secondary], [1, 's0'], 'waiting for the data of 1');
  s.handle({ kind: 'message', message: msg('p1', 2, [], [tok(1)]) }, 2);
  assert.equal(s.completeUpTo, 4);
  const out = s.poll(2);
  assert.deepEqual(applies(out), ['4:1,2,4']);
  s.handle({ kind: 'applied', upTo: 4 }, 3);
  assert.deepEqual(s.poll(3).filter((a) => a.kind === 'prune').map((a) => a.kind === 'prune' && a.upTo), [4]);
  assert.equal(s.durable.data.size, 0);
  assert.equal(s.durable.tokens.size, 0);
  assert.equal(s.blockedAt, undefined, 'nothing known beyond what is complete');
  // A number owned by a secondary this queue does not know yet (it joined a moment ago) stops the run.
  s.handle({ kind: 'message', message: msg('p0', 2, [tok(5, 's7'), tok(6)], [], 'sequencer') }, 4);
  s.handle({ kind: 'message', message: msg('p1', 3, [], [tok(6)]) }, 4);
  assert.equal(s.completeUpTo, 4);
});

test('secondary: a run is applied only up to the smallest watermark of all secondaries', () => {
  const s = secondary('s0', ['s0', 's1']);
  s.handle({ kind: 'message', message: msg('p1', 1, [], [tok(1), tok(2), tok(3)]) }, 0);
  assert.equal(s.completeUpTo, 3);
  assert.deepEqual(applies(s.poll(0)), [], 's1 has said nothing yet');
  s.handle({ kind: 'watermark', from: 's1', completeUpTo: 2 }, 1);
  assert.deepEqual(applies(s.poll(1)), ['2:1,2']);
  s.handle({ kind: 'applied', upTo: 2 }, 2);
  s.handle({ kind: 'watermark', from: 's1', completeUpTo: 1 }, 3); // older news: ignored
  s.handle({ kind: 'watermark', from: 's1', completeUpTo: 9 }, 4);
  assert.deepEqual(applies(s.poll(4)), ['3:3']);
});

test('secondary: continuity — a message out of order is not taken, a repeat is not taken twice, and each is acknowledged cumulatively after it is persisted', () => {
  const s = secondary();
  s.handle({ kind: 'message', message: msg('p1', 2, [tok(2)], [tok(2)]) }, 0);
  const gap = s.poll(0).filter((a) => a.kind !== 'announce');
  assert.deepEqual(gap.map((a) => (a.kind === 'send' ? `ack ${a.message.ackUpTo}` : a.kind)), ['ack 0']);
  s.handle({ kind: 'message', message: msg('p1', 1, [tok(1)], [tok(1)]) }, 1);
  const first = s.poll(1);
  assert.deepEqual(kinds(first).slice(0, 2), ['persist', 'send'], 'persisted before it is acknowledged');
  s.handle({ kind: 'message', message: msg('p1', 1, [tok(1)], [tok(1)]) }, 2);
  assert.deepEqual(kinds(s.poll(2)).filter((k) => k === 'persist'), [], 'a repeat is not taken twice');
  // The sequencer's stream and the primary's stream from one array are separate.
  s.handle({ kind: 'message', message: msg('p1', 1, [tok(3)], [], 'sequencer') }, 3);
  assert.deepEqual(kinds(s.poll(3)).filter((k) => k === 'persist'), ['persist']);
});

test('secondary: after a crash it resumes from its durable state — the same numbers complete, the next continuity expected', () => {
  const s = secondary();
  s.handle({ kind: 'message', message: msg('p1', 1, [tok(1), tok(2)], [tok(1)]) }, 0);
  s.poll(0);
  const restarted = new JournalSecondary({ journal: 'j', self: 's0', secondaries: ['s0'], announceMs: 100 }, s.durable);
  assert.equal(restarted.completeUpTo, 1);
  restarted.handle({ kind: 'message', message: msg('p1', 1, [tok(1), tok(2)], [tok(1)]) }, 1);
  assert.deepEqual(kinds(restarted.poll(1)).filter((k) => k === 'persist'), []);
  restarted.handle({ kind: 'message', message: msg('p1', 2, [], [tok(2)]) }, 2);
  assert.equal(restarted.completeUpTo, 2);
});

test('secondary recovery: applies up to the given point, takes no more messages, and refuses a point below what it applied', () => {
  const s = secondary();
  s.handle({ kind: 'message', message: msg('p1', 1, [tok(1), tok(2), tok(3)], [tok(1), tok(3)]) }, 0);
  assert.deepEqual(applies(s.poll(0)), ['1:1']);
  s.handle({ kind: 'applied', upTo: 1 }, 1);
  const st = s.queueState();
  assert.deepEqual([st.appliedUpTo, st.appliedTimeMs, st.tokens.map((t) => t.sequence), st.dataSequences, st.primaryTokens], [1, 1, [2, 3], [3], [2, 3]]);
  assert.throws(() => s.recover(0, 2), /below what is applied/);
  assert.deepEqual(applies(s.recover(1, 2)), [], 'nothing beyond what is applied');
  s.handle({ kind: 'message', message: msg('p1', 2, [], [tok(2)]) }, 3);
  assert.deepEqual(kinds(s.poll(3)).filter((k) => k !== 'announce'), [], 'recovered: the stream is over');
  assert.equal(s.completeUpTo, 1);
});
