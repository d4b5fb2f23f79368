// The rules for a volume in several pairs (core/replication/pair-set.ts) and named pair records.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parsePairRecord, type PairRecord } from '../../src/core/replication/pair-record.js';
import {
  MAX_R1_PAIRS_PER_VOLUME, checkNewR1, checkNewR2, checkR1VolumeState, checkSiblings, choosePairName, combinedVolumeState,
} from '../../src/core/replication/pair-set.js';
import { isTidemarkError } from '../../src/core/errors.js';

const base: PairRecord = {
  id: 'east.db.x', name: 'db', role: 'R1', localVolume: 'db', peer: 'west', remoteVolume: 'db-r', mode: 'sync', intent: 'replicating',
  onLinkFailure: 'continue', generation: 1, diverged: false, protectWith: null, extents: null, cycleMs: 1000,
  cycleMemoryBytes: 64 * 1024 * 1024, spillLimitBytes: 0, minAgeMs: 0, createdAtMs: 0,
};
const pair = (over: Partial<PairRecord>): PairRecord => ({ ...base, ...over });
const code = (c: string) => (e: unknown): boolean => isTidemarkError(e) && e.code === c;

test('a record written before pairs had names loads named after its local volume; a bad name is corruption', () => {
  const { name: _dropped, ...legacy } = { ...base, localVolume: 'db-r', role: 'R2' as const };
  void _dropped;
  assert.equal(parsePairRecord(JSON.parse(JSON.stringify(legacy)), 'legacy').name, 'db-r');
  assert.equal(parsePairRecord({ ...base, name: 'orders-far' }, 'named').name, 'orders-far');
  assert.throws(() => parsePairRecord({ ...base, name: 'no/slash' }, 'bad'), code('TM_ERR_METADATA_CORRUPT'));
});

test('choosePairName: the volume\'s name while it has no pair, otherwise --name is required; names valid and unique', () => {
  const none = (): boolean => false;
  assert.equal(choosePairName('db', undefined, [], none), 'db');
  assert.equal(choosePairName('db', 'db-near', [], none), 'db-near');
  assert.throws(() => choosePairName('db', undefined, [base], none), code('TM_ERR_PAIR_NAME_REQUIRED'));
  assert.equal(choosePairName('db', 'db-far', [base], none), 'db-far');
  assert.throws(() => choosePairName('db', 'db', [base], (n) => n === 'db'), code('TM_ERR_ALREADY_EXISTS'));
  for (const bad of ['', '-x', 'a b', 'x'.repeat(64), 'ä']) assert.throws(() => choosePairName('db', bad, [], none), code('TM_ERR_INVALID_ARGUMENT'), bad);
});

test('fan-out limit: the fifth R1 pair is refused; an R2 half does not count', () => {
  const r1s = Array.from({ length: MAX_R1_PAIRS_PER_VOLUME - 1 }, (_, i) => pair({ id: `p${i}`, name: `p${i}` }));
  checkNewR1('db', [...r1s, pair({ id: 'up', name: 'up', role: 'R2' })]);
  assert.throws(() => checkNewR1('db', [...r1s, pair({ id: 'p9', name: 'p9' })]), code('TM_ERR_LIMIT_EXCEEDED'));
});

test('one source per volume: a second R2 half is refused, an R1 half is not in the way', () => {
  checkNewR2('db', [base]);
  assert.throws(() => checkNewR2('db', [base, pair({ id: 'up', name: 'up', role: 'R2' })]), code('TM_ERR_PAIR_CONFLICT'));
});

test('host access of a volume in several pairs is the least writable any of them sets', () => {
  assert.equal(combinedVolumeState([]), 'ready');
  assert.equal(combinedVolumeState([base, pair({ id: 'b', name: 'b', mode: 'async' })]), 'ready');
  assert.equal(combinedVolumeState([base, pair({ id: 'b', name: 'b', intent: 'failed-over' })]), 'write-disabled');
  const upstream = pair({ id: 'up', name: 'up', role: 'R2' });
  assert.equal(combinedVolumeState([base, upstream]), 'write-disabled', 'a replicating R2 in a chain');
  assert.equal(combinedVolumeState([base, pair({ ...upstream, intent: 'split' })]), 'ready');
  // A change of one pair's intent is judged before it is recorded (the override).
  assert.equal(combinedVolumeState([base], { record: base, intent: 'restoring' }), 'write-disabled');
  checkR1VolumeState('db', 'write-disabled', [upstream]);
  assert.throws(() => checkR1VolumeState('db', 'not-ready', []), code('TM_ERR_INVALID_STATE'));
  assert.throws(() => checkR1VolumeState('db', 'write-disabled', []), code('TM_ERR_INVALID_STATE'));
});

test('commands on one of several pairs: only restore/failback into a replica and swap into a second source are refused', () => {
  const onward = pair({ id: 'on', name: 'onward', peer: 'north', remoteVolume: 'far' });
  const upstream = pair({ id: 'up', name: 'up', role: 'R2', peer: 'east' });
  for (const command of ['establish', 'resume', 'suspend', 'split', 'failover'] as const) checkSiblings(command, onward, [onward, upstream]);
  for (const command of ['restore', 'failback', 'swap'] as const) {
    assert.throws(() => checkSiblings(command, onward, [onward, upstream]), code('TM_ERR_PAIR_CONFLICT'), command);
  }
  // Once the upstream pair lets its R2 be written (split, failed over), a restore into it is the operator's clear choice.
  checkSiblings('restore', onward, [onward, pair({ ...upstream, intent: 'split' })]);
  assert.throws(() => checkSiblings('swap', onward, [onward, pair({ ...upstream, intent: 'split' })]), code('TM_ERR_PAIR_CONFLICT'));
  // Two restores of one volume at once: refused; a fan-out sibling replicating: fine.
  assert.throws(() => checkSiblings('failback', base, [base, pair({ id: 'r', name: 'r', intent: 'restoring' })]), code('TM_ERR_PAIR_CONFLICT'));
  checkSiblings('failback', base, [base, onward]);
  checkSiblings('swap', base, [base, onward]);
});
