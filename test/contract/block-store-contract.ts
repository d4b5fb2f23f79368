// The BlockStore contract: every implementation (file-backed, simulated) must pass this suite.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { BlockStore } from '../../src/ports/block-store.js';

export interface BlockStoreHarness {
  /** A fresh, zero-filled store of the given size. */
  create(sizeBytes: number): Promise<BlockStore>;
  cleanup(): Promise<void>;
}

const MiB = 1024 * 1024;

function pattern(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = (i * 31 + seed) & 0xff;
  return out;
}

async function readAll(store: BlockStore, offset: number, length: number): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  await store.readInto(offset, length, out);
  return out;
}

export function blockStoreContract(name: string, makeHarness: () => Promise<BlockStoreHarness>): void {
  test(`${name}: a new store reads as zeros and is one hole`, async () => {
    const h = await makeHarness();
    try {
      const store = await h.create(4 * MiB);
      assert.deepEqual(await readAll(store, 0, 8192), new Uint8Array(8192));
      const map = await store.allocation(0, 4 * MiB);
      assert.deepEqual(map, [{ offset: 0, length: 4 * MiB, kind: 'hole' }]);
      await store.close();
    } finally {
      await h.cleanup();
    }
  });

  test(`${name}: writes read back, at unaligned offsets too`, async () => {
    const h = await makeHarness();
    try {
      const store = await h.create(4 * MiB);
      const a = pattern(10_000, 1);
      await store.write(12_345, a);
      assert.deepEqual(await readAll(store, 12_345, a.length), a);
      const target = new Uint8Array(20_000);
      await store.readInto(12_345, a.length, target, 5);
      assert.deepEqual(target.subarray(5, 5 + a.length), a);
      await store.flush();
      await store.close();
    } finally {
      await h.cleanup();
    }
  });

  test(`${name}: zeroes and trims read back as zeros and show up in the allocation map`, async () => {
    const h = await makeHarness();
    try {
      const store = await h.create(4 * MiB);
      await store.write(0, pattern(2 * MiB, 7));
      await store.writeZeroes(MiB, 256 * 1024, false);
      await store.trim(1536 * 1024, 256 * 1024);
      await store.writeZeroes(256 * 1024, 64 * 1024, true);
      const data = await readAll(store, 0, 2 * MiB);
      const zeroRanges = [[MiB, MiB + 256 * 1024], [1536 * 1024, 1792 * 1024], [256 * 1024, 320 * 1024]];
      for (const [s, e] of zeroRanges) assert.ok(data.subarray(s!, e!).every((b) => b === 0), `zero ${s}-${e}`);
      assert.deepEqual(data.subarray(0, 1024), pattern(2 * MiB, 7).subarray(0, 1024));
      const map = await store.allocation(0, 4 * MiB);
      let covered = 0;
      for (const extent of map) {
        assert.equal(extent.offset, covered, 'extents are contiguous and ordered');
        covered += extent.length;
      }
      assert.equal(covered, 4 * MiB);
      const dataBytes = map.filter((e) => e.kind === 'data').reduce((n, e) => n + e.length, 0);
      assert.ok(dataBytes >= MiB, 'written data is reported as data');
      if (store.canPunchHoles) {
        assert.ok(map.some((e) => e.kind === 'hole' && e.offset <= MiB && e.offset + e.length >= MiB + 256 * 1024),
          'a punched range is a hole');
      }
      await store.close();
    } finally {
      await h.cleanup();
    }
  });

  test(`${name}: the allocation scan stops at maxExtents, covering a prefix that agrees with the whole map`, async () => {
    const h = await makeHarness();
    try {
      const store = await h.create(4 * MiB);
      // 64 KiB of data every 256 KiB: 32 extents, alternating.
      for (let at = 0; at < 4 * MiB; at += 256 * 1024) await store.write(at, pattern(64 * 1024, at / 4096));
      const whole = await store.allocation(0, 4 * MiB);
      for (const max of [1, 2, 5]) {
        const prefix = await store.allocation(0, 4 * MiB, max);
        assert.ok(prefix.length >= 1 && prefix.length <= max, `${prefix.length} extents for maxExtents ${max}`);
        assert.deepEqual(prefix, whole.slice(0, prefix.length), 'the prefix is the start of the whole map');
      }
      const fromMiddle = await store.allocation(MiB + 4096, MiB, 3);
      assert.equal(fromMiddle[0]!.offset, MiB + 4096);
      assert.ok(fromMiddle.length <= 3);
      await store.close();
    } finally {
      await h.cleanup();
    }
  });
}
