// Clone sessions end to end: real NBD clients write and read the standard volume and its clones
// while sessions are established, split, reestablished and restored.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { mustRun, runCommand, startTestArray, type TestArray } from '../helpers/in-process-array.js';
import type { CloneState } from '../../src/core/clone/clone-session.js';

const MiB = 1024 * 1024;
const SIZE = 32 * MiB;
const TRACK = 64 * 1024;

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

async function waitFor(array: TestArray, std: string, clone: string, state: CloneState, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (array.service.clones.show(std, clone).state !== state) {
    if (Date.now() > deadline) throw new Error(`${std}→${clone} did not reach ${state}: ${JSON.stringify(array.service.clones.show(std, clone))}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The whole volume as the hosts see it, read through NBD with nbdcopy. */
async function image(array: TestArray, volume: string): Promise<Buffer> {
  const out = join(array.dir, `${volume}-${Date.now()}.img`);
  await mustRun('nbdcopy', [array.uri(volume), out]);
  return readFile(out);
}

/** Writes a pattern with qemu-io and waits until the server has seen the connection close. */
async function qemuWrite(array: TestArray, volume: string, pattern: number, offset: number, length: number): Promise<void> {
  await mustRun('qemu-io', ['-f', 'raw', '-c', `write -P ${pattern} ${offset} ${length}`, array.uri(volume)]);
  const deadline = Date.now() + 5000;
  while (array.service.summary(volume).exports > 0) {
    if (Date.now() > deadline) throw new Error(`${volume} still exported after qemu-io exited`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

test('two sessions on one volume: each clone holds the image of its own split instant, refreshed in swapped order', async () => {
  const array = await startTestArray();
  try {
    for (const name of ['std', 'c1', 'c2']) await array.service.createVolume(name, SIZE);
    await qemuWrite(array, 'std', 0x11, 0, 8 * MiB);
    await array.service.clones.establish('std', 'c1');
    await array.service.clones.establish('std', 'c2');
    const refused = await runCommand('qemu-io', ['-f', 'raw', '-c', 'read 0 4k', array.uri('c1')]);
    assert.notEqual(refused.code, 0, 'an attached clone refuses host access');
    assert.match(refused.stderr, /not ready/);
    await qemuWrite(array, 'std', 0x22, 4 * MiB, 1 * MiB); // written while the sessions synchronise
    await waitFor(array, 'std', 'c1', 'synchronized');
    await waitFor(array, 'std', 'c2', 'synchronized');

    const first = await image(array, 'std');
    await array.service.clones.split('std', 'c1', false);
    await qemuWrite(array, 'std', 0x33, 10 * MiB, 2 * MiB);
    const second = await image(array, 'std');
    await array.service.clones.split('std', 'c2', false);
    assert.equal(sha(await image(array, 'c1')), sha(first), 'c1 = std at the first split');
    assert.equal(sha(await image(array, 'c2')), sha(second), 'c2 = std at the second split');

    // Hosts use the split clones; std changes too. Reestablish c2 first, then c1.
    await qemuWrite(array, 'c1', 0x44, 20 * MiB, 3 * TRACK);
    await qemuWrite(array, 'std', 0x55, 16 * MiB, 2 * TRACK);
    await array.service.clones.reestablish('std', 'c2');
    await waitFor(array, 'std', 'c2', 'synchronized');
    assert.equal(array.service.clones.show('std', 'c2').tracksCopied, 2, 'c2: only the 2 tracks std changed since its split');
    await array.service.clones.reestablish('std', 'c1');
    await waitFor(array, 'std', 'c1', 'synchronized');
    // c1 split before the 10 MiB (32 tracks) and 16 MiB (2 tracks) writes; its hosts wrote 3 tracks.
    assert.equal(array.service.clones.show('std', 'c1').tracksCopied, 32 + 2 + 3, 'c1: std changes plus its own');
    await array.service.clones.split('std', 'c1', false);
    await array.service.clones.split('std', 'c2', false);
    const now = sha(await image(array, 'std'));
    assert.equal(sha(await image(array, 'c1')), now);
    assert.equal(sha(await image(array, 'c2')), now);
  } finally {
    await array.close();
  }
});

test('restore is instant: reads during the restore see the clone, writes during it are kept', async () => {
  const array = await startTestArray();
  try {
    for (const name of ['std', 'backup', 'other']) await array.service.createVolume(name, SIZE);
    await qemuWrite(array, 'std', 0x61, 0, SIZE);
    await array.service.clones.establish('std', 'backup');
    await waitFor(array, 'std', 'backup', 'synchronized');
    await array.service.clones.split('std', 'backup', false);
    const good = await image(array, 'backup');
    await array.service.clones.establish('std', 'other');
    await waitFor(array, 'std', 'other', 'synchronized');
    await array.service.clones.split('std', 'other', false);

    await qemuWrite(array, 'std', 0x6f, 0, SIZE); // "corruption" of the whole standard volume
    await array.service.clones.restore('std', 'backup', false);
    // Immediately: a read anywhere returns the backup's data, and a write lands on top of it.
    await mustRun('qemu-io', ['-f', 'raw', '-c', `read -P 0x61 ${SIZE - 4 * MiB} 4M`, '-c', 'write -P 0x70 8M 4k', '-c', 'read -P 0x70 8M 4k',
      '-c', 'read -P 0x61 8392704 61440', array.uri('std')]);
    await waitFor(array, 'std', 'backup', 'restored');
    const restored = await image(array, 'std');
    const expected = Buffer.from(good);
    expected.fill(0x70, 8 * MiB, 8 * MiB + 4096);
    assert.equal(sha(restored), sha(expected), 'std = backup image with the write made during the restore');
    const other = array.service.clones.show('std', 'other');
    assert.equal(other.protectedTracks, SIZE / TRACK, 'a full restore marks every track changed for the other session');
  } finally {
    await array.close();
  }
});

test('incremental restore copies only tracks changed on either side; a 17th session is refused', async () => {
  const array = await startTestArray();
  try {
    await array.service.createVolume('std', SIZE);
    for (let i = 0; i < 17; i++) await array.service.createVolume(`c${i}`, SIZE);
    await qemuWrite(array, 'std', 0x01, 0, 4 * MiB);
    await array.service.clones.establish('std', 'c0');
    await waitFor(array, 'std', 'c0', 'synchronized');
    await array.service.clones.split('std', 'c0', false);
    await qemuWrite(array, 'std', 0x02, 1 * MiB, 5 * TRACK);
    await qemuWrite(array, 'c0', 0x03, 2 * MiB, 2 * TRACK);
    await array.service.clones.restore('std', 'c0', true);
    await waitFor(array, 'std', 'c0', 'restored');
    assert.equal(array.service.clones.show('std', 'c0').tracksCopied, 7);
    const std = await image(array, 'std');
    assert.ok(std.subarray(1 * MiB, 1 * MiB + 5 * TRACK).every((b) => b === 0x01), 'std changes undone');
    assert.ok(std.subarray(2 * MiB, 2 * MiB + 2 * TRACK).every((b) => b === 0x03), 'clone changes restored');

    for (let i = 1; i < 16; i++) await array.service.clones.establish('std', `c${i}`);
    await assert.rejects(array.service.clones.establish('std', 'c16'), /16 clone sessions/);
    await assert.rejects(array.service.deleteVolume('c3'), /clone session/);
    await array.service.clones.terminate('std', 'c3');
    assert.equal(array.service.summary('c3').state, 'ready');
  } finally {
    await array.close();
  }
});

test('sessions and their states survive a restart', async () => {
  const array = await startTestArray();
  const { ArrayService } = await import('../../src/app/array-service.js');
  try {
    await array.service.createVolume('std', SIZE);
    await array.service.createVolume('c', SIZE);
    await qemuWrite(array, 'std', 0x09, 0, 2 * MiB);
    await array.service.clones.establish('std', 'c');
    await waitFor(array, 'std', 'c', 'synchronized');
    await array.service.clones.split('std', 'c', true);
    await qemuWrite(array, 'std', 0x0a, 0, TRACK);
    await array.service.close();
    const reopened = await ArrayService.open(array.service.deps);
    const status = reopened.clones.show('std', 'c');
    assert.equal(status.state, 'split');
    assert.equal(status.protectedTracks, 1);
    assert.equal(reopened.summary('c').state, 'ready');
    await reopened.close();
  } finally {
    await array.nbd.close();
    const { rm } = await import('node:fs/promises');
    await rm(array.dir, { recursive: true, force: true });
  }
});
