// Zeroes and trims larger than the activity log's hot set are applied in pieces, never refused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ArrayService } from '../../src/app/array-service.js';
import { FileBlockStoreFactory } from '../../src/adapters/fs/file-block-store.js';
import { FileMetaStore, FileSlotJournalFactory } from '../../src/adapters/fs/file-meta-store.js';
import { DEFAULT_ACTIVITY_LOG } from '../../src/core/bitmap/activity-log.js';
import { CHANGES_POSITION } from '../../src/app/volume/volume.js';

const MiB = 1024 * 1024;

test('a 200 MiB trim and zero with a 16-extent activity log (64 MiB hot at most)', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'tidemark-large-'));
  try {
    await mkdir(join(dir, 'volumes'));
    const service = await ArrayService.open({
      name: 'large', meta: await FileMetaStore.open(join(dir, 'meta')),
      stores: new FileBlockStoreFactory(join(dir, 'volumes')), journals: new FileSlotJournalFactory(join(dir, 'volumes')),
      nowMs: () => Date.now(), activityLog: { ...DEFAULT_ACTIVITY_LOG, maxActiveExtents: 16 },
    });
    await service.createVolume('v', 256 * MiB);
    const v = service.volume('v');
    await v.write(10 * MiB, Buffer.alloc(MiB, 7));
    await v.write(150 * MiB, Buffer.alloc(MiB, 7));
    await v.trim(0, 200 * MiB);
    await v.writeZeroes(20 * MiB, 200 * MiB, true, true);
    assert.ok((await v.read(10 * MiB, MiB)).every((b) => b === 0));
    assert.ok((await v.read(150 * MiB, MiB)).every((b) => b === 0));
    const changed = v.position(CHANGES_POSITION).invalid;
    assert.equal(changed.count(), (220 * MiB) / (64 * 1024), 'every zeroed or trimmed track is marked');

    // A write issued after a large trim, overlapping its last piece, lands after it: the trim takes
    // its place in the write ordering as a whole, not piece by piece.
    const trim = v.trim(0, 200 * MiB);
    const after = v.write(190 * MiB, Buffer.alloc(MiB, 9));
    await Promise.all([trim, after]);
    assert.ok((await v.read(190 * MiB, MiB)).every((b) => b === 9), 'the later write survives the earlier trim');
    await service.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
