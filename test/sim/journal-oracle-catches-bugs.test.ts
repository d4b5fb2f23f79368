// The journal simulator's oracles can fail: deliberately broken machines are caught by a known seed
// with the right complaint, and the same seed passes without the bug.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runJournalSeed, type JournalSeedOptions } from '../../src/sim/journal/journal-sim.js';

function caught(bugs: NonNullable<JournalSeedOptions['bugs']>, seed: number, pattern: RegExp): void {
  const broken = runJournalSeed(seed, { bugs });
  assert.ok(!broken.ok, `seed ${seed} no longer catches ${JSON.stringify(bugs)}; find another with runJournalSeed`);
  assert.match(broken.failure!, pattern);
  const fixed = runJournalSeed(seed);
  assert.ok(fixed.ok, fixed.failure);
}

test('a secondary that applies past a gap (every entry it has data for) is caught: its image is not a prefix', () => {
  caught({ applyPastGap: true }, 2, /prefix: s\d applied up to \d+ but .* differs from the first \d+ writes/);
});

test('a secondary that ignores the other secondaries\' watermarks is caught: it passes a number whose data is nowhere', () => {
  caught({ ignorePeers: true }, 1, /prefix: s\d applied up to \d+, past \d+/);
});

test('tokens sync that completes a write before its secondary holds the token is caught: the report misses an acknowledged write or calls it unacknowledged', () => {
  caught({ syncDoneAtGrant: true }, 12, /report: write \d+ (was acknowledged, its piece \d+ is beyond the point \d+, and the report does not list it|\(number \d+\) was acknowledged but reported unacknowledged)/);
});

test('a primary that restarts without its log is caught: the numbers it held have no data anywhere and every secondary stops', () => {
  caught({ forgetLog: true }, 3, /liveness: after healing, .* of \d+ issued/);
});

test('a restarted primary that does not ask again for the grant it never logged is caught: those numbers stay without data', () => {
  caught({ dropPendingRequest: true }, 11, /liveness: after healing, .* of \d+ issued/);
});

test('a sequencer that restarts without its log is caught: numbers are handed out twice or tokens never reach the secondaries', () => {
  caught({ sequencerForgetsLog: true }, 2, /liveness|order|prefix/);
});
