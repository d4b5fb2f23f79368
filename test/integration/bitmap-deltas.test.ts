// Evictions from the activity log make the leaving extents' bits durable with small deltas in the
// log's file instead of rewriting every bitmap: here on real files, a volume whose hot set is far
// smaller than what its writes touch, stopped without a clean close (the process's view of a kill -9:
// nothing after the last completed I/O). Every written track must come back marked — including one
// a copy cleared in memory before its data was flushed (the persist overlay) — and the bitmap record
// must be rewritten only when the ring of delta slots is full.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileBlockStoreFactory } from '../../src/adapters/fs/file-block-store.js';
import { FileMetaStore, FileSlotJournalFactory } from '../../src/adapters/fs/file-meta-store.js';
import { decodeDelta } from '../../src/core/bitmap/bitmap-deltas.js';
import { TrackBitmap } from '../../src/core/bitmap/track-bitmap.js';
import type { ActivityLogConfig } from '../../src/core/bitmap/activity-log.js';
import type { VolumeRecord } from '../../src/core/volume/volume-record.js';
import { bitmapsKey, CHANGES_POSITION, Volume, type VolumeDeps } from '../../src/app/volume/volume.js';
import type { MetaStore } from '../../src/ports/meta-store.js';

const TRACK = 64 * 1024;
const TRACKS = 256;
const DELTA_SLOTS = 8;
const AL: ActivityLogConfig = { extentTracks: 1, maxActiveExtents: 16, slotCount: 4, slotBytes: 4096 };
const record: VolumeRecord = { name: 'v', uuid: 'u', sizeBytes: TRACK * TRACKS, trackBytes: TRACK, state: 'ready', createdAtMs: 0 };

/** Counts writes of the volume's bitmap record. */
function counting(meta: MetaStore): MetaStore & { bitmapWrites: number } {
  const counted = {
    bitmapWrites: 0,
    read: (key: string) => meta.read(key),
    write: (key: string, data: Uint8Array) => {
      if (key === bitmapsKey('v')) counted.bitmapWrites++;
      return meta.write(key, data);
    },
    delete: (key: string) => meta.delete(key),
    list: (prefix: string) => meta.list(prefix),
  };
  return counted;
}

/** Runs `body` in a fresh directory, removed afterwards. */
async function inTempDir(body: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'tidemark-deltas-'));
  try {
    await body(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Opens the volume again after `abandon()` (no clean close), runs `check` on it, closes it. */
async function afterCrash(deps: VolumeDeps, check: (volume: Volume) => void): Promise<void> {
  const reopened = await Volume.open(record, deps);
  try {
    assert.equal(reopened.recovery.crashed, true);
    check(reopened);
  } finally {
    await reopened.close();
  }
}

async function deps(dir: string, meta: MetaStore, slots: number, create: boolean, activityLog = AL): Promise<VolumeDeps> {
  const stores = new FileBlockStoreFactory(dir);
  const store = create ? await stores.create('v', record.sizeBytes) : await stores.open('v', record.sizeBytes);
  const journal = await new FileSlotJournalFactory(dir).open('v', activityLog.slotCount + slots, activityLog.slotBytes);
  return { store, meta, journal, activityLog, nowMs: () => 0 };
}

/** The volume's ports as a restarted process opens them (a fresh metadata store over the same files). */
const reopen = async (dir: string, slots: number, activityLog = AL): Promise<VolumeDeps> =>
  deps(dir, await FileMetaStore.open(join(dir, 'meta')), slots, false, activityLog);

test('evictions write deltas, not the bitmap record, and a crash after them loses no bit', () => inTempDir(async (dir) => {
  const meta = counting(await FileMetaStore.open(join(dir, 'meta')));
  const volume = await Volume.open(record, await deps(dir, meta, DELTA_SLOTS, true));
  // A copy position (as a migration's): host writes mark it, a copy clears it before its flush.
  const copy = { id: 'copy', kind: 'migration' as const, marksOn: 'host' as const, invalid: new TrackBitmap(TRACKS) };
  volume.addPosition(copy);
  const unflushed = new TrackBitmap(TRACKS);
  volume.setPersistOverlay('copy', () => unflushed);
  await volume.persistBitmaps();
  const data = new Uint8Array(4096).fill(9);
  const written: number[] = [];
  const write = async (track: number): Promise<void> => {
    await volume.write(track * TRACK, data);
    written.push(track);
  };
  for (let t = 0; t < 16; t++) await write(t); // the hot set is full
  await volume.persistBitmaps(); // a new generation: its ring of deltas is empty
  const before = meta.bitmapWrites;
  // Each write needs a new extent and evicts the least recently used: first the durable 0..15 (no
  // delta needed), then 100..105, whose bits only deltas hold.
  for (let t = 100; t < 116; t++) await write(t);
  copy.invalid.clear(100); // the copy of track 100 finished: clear in memory, not yet durable
  unflushed.set(100);
  for (let t = 200; t < 206; t++) await write(t);
  assert.equal(meta.bitmapWrites - before, 0, '22 evictions, no rewrite of the bitmap record');
  const persisted = volume.persistedInvalid(CHANGES_POSITION)!;
  assert.equal(persisted, 16 + 6, 'the persisted figure counts the tracks the deltas made durable');

  const file = await readFile(join(dir, 'v.al'));
  const deltas = Array.from({ length: DELTA_SLOTS }, (_, i) => decodeDelta(file.subarray((AL.slotCount + i) * 4096, (AL.slotCount + i + 1) * 4096), TRACKS));
  assert.deepEqual(deltas.map((d) => d?.positions.map((p) => `${p.id} ${p.runs.map((r) => `${r.start}-${r.end - 1}`).join(',')}`)),
    [['changes 100-100', 'copy 100-100'], ['changes 101-101', 'copy 101-101'], ['changes 102-102', 'copy 102-102'],
      ['changes 103-103', 'copy 103-103'], ['changes 104-104', 'copy 104-104'], ['changes 105-105', 'copy 105-105'], undefined, undefined],
    'one delta per evicted extent, the copied track 100 still set (the overlay)');

  volume.abandon(); // no clean close: as after kill -9
  await afterCrash(await reopen(dir, DELTA_SLOTS), (reopened) => {
    const changes = reopened.position(CHANGES_POSITION).invalid;
    assert.deepEqual(written.filter((t) => !changes.test(t)), [], 'every written track is marked changed');
    assert.equal(changes.count(), written.length, 'and nothing else (every hot extent is one written track)');
    const recoveredCopy = reopened.findPosition('copy')!.invalid;
    assert.equal(recoveredCopy.test(100), true, 'the copied track whose data was not flushed is to be copied again');
    assert.deepEqual(written.filter((t) => t >= 100 && !recoveredCopy.test(t)), [], 'every host write after the position existed marks it');
  });
}));

test('without delta slots an eviction persists every bitmap when its bits are not durable yet, and a crash loses no bit either', () => inTempDir(async (dir) => {
  const meta = counting(await FileMetaStore.open(join(dir, 'meta')));
  const volume = await Volume.open(record, await deps(dir, meta, 0, true));
  await volume.persistBitmaps();
  const data = new Uint8Array(4096).fill(5);
  for (let t = 0; t < 16; t++) await volume.write(t * TRACK, data);
  const before = meta.bitmapWrites;
  for (let t = 100; t < 110; t++) await volume.write(t * TRACK, data);
  // The first eviction needs track 0 durable: everything is persisted, the hot tracks with it, so
  // the next nine evictions find their bits durable already and write no more than the log.
  assert.equal(meta.bitmapWrites - before, 1, 'one full persist for ten evictions');
  volume.abandon();
  await afterCrash(await reopen(dir, 0), (reopened) => {
    const changes = reopened.position(CHANGES_POSITION).invalid;
    for (const t of [...Array.from({ length: 16 }, (_, i) => i), ...Array.from({ length: 10 }, (_, i) => 100 + i)]) {
      assert.equal(changes.test(t), true, `track ${t}`);
    }
  });
}));

test('a transaction written with a delta the record has since covered still names the hot set after a crash', () => inTempDir(async (dir) => {
  const al: ActivityLogConfig = { ...AL, extentTracks: 2 };
  const volume = await Volume.open(record, await deps(dir, await FileMetaStore.open(join(dir, 'meta')), DELTA_SLOTS, true, al));
  await volume.persistBitmaps();
  const data = new Uint8Array(4096).fill(3);
  for (let t = 0; t < 32; t += 2) await volume.write(t * TRACK, data); // 16 extents: the log is full
  await volume.write(100 * TRACK, data); // extent 50 comes in, extent 0 leaves with a delta (same sync)
  await volume.persistBitmaps(); // a new generation: that delta is covered by the record now
  await volume.write(101 * TRACK, data); // extent 50 is hot: no log write, the bit only in memory
  volume.abandon();
  await afterCrash(await reopen(dir, DELTA_SLOTS, al), (reopened) => {
    assert.equal(reopened.position(CHANGES_POSITION).invalid.test(101), true, 'the write after the persist is marked: extent 50 was hot');
  });
}));
