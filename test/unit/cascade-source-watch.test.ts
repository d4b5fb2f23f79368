import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SourceWatch } from '../../src/app/cascade/source-watch.js';
import type { PeerRpc } from '../../src/app/replication/peer-rpc.js';
import type { PairRecord } from '../../src/core/replication/pair-record.js';

const r2 = (changes: Partial<PairRecord> = {}): PairRecord => ({
  id: 'a.db.1', name: 'db', role: 'R2', localVolume: 'db-r', peer: 'a', remoteVolume: 'db', mode: 'sync', intent: 'replicating',
  onLinkFailure: 'continue', generation: 1, diverged: false, protectWith: null, extents: null, cycleMs: 1000,
  cycleMemoryBytes: 1 << 20, spillLimitBytes: 0, minAgeMs: 0, createdAtMs: 0, ...changes,
});

/** A source array answering pair.status with the background copy's owed tracks it is told. */
function source(): { rpc: PeerRpc; owed: { value: number }; asked: { count: number } } {
  const owed = { value: 0 };
  const asked = { count: 0 };
  const rpc = {
    request: async () => {
      asked.count++;
      return { header: { exists: true, role: 'R1', intent: 'replicating', generation: 1, tracksOwed: owed.value }, segments: [] };
    },
  } as unknown as PeerRpc;
  return { rpc, owed, asked };
}

const settle = (): Promise<void> => new Promise((r) => setImmediate(r));

test('source watch: a session is confirmed only by an answer asked within it; a link that comes back starts a new one', async () => {
  const s = source();
  let now = 0;
  let up = true;
  const w = new SourceWatch(s.rpc, () => up, () => now, 'boot');
  assert.deepEqual(w.facts(r2()), { kind: 'pair', upEpoch: 'boot:1', confirmedEpoch: null });
  await settle();
  assert.deepEqual(w.facts(r2()), { kind: 'pair', upEpoch: 'boot:1', confirmedEpoch: 'boot:1' });
  // The link drops and comes back: a resync may follow, the old confirmation does not count.
  up = false;
  assert.deepEqual(w.facts(r2()), { kind: 'pair', upEpoch: null, confirmedEpoch: 'boot:1' });
  up = true;
  w.peerUp('a', () => ['a.db.1']);
  s.owed.value = 7;
  now += 5000;
  assert.deepEqual(w.facts(r2()), { kind: 'pair', upEpoch: 'boot:2', confirmedEpoch: 'boot:1' });
  await settle();
  const during = w.facts(r2());
  assert.equal(during.kind === 'pair' ? during.confirmedEpoch : 'none', 'boot:1', 'a resync under way confirms nothing');
  await settle();
  s.owed.value = 0;
  now += 5000;
  w.facts(r2());
  await settle();
  assert.deepEqual(w.facts(r2()), { kind: 'pair', upEpoch: 'boot:2', confirmedEpoch: 'boot:2' });
});

test('source watch: a change of intent or generation starts a session; split or failed over means no source; async is never confirmed', async () => {
  const s = source();
  const w = new SourceWatch(s.rpc, () => true, () => 0, 'x');
  w.facts(r2({ intent: 'suspended' }));
  await settle();
  assert.deepEqual(w.facts(r2({ intent: 'replicating' })), { kind: 'pair', upEpoch: 'x:2', confirmedEpoch: 'x:1' });
  assert.deepEqual(w.facts(r2({ generation: 2 })), { kind: 'pair', upEpoch: 'x:3', confirmedEpoch: 'x:1' });
  assert.deepEqual(w.facts(r2({ intent: 'failed-over' })), { kind: 'none' });
  assert.deepEqual(w.facts(undefined), { kind: 'none' });
  const quiet = source();
  const asyncWatch = new SourceWatch(quiet.rpc, () => true, () => 0, 'y');
  asyncWatch.facts(r2({ mode: 'async' }));
  await settle();
  assert.equal(quiet.asked.count, 0);
  assert.deepEqual(asyncWatch.facts(r2({ mode: 'async' })), { kind: 'pair', upEpoch: 'y:1', confirmedEpoch: null });
});
