// The SpillStore contract (every implementation passes it), and CycleSpill over each store: a
// slot's writes and reads happen in the order R1Cycles asked for them even when the store
// completes operations out of order.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { SpillStore } from '../../src/ports/spill-store.js';
import { CycleSpill } from '../../src/app/replication/cycle-spill.js';

const RB = 4096;
const filled = (n: number, v: number): Uint8Array => new Uint8Array(n).fill(v);
const plain = (b: Uint8Array): Uint8Array => new Uint8Array(b);

export function spillStoreContract(name: string, make: () => Promise<{ store: SpillStore; cleanup(): Promise<void> }>): void {
  test(`${name}: sparse files per (pair, cycle): pieces at their offsets, zeros where never written, delete`, async () => {
    const { store, cleanup } = await make();
    try {
      assert.deepEqual(plain(await store.read('p', 1, 0, 16)), filled(16, 0), 'a file never written reads as zeros');
      await store.write('p', 1, [{ offset: 3 * RB + 10, data: filled(5, 1) }, { offset: 3 * RB + 15, data: filled(3, 2) }]);
      await store.write('p', 1, [{ offset: 3 * RB + 12, data: filled(2, 9) }, { offset: 5 * RB, data: filled(0, 1) }]);
      await store.write('p', 2, [{ offset: 0, data: filled(RB, 7) }]);
      await store.write('q', 1, [{ offset: 0, data: filled(RB, 8) }]);
      const slot = await store.read('p', 1, 3 * RB, RB);
      assert.equal(slot.length, RB);
      assert.deepEqual([...slot.subarray(8, 20)], [0, 0, 1, 1, 9, 9, 1, 2, 2, 2, 0, 0]);
      assert.deepEqual(plain(await store.read('p', 1, 0, RB)), filled(RB, 0), 'a hole reads as zeros');
      assert.deepEqual(plain(await store.read('p', 1, 10 * RB, RB)), filled(RB, 0), 'past the end reads as zeros');
      assert.deepEqual(plain(await store.read('p', 2, 0, RB)), filled(RB, 7));
      await store.removeCycle('p', 1);
      await store.removeCycle('p', 1);
      await store.removeCycle('p', 99);
      assert.deepEqual(plain(await store.read('p', 1, 3 * RB, RB)), filled(RB, 0), 'a deleted file is gone');
      assert.deepEqual(plain(await store.read('q', 1, 0, RB)), filled(RB, 8), 'other pairs keep theirs');
      await store.close();
    } finally {
      await cleanup();
    }
  });

  test(`${name}: CycleSpill keeps each slot's writes and reads in order and deletes released cycles`, async () => {
    const { store, cleanup } = await make();
    try {
      const errors: unknown[] = [];
      const spill = new CycleSpill(store, 'pair-a', RB, (e) => errors.push(e));
      // Slot 5 spilled twice (different ranges, the second overlapping), slots 6-9 whole: one run.
      spill.write([
        { cycle: 4, record: 5, epoch: 1, ranges: [{ start: 0, end: 100 }], data: filled(RB, 1) },
        ...[6, 7, 8, 9].map((record) => ({ cycle: 4, record, epoch: 1, ranges: [{ start: 0, end: RB }], data: filled(RB, record) })),
      ]);
      assert.ok(spill.queuedBytes > 0, 'bytes handed over count until written');
      spill.write([{ cycle: 4, record: 5, epoch: 2, ranges: [{ start: 50, end: 200 }], data: filled(RB, 2) }]);
      spill.write([{ cycle: 3, record: 0, epoch: 1, ranges: [{ start: 0, end: RB }], data: filled(RB, 3) }]);
      const slots = await spill.read([5, 9, 6, 7, 8].map((record) => ({ cycle: 4, record, epoch: 2 })));
      assert.ok(slots);
      assert.equal(slots[0]![49], 1);
      assert.equal(slots[0]![50], 2, 'the later spill of a slot wins');
      assert.equal(slots[0]![199], 2);
      assert.equal(slots[0]![200], 0);
      assert.deepEqual([slots[1]![0], slots[2]![RB - 1], slots[3]![0], slots[4]![0]], [9, 6, 7, 8], 'each read gets its own slot');
      // Each cycle's file has its own queue: cycle 3's write may still be running after cycle 4's
      // read (it was, under load). A read of cycle 3 comes after it.
      assert.equal((await spill.read([{ cycle: 3, record: 0, epoch: 1 }]))![0]![0], 3);
      assert.equal(spill.queuedBytes, 0, 'written bytes no longer count');
      spill.release([4]);
      spill.release([4]);
      assert.deepEqual(plain((await spill.read([{ cycle: 4, record: 9, epoch: 1 }]))![0]!), filled(RB, 0), 'a released cycle is gone');
      await spill.close();
      assert.deepEqual(plain(await store.read('pair-a', 3, 0, RB)), filled(RB, 0), 'close deletes what is left');
      assert.equal(await spill.read([{ cycle: 3, record: 0, epoch: 1 }]), undefined, 'nothing after close');
      assert.deepEqual(errors, []);
      await store.close();
    } finally {
      await cleanup();
    }
  });

  test(`${name}: CycleSpill.drained resolves once the queue is below the mark (host writes wait on it)`, async () => {
    const { store, cleanup } = await make();
    try {
      let releaseWrites!: () => void;
      const gate = new Promise<void>((r) => { releaseWrites = r; });
      const slow: SpillStore = {
        ...store,
        write: async (...args) => { await gate; return store.write(...args); },
        read: store.read.bind(store), removeCycle: store.removeCycle.bind(store), close: store.close.bind(store),
      };
      const spill = new CycleSpill(slow, 'pair-c', RB, () => undefined);
      spill.write([0, 1, 2, 3].map((record) => ({ cycle: 1, record, epoch: 1, ranges: [{ start: 0, end: RB }], data: filled(RB, 1) })));
      assert.equal(spill.queuedBytes, 4 * RB);
      await spill.drained(5 * RB); // already below
      let drained = false;
      const waiting = spill.drained(2 * RB).then(() => { drained = true; });
      await new Promise((r) => setTimeout(r, 20));
      assert.equal(drained, false, 'still 4 records queued');
      releaseWrites();
      await waiting;
      assert.ok(spill.queuedBytes < 2 * RB);
      await spill.close();
      await store.close();
    } finally {
      await cleanup();
    }
  });

  test(`${name}: a failing store stops CycleSpill and reports once`, async () => {
    const { store, cleanup } = await make();
    try {
      const failing: SpillStore = {
        ...store,
        write: () => Promise.reject(new Error('ENOSPC: no space left on device')),
        read: store.read.bind(store), removeCycle: store.removeCycle.bind(store), close: store.close.bind(store),
      };
      const errors: unknown[] = [];
      const spill = new CycleSpill(failing, 'pair-b', RB, (e) => errors.push(e));
      spill.write([{ cycle: 1, record: 0, epoch: 1, ranges: [{ start: 0, end: RB }], data: filled(RB, 1) }]);
      spill.write([{ cycle: 2, record: 0, epoch: 1, ranges: [{ start: 0, end: RB }], data: filled(RB, 1) }]);
      assert.equal(await spill.read([{ cycle: 1, record: 0, epoch: 1 }]), undefined);
      await spill.close();
      assert.equal(errors.length, 1);
      assert.match(String(errors[0]), /ENOSPC/);
      assert.equal(spill.queuedBytes, 0);
      await store.close();
    } finally {
      await cleanup();
    }
  });
}
