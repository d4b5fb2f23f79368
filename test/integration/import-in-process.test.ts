// An import between two in-process arrays over real NBD (one array's export is the other's source):
// a host discard larger than the activity log lets one write hold (applied in pieces) on tracks not
// fetched yet must complete — the fetch writes into the same volume and must not wait for the
// discard's own place in the write order — and the commands refuse what they must.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ArrayService } from '../../src/app/array-service.js';
import { FileBlockStoreFactory } from '../../src/adapters/fs/file-block-store.js';
import { FileMetaStore, FileSlotJournalFactory } from '../../src/adapters/fs/file-meta-store.js';
import { connectNbdSource } from '../../src/adapters/nbd-client/nbd-client.js';
import { DEFAULT_ACTIVITY_LOG } from '../../src/core/bitmap/activity-log.js';
import { ErrorCode, isTidemarkError } from '../../src/core/errors.js';
import { startTestArray, type TestArray } from '../helpers/in-process-array.js';

const MiB = 1024 * 1024;
let source: TestArray | undefined;
let importer: ArrayService | undefined;
let dir: string | undefined;
after(async () => {
  // A deadlocked write would keep close() waiting forever: the test has failed already then.
  await within(10_000, 'closing the importer', importer?.close() ?? Promise.resolve()).catch(() => undefined);
  await source?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

function within<T>(ms: number, what: string, work: Promise<T>): Promise<T> {
  return Promise.race([
    work,
    new Promise<T>((_, reject) => { setTimeout(() => reject(new Error(`${what} did not complete within ${ms} ms`)), ms).unref(); }),
  ]);
}


test('a discard larger than one activity-log piece on unfetched tracks completes; commands refuse out of turn', { timeout: 180_000 }, async () => {
  source = await startTestArray();
  await source.service.createVolume('src', 96 * MiB);
  const pattern = new Uint8Array(MiB).fill(0x6b);
  await source.service.volume('src').write(90 * MiB, pattern);
  dir = await mkdtemp(join(tmpdir(), 'tidemark-import-'));
  await mkdir(join(dir, 'volumes'), { recursive: true });
  importer = await ArrayService.open({
    name: 'importer',
    meta: await FileMetaStore.open(join(dir, 'meta')),
    stores: new FileBlockStoreFactory(join(dir, 'volumes')),
    journals: new FileSlotJournalFactory(join(dir, 'volumes')),
    nowMs: () => Date.now(),
    // 16 extents of 4 MiB: a zero or trim over 32 MiB is applied in pieces.
    activityLog: { ...DEFAULT_ACTIVITY_LOG, maxActiveExtents: 16 },
    importSources: connectNbdSource,
  });
  const started = await importer.imports.start('imp', source.uri('src'), false, 256 * 1024);
  assert.equal(started.state, 'copying');
  await assert.rejects(importer.imports.finish('imp'), (e: unknown) => isTidemarkError(e, ErrorCode.InvalidState));
  await assert.rejects(importer.deleteVolume('imp'), (e: unknown) => isTidemarkError(e, ErrorCode.VolumeBusy));
  await assert.rejects(importer.imports.start('imp', source.uri('src'), false, null),
    (e: unknown) => isTidemarkError(e, ErrorCode.AlreadyExists));

  const volume = importer.volume('imp');
  assert.ok(importer.imports.show('imp').tracksLeft > 1000, 'most tracks are still to fetch');
  await within(60_000, 'a 64 MiB discard of unfetched tracks', volume.trim(8 * MiB, 64 * MiB));
  await within(60_000, 'a 64 MiB write-zeroes of unfetched tracks', volume.writeZeroes(16 * MiB, 64 * MiB, false));
  assert.deepEqual(await volume.read(20 * MiB, 4096), new Uint8Array(4096));
  // Unfetched source data is read through the import.
  assert.deepEqual(await within(30_000, 'a read of source data', volume.read(90 * MiB, MiB)), pattern);
});
