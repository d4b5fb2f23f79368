// The secondary's durable queue (src/app/journal/journal-queue-store.ts) over a MetaStore: what a
// restart reads back, including after message records written in parallel were cut short.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { JournalQueueStore } from '../../src/app/journal/journal-queue-store.js';
import type { MetaStore } from '../../src/ports/meta-store.js';
import type { Token } from '../../src/core/journal/journal-types.js';

function memoryMeta(): MetaStore & { readonly map: Map<string, Uint8Array> } {
  const map = new Map<string, Uint8Array>();
  return {
    map,
    read: (k) => Promise.resolve(map.get(k)),
    write: (k, d) => { map.set(k, d.slice()); return Promise.resolve(); },
    delete: (k) => { map.delete(k); return Promise.resolve(); },
    list: (p) => Promise.resolve([...map.keys()].filter((k) => k.startsWith(p)).sort()),
  };
}

const tok = (sequence: number, secondary = 's0'): Token => ({ pair: 'p', volume: 'v', offset: sequence * 4, length: 4, secondary, sequence, timeMs: sequence });
const persist = (store: JournalQueueStore, stream: string, continuity: number, seqs: number[]) => store.persist({
  stream, expected: continuity + 1, tokens: seqs.map((q) => tok(q)), fromPrimary: seqs,
  entries: seqs.map((q) => ({ token: tok(q), data: Uint8Array.of(q, q, q, q) })), lastMessageMs: continuity,
});

test('a restart reads back tokens, data and each stream\'s next continuity', async () => {
  const meta = memoryMeta();
  const store = new JournalQueueStore(meta, 'j');
  await persist(store, 'primary:p1', 1, [1, 2]);
  await persist(store, 'primary:p1', 2, [3]);
  await persist(store, 'sequencer:p0', 1, []);
  const d = await new JournalQueueStore(meta, 'j').load();
  assert.deepEqual([...d.tokens.keys()].sort(), [1, 2, 3]);
  assert.deepEqual([...d.data.get(3)!], [3, 3, 3, 3]);
  assert.equal(d.expected.get('primary:p1'), 3);
  assert.equal(d.expected.get('sequencer:p0'), 2);
  assert.equal(d.lastMessageMs, 2);
});

test('records written in parallel and cut short by a crash: a stream resumes at its first hole, what lies beyond is dropped', async () => {
  const meta = memoryMeta();
  const store = new JournalQueueStore(meta, 'j');
  await persist(store, 'primary:p1', 1, [1]);
  await persist(store, 'primary:p1', 3, [3]); // message 2 never reached the disk
  await persist(store, 'primary:p1', 4, [4]);
  // Pruning after applying 1 must not claim the stream is durable past the hole.
  await store.applied(1, 1, null);
  const d = await new JournalQueueStore(meta, 'j').load();
  assert.equal(d.expected.get('primary:p1'), 2, 'the sender sends 2, 3, 4 again');
  assert.deepEqual([...d.tokens.keys()], [], 'what lies beyond the hole is not taken back');
  assert.equal(d.appliedUpTo, 1);
  assert.equal([...meta.map.keys()].filter((k) => k.includes('/m/')).length, 0, 'applied record 1 pruned; records beyond the hole deleted');
});

test('applied records carry the continuity, so pruned streams still resume where they were', async () => {
  const meta = memoryMeta();
  const store = new JournalQueueStore(meta, 'j');
  for (let c = 1; c <= 5; c++) await persist(store, 'primary:p1', c, [c]);
  await store.applied(5, 5, null);
  assert.equal([...meta.map.keys()].filter((k) => k.includes('/m/')).length, 0);
  const d = await new JournalQueueStore(meta, 'j').load();
  assert.equal(d.expected.get('primary:p1'), 6);
  assert.equal(d.appliedUpTo, 5);
  assert.equal(d.appliedTimeMs, 5);
});
