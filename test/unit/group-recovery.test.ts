import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decideGroupRecovery, type MemberRecoveryInput } from '../../src/core/group/group-recovery.js';

const m = (member: string, committedTag: number | null, received: MemberRecoveryInput['received'] = null): MemberRecoveryInput =>
  ({ member, committedTag, received });
const actions = (d: ReturnType<typeof decideGroupRecovery>): string[] => d.members.map((x) => `${x.member}:${x.action}`);

test('all complete with the same tag: apply all', () => {
  const d = decideGroupRecovery([m('a', 4, { tag: 5, complete: true }), m('b', 4, { tag: 5, complete: true })]);
  assert.deepEqual(actions(d), ['a:apply', 'b:apply']);
  assert.equal(d.targetTag, 5);
  assert.ok(d.consistent);
});

test('complete cycles with different tags: apply the lower, discard the higher (the seed example, tags 3 and 4)', () => {
  const d = decideGroupRecovery([m('a', 2, { tag: 3, complete: true }), m('b', 3, { tag: 4, complete: true })]);
  assert.deepEqual(actions(d), ['a:apply', 'b:discard']);
  assert.equal(d.targetTag, 3);
  assert.ok(d.consistent);
  assert.match(d.members[1]!.reason, /newer/);
});

test('incomplete cycles are discarded, and a complete cycle newer than what an incomplete member reaches is discarded too', () => {
  const d = decideGroupRecovery([m('a', 4, { tag: 5, complete: true }), m('b', 4, { tag: null, complete: false }), m('c', 4)]);
  assert.deepEqual(actions(d), ['a:discard', 'b:discard', 'c:none']);
  assert.equal(d.targetTag, 4);
  assert.ok(d.consistent);
  assert.match(d.members[1]!.reason, /incomplete/);
});

test('no received cycles anywhere: nothing to do; a group formed at rest (no tags yet) recovers to before the first tag', () => {
  assert.deepEqual(actions(decideGroupRecovery([m('a', 7), m('b', 7)])), ['a:none', 'b:none']);
  const d = decideGroupRecovery([m('a', null, { tag: 1, complete: true }), m('b', null, { tag: 1, complete: false })], { startIsGroupPoint: true });
  assert.deepEqual(actions(d), ['a:discard', 'b:discard']);
  assert.equal(d.targetTag, null);
  assert.ok(d.consistent);
});

test('members added to running pairs with no group cycle yet: no group point, reported (cycles seed 7881)', () => {
  const d = decideGroupRecovery([m('a', null, { tag: 1, complete: true }), m('b', null, { tag: 1, complete: false })]);
  assert.equal(d.consistent, false);
  assert.match(d.problems[0]!, /member\(s\) b reach no group-tagged cycle/);
  // A lone member is consistent with itself whatever its point.
  assert.ok(decideGroupRecovery([m('a', null)]).consistent);
  // One member without a group cycle keeps the others from a point even if they have one.
  assert.equal(decideGroupRecovery([m('a', 5), m('b', null)]).consistent, false);
});

test('a member committed past what another reaches: reported as not consistent, never guessed', () => {
  const d = decideGroupRecovery([m('a', 6), m('b', 4, { tag: 5, complete: true })]);
  assert.equal(d.consistent, false);
  assert.equal(d.problems.length, 1);
  assert.match(d.problems[0]!, /member a ends at tag 6/);
});

test('every reachable combination the protocol allows ends consistent', () => {
  // Members at group point s−1 or s (committed), with received cycles per the protocol's rules.
  const s = 10;
  const options: MemberRecoveryInput['received'][] = [null, { tag: null, complete: false }];
  for (let mask = 0; mask < 3 ** 3; mask++) {
    const members: MemberRecoveryInput[] = [];
    let x = mask;
    for (let i = 0; i < 3; i++) {
      const kind = x % 3; x = Math.floor(x / 3);
      // 0: committed s−1, received s complete; 1: committed s−1, s incomplete; 2: committed s, s+1 incomplete or none
      if (kind === 0) members.push(m(`m${i}`, s - 1, { tag: s, complete: true }));
      else if (kind === 1) members.push(m(`m${i}`, s - 1, options[1]));
      else members.push(m(`m${i}`, s, (mask & 1) ? options[0] : options[1]));
    }
    // If anyone committed s, nobody can be missing a complete s (commit needs every seal).
    if (members.some((q) => q.committedTag === s) && members.some((q) => q.committedTag === s - 1 && !q.received?.complete)) continue;
    const d = decideGroupRecovery(members);
    assert.ok(d.consistent, `mask ${mask}: ${d.problems.join('; ')}`);
    assert.ok(new Set(d.members.map((q) => q.resultTag)).size === 1);
  }
});
