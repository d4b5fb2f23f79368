import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  CleanRound, DEFAULT_CLEAN_ROUND, MAX_FLUSH_ROUND_AFTER_MS, MIN_FLUSH_ROUND_AFTER_MS, cleanRoundAfter, type CleanRoundConfig,
} from '../../src/core/replication/clean-round.js';

const config: CleanRoundConfig = { cleanAfterMs: 1000, cleanAfterBytes: 1000, retryAfterMs: 500, maxRetryMs: 2000 };

test('nothing shipped: no round, no deadline', () => {
  const c = new CleanRound(config);
  assert.equal(c.due(0), false);
  assert.equal(c.due(1e9), false);
  assert.equal(c.nextDeadlineMs(), undefined);
});

test('a round falls due once the oldest unflushed shipment is cleanAfterMs old, not before', () => {
  const c = new CleanRound(config);
  c.handle({ type: 'shipped', bytes: 10 }, 100);
  c.handle({ type: 'shipped', bytes: 10 }, 900); // a later shipment does not restart the clock
  assert.equal(c.nextDeadlineMs(), 1100);
  assert.equal(c.due(1099), false);
  assert.equal(c.due(1100), true);
});

test('a round falls due at once when cleanAfterBytes await a flush', () => {
  const c = new CleanRound(config);
  c.handle({ type: 'shipped', bytes: 600 }, 0);
  assert.equal(c.due(1), false);
  c.handle({ type: 'shipped', bytes: 400 }, 2);
  assert.equal(c.due(2), true);
});

test('a round in progress is not started again; shipments during it wait for the next', () => {
  const c = new CleanRound(config);
  c.handle({ type: 'shipped', bytes: 5000 }, 0);
  c.handle({ type: 'taken' }, 0);
  assert.equal(c.due(0), false);
  c.handle({ type: 'shipped', bytes: 1 }, 50);
  assert.equal(c.due(5000), false, 'never two rounds at once');
  c.handle({ type: 'ended', ok: true }, 60);
  assert.equal(c.pendingBytes, 1);
  assert.equal(c.due(1049), false, 'the newer shipment is aged from its own time');
  assert.equal(c.due(1050), true);
  c.handle({ type: 'taken' }, 1050);
  c.handle({ type: 'ended', ok: true }, 1060);
  assert.equal(c.due(1e9), false, 'everything flushed: idle');
  assert.equal(c.pendingBytes, 0);
});

test('a persist started for another reason takes the pending clears too', () => {
  const c = new CleanRound(config);
  c.handle({ type: 'shipped', bytes: 10 }, 0);
  c.handle({ type: 'taken' }, 10);
  c.handle({ type: 'ended', ok: true }, 20);
  assert.equal(c.due(5000), false);
});

test('a failed round gives its shipments back, keeps their age, and backs off (doubling, bounded)', () => {
  const c = new CleanRound(config);
  c.handle({ type: 'shipped', bytes: 10 }, 0);
  c.handle({ type: 'taken' }, 1000);
  c.handle({ type: 'ended', ok: false }, 1100);
  assert.equal(c.pendingBytes, 10);
  assert.equal(c.due(1599), false, 'retry waits retryAfterMs');
  assert.equal(c.due(1600), true, 'and the age still counts from the first shipment');
  c.handle({ type: 'taken' }, 1600);
  c.handle({ type: 'ended', ok: false }, 1600);
  assert.equal(c.due(2599), false, 'backoff doubled to 1000');
  assert.equal(c.due(2600), true);
  for (let i = 0; i < 5; i++) {
    c.handle({ type: 'taken' }, 10_000 * (i + 1));
    c.handle({ type: 'ended', ok: false }, 10_000 * (i + 1));
  }
  assert.equal(c.due(50_000 + 1999), false);
  assert.equal(c.due(50_000 + 2000), true, 'backoff bounded by maxRetryMs');
  c.handle({ type: 'taken' }, 60_000);
  c.handle({ type: 'ended', ok: true }, 60_000);
  c.handle({ type: 'shipped', bytes: 1 }, 60_000);
  c.handle({ type: 'taken' }, 61_000);
  c.handle({ type: 'ended', ok: false }, 61_000);
  assert.equal(c.due(61_499), false);
  assert.equal(c.due(61_500), true, 'a good round reset the backoff to retryAfterMs');
});

test('events out of order are bugs', () => {
  const c = new CleanRound(config);
  assert.throws(() => c.handle({ type: 'ended', ok: true }, 0));
  c.handle({ type: 'taken' }, 0);
  assert.throws(() => c.handle({ type: 'taken' }, 0));
  assert.throws(() => new CleanRound({ ...config, cleanAfterBytes: 0 }));
});

test('a bitmap stale on disk (bits cleared without shipping) falls due by age too; a round clears it', () => {
  const c = new CleanRound(config);
  c.handle({ type: 'stale-on-disk' }, 100);
  c.handle({ type: 'stale-on-disk' }, 800); // seen again on the next tick: the clock keeps running from the first
  assert.equal(c.nextDeadlineMs(), 1100);
  assert.equal(c.due(1099), false);
  assert.equal(c.due(1100), true);
  c.handle({ type: 'taken' }, 1100);
  c.handle({ type: 'stale-on-disk' }, 1101); // during the round: that round will write it
  c.handle({ type: 'ended', ok: true }, 1150);
  assert.equal(c.due(1e9), false, 'nothing pending after the round');
});

test('cleanRoundAfter: the interval as given, the byte bound 64 MiB per second of it; 1 s is the default; out of range refused', () => {
  assert.deepEqual(cleanRoundAfter(1000), DEFAULT_CLEAN_ROUND);
  const lazy = cleanRoundAfter(30_000);
  assert.equal(lazy.cleanAfterMs, 30_000);
  assert.equal(lazy.cleanAfterBytes, 30 * 64 * 1024 * 1024);
  assert.equal(cleanRoundAfter(MIN_FLUSH_ROUND_AFTER_MS).cleanAfterBytes, Math.round(6.4 * 1024 * 1024));
  assert.equal(lazy.retryAfterMs, DEFAULT_CLEAN_ROUND.retryAfterMs);
  for (const bad of [MIN_FLUSH_ROUND_AFTER_MS - 1, MAX_FLUSH_ROUND_AFTER_MS + 1, 1500.5, Number.NaN]) assert.throws(() => cleanRoundAfter(bad), String(bad));
  // A round by age waits the whole interval, and not longer.
  const round = new CleanRound(lazy);
  round.handle({ type: 'shipped', bytes: 4096 }, 0);
  assert.equal(round.due(29_999), false);
  assert.equal(round.due(30_000), true);
});
