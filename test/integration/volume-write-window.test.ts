// A write window (Volume.holdWrites) admits no host write while it is open — including a write that
// passed the window check just before it opened and was still waiting in a step of its admission
// plan (consistency groups rely on it: no write may complete on a member while the group switches).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TrackBitmap } from '../../src/core/bitmap/track-bitmap.js';
import { startTestArray } from '../helpers/in-process-array.js';

test('a write held in an admission step when a window opens waits for the window to close', async () => {
  const array = await startTestArray();
  try {
    const volume = await array.service.createVolume('v', 1024 * 1024).then(() => array.service.volume('v'));
    let releaseStep!: () => void;
    const stepWaits = new Promise<void>((r) => { releaseStep = r; });
    let copyOuts = 0;
    // A clone session restoring track 0 (its position as the planner sees it): a host write there
    // is planned a copy-out first, and this one's first copy-out waits.
    const toStd = new TrackBitmap(volume.geometry.trackCount);
    toStd.set(0);
    volume.participants.push({
      positions: (into) => {
        into.push({ kind: 'clone', id: 'c', copyIdle: false, restoring: true, toStd, restoredNotDurable: new TrackBitmap(toStd.size) });
      },
      execute: (step) => {
        assert.equal(step.kind, 'copy-out');
        return ++copyOuts === 1 ? stepWaits : undefined;
      },
    });

    let completed = false;
    const write = volume.write(0, new Uint8Array(4096).fill(7)).then(() => { completed = true; });
    await new Promise((r) => setTimeout(r, 20)); // the write is inside the copy-out now
    const release = await volume.holdWrites(); // not in flight yet: the window opens at once
    releaseStep();
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(completed, false, 'the write did not slip into the open window');
    release();
    await write;
    assert.equal(completed, true);
    assert.equal(copyOuts, 2, 'the write was planned again after the window, and copied out again');
    assert.equal((await volume.internalRead(0, 4096))[0], 7);
  } finally {
    await array.close();
  }
});
