// A copy (a clone session's, a migration's, an import's fetch) clears its track's bit in memory once the data is
// written, before it is durable. The bitmaps may record the bit clear only after a flush that began
// after the copy has made its data durable: a power loss keeps the persisted bitmaps but may lose
// unflushed data, and a clear bit over lost data is a copy silently missing a track. Here the flush
// of a persist is held while the copies run; the record it writes must still name every track they
// copied meanwhile.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ArrayService } from '../../src/app/array-service.js';
import { FileBlockStoreFactory } from '../../src/adapters/fs/file-block-store.js';
import { FileMetaStore, FileSlotJournalFactory } from '../../src/adapters/fs/file-meta-store.js';
import { DEFAULT_ACTIVITY_LOG } from '../../src/core/bitmap/activity-log.js';
import { decodePositions } from '../../src/core/volume/mirror-positions.js';
import { bitmapsKey } from '../../src/app/volume/volume.js';
import type { BlockStore, BlockStoreFactory } from '../../src/ports/block-store.js';
import { connectNbdSource } from '../../src/adapters/nbd-client/nbd-client.js';
import { startTestArray } from '../helpers/in-process-array.js';

const TRACK = 4096;
const TRACKS = 64;

/**
 * Stores whose flush waits while `held` is set, until release() is called; writes take `writeDelayMs`
 * longer, so a copy is still running when the test starts a persist.
 */
class HeldFlushes implements BlockStoreFactory {
  held = false;
  flushesHeld = 0;
  writeDelayMs = 0;
  private waiting: Array<() => void> = [];
  constructor(private readonly inner: FileBlockStoreFactory) {}

  release(): void {
    this.held = false;
    for (const go of this.waiting.splice(0)) go();
  }

  private wrap(store: BlockStore): BlockStore {
    const flush = async (): Promise<void> => {
      if (this.held) {
        this.flushesHeld++;
        await new Promise<void>((resolve) => this.waiting.push(resolve));
      }
      await store.flush();
    };
    const write = async (offset: number, data: Uint8Array): Promise<void> => {
      if (this.writeDelayMs > 0) await new Promise((r) => setTimeout(r, this.writeDelayMs));
      await store.write(offset, data);
    };
    const replaced: Record<string, unknown> = { flush, write };
    return new Proxy(store, { get: (target, key) => (typeof key === 'string' && key in replaced ? replaced[key] : Reflect.get(target, key)) as unknown });
  }

  async create(name: string, sizeBytes: number): Promise<BlockStore> { return this.wrap(await this.inner.create(name, sizeBytes)); }
  async open(name: string, sizeBytes: number): Promise<BlockStore> { return this.wrap(await this.inner.open(name, sizeBytes)); }
  remove(name: string): Promise<void> { return this.inner.remove(name); }
  rename(from: string, to: string): Promise<void> { return this.inner.rename(from, to); }
}

async function openArray(): Promise<{ service: ArrayService; stores: HeldFlushes; meta: FileMetaStore; dir: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'tidemark-copy-durability-'));
  await mkdir(join(dir, 'volumes'));
  const stores = new HeldFlushes(new FileBlockStoreFactory(join(dir, 'volumes')));
  const meta = await FileMetaStore.open(join(dir, 'meta'));
  const service = await ArrayService.open({
    name: 'durability', meta, stores, journals: new FileSlotJournalFactory(join(dir, 'volumes')),
    nowMs: () => Date.now(), activityLog: { ...DEFAULT_ACTIVITY_LOG, maxActiveExtents: 16 }, importSources: connectNbdSource,
  });
  return { service, stores, meta, dir };
}

/** Tracks the persisted record of `volume` (of `trackCount` tracks) still has set in its position of `kind`. */
async function persistedCount(meta: FileMetaStore, volume: string, kind: string, trackCount = TRACKS): Promise<number> {
  const record = decodePositions((await meta.read(bitmapsKey(volume)))!, trackCount);
  return record!.positions.find((p) => p.kind === kind)!.invalid.count();
}

async function until(what: string, done: () => boolean): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

/**
 * Once some copies are done, a persist flushes for them and is held in its flush while the rest
 * finish. The record it writes must still name every track copied meanwhile (and only those); the
 * next persist flushes after them and records them all done.
 */
async function persistWhileCopying(a: { service: ArrayService; stores: HeldFlushes; meta: FileMetaStore }, volume: string, kind: string,
  trackCount: number, copied: () => number, finished: () => boolean): Promise<void> {
  await until('a first copy', () => copied() > 0);
  a.stores.held = true;
  const copiedBefore = copied();
  const persisting = a.service.volume(volume).persistBitmaps();
  await until(`the copies into ${volume}`, finished);
  assert.ok(a.stores.flushesHeld > 0 && copiedBefore < trackCount, `the persist was waiting in its flush while copies ran (${copiedBefore} done before)`);
  a.stores.release();
  await persisting;
  assert.equal(await persistedCount(a.meta, volume, kind, trackCount), trackCount - copiedBefore,
    'copies finished during the flush stay to copy in the record it wrote; those before it are recorded done');
  await a.service.volume(volume).persistBitmaps();
  assert.equal(await persistedCount(a.meta, volume, kind, trackCount), 0);
}

test('clone copies that finish while a persist\'s flush runs are persisted as still to copy; a later persist records them done', async () => {
  const { service, stores, meta, dir } = await openArray();
  try {
    await service.createVolume('std', TRACK * TRACKS, TRACK);
    await service.createVolume('copy', TRACK * TRACKS, TRACK);
    await service.volume('std').write(0, new Uint8Array(TRACK * TRACKS).fill(7));
    stores.writeDelayMs = 5;
    await service.clones.establish('std', 'copy');
    assert.equal(await persistedCount(meta, 'std', 'clone-to-clone'), TRACKS, 'establish persisted every track as to copy');
    await persistWhileCopying({ service, stores, meta }, 'std', 'clone-to-clone', TRACKS, () => service.clones.show('std', 'copy').tracksCopied,
      () => service.clones.show('std', 'copy').state === 'synchronized');
  } finally {
    stores.release();
    await service.close();
    await rm(dir, { recursive: true, force: true });
  }
});

test('migration copies that finish while a persist\'s flush runs are persisted as still to copy; a later persist records them done', async () => {
  const { service, stores, meta, dir } = await openArray();
  try {
    await service.createVolume('vol', TRACK * TRACKS, TRACK);
    await service.createVolume('next', TRACK * TRACKS, TRACK);
    await service.volume('vol').write(0, new Uint8Array(TRACK * TRACKS).fill(9));
    stores.writeDelayMs = 5;
    await service.migrations.start('vol', 'next', true);
    const left = (): number => service.migrations.show('vol').tracksLeft;
    await persistWhileCopying({ service, stores, meta }, 'vol', 'migration', TRACKS, () => TRACKS - left(), () => left() === 0);
  } finally {
    stores.release();
    await service.close();
    await rm(dir, { recursive: true, force: true });
  }
});

test('import fetches that finish while a persist\'s flush runs are persisted as still to fetch; a later persist records them done', async () => {
  const source = await startTestArray();
  const { service, stores, meta, dir } = await openArray();
  try {
    // The import makes its volume with the default track size: 64 tracks of it.
    const size = 64 * 64 * 1024;
    await source.service.createVolume('src', size);
    await source.service.volume('src').write(0, new Uint8Array(size).fill(5));
    stores.writeDelayMs = 5;
    await service.imports.start('imp', source.uri('src'), false, null);
    const tracks = service.volume('imp').geometry.trackCount;
    const left = (): number => service.imports.show('imp').tracksLeft;
    await persistWhileCopying({ service, stores, meta }, 'imp', 'import', tracks, () => tracks - left(), () => left() === 0);
  } finally {
    stores.release();
    await service.close();
    await source.close();
    await rm(dir, { recursive: true, force: true });
  }
});
