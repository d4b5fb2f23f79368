// The MetaStore and SlotJournal contracts: every implementation must pass these suites.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { MetaStore, SlotJournal } from '../../src/ports/meta-store.js';

/** Plain Uint8Array copy, so Buffer-returning implementations compare equal. */
const plain = (b: Uint8Array | undefined): Uint8Array | undefined => (b === undefined ? b : new Uint8Array(b));

export function metaStoreContract(name: string, make: () => Promise<{ store: MetaStore; cleanup(): Promise<void> }>): void {
  test(`${name}: records round-trip, replace atomically, list by prefix and delete`, async () => {
    const { store, cleanup } = await make();
    try {
      assert.equal(await store.read('volume/a'), undefined);
      await store.write('volume/a', new Uint8Array([1, 2, 3]));
      await store.write('volume/b', new Uint8Array([4]));
      await store.write('bitmaps/a', new Uint8Array(0));
      await store.write('volume/a', new Uint8Array([9]));
      assert.deepEqual(plain(await store.read('volume/a')), new Uint8Array([9]));
      assert.deepEqual(plain(await store.read('bitmaps/a')), new Uint8Array(0));
      assert.deepEqual(await store.list('volume/'), ['volume/a', 'volume/b']);
      await store.delete('volume/a');
      await store.delete('volume/never-existed');
      assert.deepEqual(await store.list('volume/'), ['volume/b']);
    } finally {
      await cleanup();
    }
  });
}

export function metaStoreConcurrencyContract(name: string, make: () => Promise<{ store: MetaStore; cleanup(): Promise<void> }>): void {
  test(`${name}: concurrent writes and deletes of one record take effect in the order issued`, async () => {
    const { store, cleanup } = await make();
    try {
      const payload = (i: number): Uint8Array => new Uint8Array(1 + ((i * 397) % 5000)).fill(i);
      await Promise.all(Array.from({ length: 24 }, (_, i) => store.write('volume/x', payload(i))));
      assert.deepEqual(plain(await store.read('volume/x')), payload(23));
      await Promise.all([store.write('volume/y', payload(1)), store.delete('volume/y'), store.write('volume/y', payload(2))]);
      assert.deepEqual(plain(await store.read('volume/y')), payload(2));
      await Promise.all([store.write('volume/y', payload(3)), store.delete('volume/y')]);
      assert.equal(await store.read('volume/y'), undefined);
      assert.deepEqual(await store.list('volume/'), ['volume/x']);
    } finally {
      await cleanup();
    }
  });
}

export function slotJournalContract(name: string, make: () => Promise<{ journal: SlotJournal; cleanup(): Promise<void> }>): void {
  test(`${name}: slots start zeroed, are written in place and read back`, async () => {
    const { journal, cleanup } = await make();
    try {
      const initial = await journal.readAll();
      assert.equal(initial.length, journal.slotCount);
      for (const slot of initial) assert.ok(slot.every((b) => b === 0));
      const data = new Uint8Array(journal.slotBytes).fill(0xab);
      await journal.writeSlot(1, data);
      const after = await journal.readAll();
      assert.deepEqual(plain(after[1]), data);
      assert.ok(after[0]!.every((b) => b === 0));
      await assert.rejects(journal.writeSlot(journal.slotCount, data));
      // Several slots with one sync; a bad one refuses the whole call before anything is written.
      const two = new Uint8Array(journal.slotBytes).fill(0x22);
      const three = new Uint8Array(journal.slotBytes).fill(0x33);
      await journal.writeSlots([{ index: 0, data: two }, { index: journal.slotCount - 1, data: three }]);
      await assert.rejects(journal.writeSlots([{ index: 0, data: three }, { index: journal.slotCount, data: three }]));
      const both = await journal.readAll();
      assert.deepEqual(plain(both[0]), two);
      assert.deepEqual(plain(both[journal.slotCount - 1]), three);
      await journal.close();
    } finally {
      await cleanup();
    }
  });
}
