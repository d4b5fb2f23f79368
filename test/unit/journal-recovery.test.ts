// The journal loss report (core/journal/journal-recovery.ts), checked exhaustively against a
// brute-force reading of the rule on every small queue configuration, then on examples.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { computeRecovery, type QueueState } from '../../src/core/journal/journal-recovery.js';
import type { Token } from '../../src/core/journal/journal-types.js';
import { Prng } from '../../src/core/lib/prng.js';
import { isTidemarkError } from '../../src/core/errors.js';

const SECONDARIES = ['a', 'b'] as const;
const token = (sequence: number, secondary: string): Token =>
  ({ pair: `v${sequence % 3}>${secondary}`, volume: `v${sequence % 3}`, offset: sequence * 512, length: 512, secondary, sequence, timeMs: 1000 + sequence });

/** What one sequence number looks like across the two secondaries. */
interface SeqCase {
  readonly owner: 'a' | 'b';
  /** The owner holds the token: not at all, via the sequencer only, via its primary. */
  readonly ownerToken: 'none' | 'sequencer' | 'primary';
  readonly ownerData: boolean;
  readonly otherToken: boolean;
}

const SEQ_CASES: SeqCase[] = [];
for (const owner of SECONDARIES) {
  for (const ownerToken of ['none', 'sequencer', 'primary'] as const) {
    for (const ownerData of ownerToken === 'primary' ? [false, true] : [false]) {
      for (const otherToken of [false, true]) SEQ_CASES.push({ owner, ownerToken, ownerData, otherToken });
    }
  }
}

function statesOf(cases: readonly SeqCase[], applied: { a: number; b: number }): QueueState[] {
  return SECONDARIES.map((s) => {
    const tokens: Token[] = [];
    const data: number[] = [];
    const viaPrimary: number[] = [];
    cases.forEach((c, i) => {
      const q = i + 1;
      if (q <= applied[s]) return;
      const mine = c.owner === s;
      if ((mine && c.ownerToken !== 'none') || (!mine && c.otherToken)) tokens.push(token(q, c.owner));
      if (mine && c.ownerData) data.push(q);
      if (mine && c.ownerToken === 'primary') viaPrimary.push(q);
    });
    return { secondary: s, appliedUpTo: applied[s], appliedTimeMs: applied[s] === 0 ? null : 1000 + applied[s], tokens, dataSequences: data, primaryTokens: viaPrimary, lastMessageMs: null };
  });
}

/** The rule read literally: the point is before the first number not known anywhere or without its data. */
function bruteForce(cases: readonly SeqCase[], mode: 'ahead' | 'sync') {
  const known = (c: SeqCase): boolean => c.ownerToken !== 'none' || c.otherToken;
  let point = 0;
  while (point < cases.length && known(cases[point]!) && cases[point]!.ownerData) point++;
  const lost: number[] = [];
  const stranded: number[] = [];
  const unack: number[] = [];
  cases.forEach((c, i) => {
    const q = i + 1;
    if (q <= point || !known(c)) return;
    if (c.ownerData) stranded.push(q);
    else if (mode === 'sync' && c.ownerToken !== 'primary') unack.push(q);
    else lost.push(q);
  });
  return { point, lost, stranded, unack };
}

function* allCases(n: number): Generator<SeqCase[]> {
  const idx = new Array<number>(n).fill(0);
  for (;;) {
    yield idx.map((i) => SEQ_CASES[i]!);
    let k = 0;
    while (k < n && ++idx[k]! === SEQ_CASES.length) idx[k++] = 0;
    if (k === n) return;
  }
}

test('every configuration of 4 numbers over 2 secondaries, both token modes: point, lost, stranded, unacknowledged as the rule says', () => {
  let checked = 0;
  for (const cases of allCases(4)) {
    for (const mode of ['ahead', 'sync'] as const) {
      const r = computeRecovery(SECONDARIES, statesOf(cases, { a: 0, b: 0 }), mode);
      const want = bruteForce(cases, mode);
      const got = { point: r.consistentSequence, lost: r.lost.map((e) => e.sequence), stranded: r.stranded.map((e) => e.sequence), unack: r.unacknowledged.map((e) => e.sequence) };
      assert.deepEqual(got, want, JSON.stringify(cases));
      assert.equal(r.consistentTime, want.point === 0 ? null : 1000 + want.point);
      for (const e of [...r.lost, ...r.stranded]) {
        const t = token(e.sequence, cases[e.sequence - 1]!.owner);
        assert.deepEqual([e.volume, e.offset, e.length, e.secondary], [t.volume, t.offset, t.length, t.secondary]);
      }
      checked++;
    }
  }
  assert.equal(checked, 2 * SEQ_CASES.length ** 4);
});

test('what secondaries already applied (and pruned) counts as complete, whichever of them applied it: 20,000 random configurations', () => {
  const prng = new Prng(11);
  for (let i = 0; i < 20_000; i++) {
    const n = prng.int(1, 7);
    const cases = Array.from({ length: n }, () => prng.pick(SEQ_CASES));
    const want = bruteForce(cases, 'sync');
    // A secondary may have applied only what was complete everywhere: anything up to the point.
    const a = prng.int(0, want.point);
    const b = prng.chance(0.5) ? prng.int(0, a) : a;
    const applied = prng.chance(0.5) ? { a, b } : { a: b, b: a };
    const r = computeRecovery(SECONDARIES, statesOf(cases, applied), 'sync');
    assert.equal(r.consistentSequence, want.point, JSON.stringify({ cases, applied }));
    assert.deepEqual(r.lost.map((e) => e.sequence), want.lost);
    assert.deepEqual(r.stranded.map((e) => e.sequence), want.stranded);
    const toApply = Object.fromEntries(r.secondaries.map((s) => [s.secondary, s.entriesToApply]));
    for (const s of SECONDARIES) {
      const own = cases.filter((c, k) => c.owner === s && k + 1 > applied[s] && k + 1 <= want.point).length;
      assert.equal(toApply[s], own);
    }
  }
});

test('a worked example: a gap stops the point, complete entries behind it are stranded, the time is the last applied token\'s', () => {
  const a: QueueState = {
    secondary: 'a', appliedUpTo: 3, appliedTimeMs: 1003, lastMessageMs: 2000,
    tokens: [token(4, 'a'), token(5, 'b'), token(6, 'a'), token(7, 'a')], dataSequences: [4, 6], primaryTokens: [4, 6, 7],
  };
  const b: QueueState = {
    secondary: 'b', appliedUpTo: 2, appliedTimeMs: 1002, lastMessageMs: 2100,
    tokens: [token(3, 'a'), token(4, 'a'), token(5, 'b'), token(8, 'b')], dataSequences: [], primaryTokens: [5],
  };
  const r = computeRecovery(['a', 'b'], [a, b], 'sync');
  assert.equal(r.consistentSequence, 4);
  assert.equal(r.consistentTime, 1004);
  assert.deepEqual(r.lost.map((e) => e.sequence), [5, 7]);
  assert.deepEqual(r.stranded.map((e) => e.sequence), [6]);
  assert.deepEqual(r.unacknowledged.map((e) => e.sequence), [8]);
  assert.equal(r.lastMessageAt, 2100);
  assert.equal(r.highestKnown, 8);
  assert.equal(r.unknownSequences, 0);
  // Under tokens ahead, a token only the sequencer delivered may belong to an acknowledged write.
  const ahead = computeRecovery(['a', 'b'], [a, b], 'ahead');
  assert.deepEqual(ahead.lost.map((e) => e.sequence), [5, 7, 8]);
  assert.deepEqual(ahead.unacknowledged, []);
});

test('recovery refuses without every secondary\'s queue, or with one twice or a stranger', () => {
  const s = (name: string): QueueState => ({ secondary: name, appliedUpTo: 0, appliedTimeMs: null, tokens: [], dataSequences: [], primaryTokens: [], lastMessageMs: null });
  assert.throws(() => computeRecovery(['a', 'b'], [s('a')], 'sync'), (e) => isTidemarkError(e, 'TM_ERR_UNAVAILABLE') && /missing: b/.test(e.message));
  assert.throws(() => computeRecovery(['a'], [s('a'), s('a')], 'sync'), (e) => isTidemarkError(e, 'TM_ERR_INVALID_ARGUMENT'));
  assert.throws(() => computeRecovery(['a'], [s('a'), s('c')], 'sync'), (e) => isTidemarkError(e, 'TM_ERR_INVALID_ARGUMENT'));
  const empty = computeRecovery(['a'], [s('a')], 'ahead');
  assert.deepEqual([empty.consistentSequence, empty.consistentTime, empty.lost.length], [0, null, 0]);
});
