// kill -9 in the middle of a write load: after restart, every track written since the last clean
// state is marked in the change bitmap (conservative recovery through the activity log), and the
// volume definition survives. (Data durability under kill -9 is the page cache's; FLUSH/FUA
// durability against lost caches is proven by the simulator, which can drop them.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, mkdir, rm, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ArrayService } from '../../src/app/array-service.js';
import { FileBlockStoreFactory } from '../../src/adapters/fs/file-block-store.js';
import { FileMetaStore, FileSlotJournalFactory } from '../../src/adapters/fs/file-meta-store.js';
import { CHANGES_POSITION } from '../../src/app/volume/volume.js';
import { decodeDelta } from '../../src/core/bitmap/bitmap-deltas.js';

const MiB = 1024 * 1024;
const writerScript = join(dirname(fileURLToPath(import.meta.url)), '..', 'helpers', 'crash-writer.js');

async function openArray(dir: string): Promise<ArrayService> {
  return ArrayService.open({
    name: 'crash',
    meta: await FileMetaStore.open(join(dir, 'meta')),
    stores: new FileBlockStoreFactory(join(dir, 'volumes')),
    journals: new FileSlotJournalFactory(join(dir, 'volumes')),
    nowMs: () => Date.now(),
  });
}

/** Runs the writer until `acks` writes are acknowledged, then SIGKILLs it; returns its output. */
function runAndKill(dir: string, seed: number, acks: number, alExtents: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [writerScript, dir, 'vol', String(seed), String(alExtents)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    let count = 0;
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`writer too slow: ${count} acks\n${err}`)); }, 60_000);
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      count += (d.toString().match(/^ack /gm) ?? []).length;
      if (count >= acks && child.exitCode === null) child.kill('SIGKILL');
    });
    child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    child.once('exit', (_code, signal) => {
      clearTimeout(timer);
      if (signal !== 'SIGKILL') reject(new Error(`writer exited on its own: ${err}`));
      else resolve(out);
    });
  });
}

for (const { seed, alExtents, acks } of [
  { seed: 1, alExtents: 16, acks: 3000 }, // 16 hot extents of a 64-extent volume: constant eviction
  { seed: 2, alExtents: 1000, acks: 1500 }, // everything stays hot: recovery marks whole extents
  { seed: 3, alExtents: 16, acks: 200 }, // killed early, while the first extents are still being logged
]) {
  test(`kill -9 during writes (seed ${seed}, al-extents ${alExtents}): every written track is marked and the volume survives`, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tidemark-crash-'));
    try {
      await mkdir(join(dir, 'volumes'));
      const before = await openArray(dir);
      await before.createVolume('vol', 256 * MiB);
      // Data written before the last clean state must not count: write, reset, close cleanly.
      await before.volume('vol').write(0, Buffer.alloc(4096, 0xee));
      await before.volume('vol').resetChanges();
      await before.close();

      const output = await runAndKill(dir, seed, acks, alExtents);
      const acked = [...output.matchAll(/^ack (\d+) (\d+)$/gm)].map((m) => ({ track: Number(m[1]), seq: Number(m[2]) }));
      assert.ok(acked.length >= acks * 0.9, `writer acknowledged ${acked.length} writes`);

      // Constant eviction makes its leaving extents durable with bitmap deltas in the log's file:
      // recovery below depends on them (the kill lands among them).
      const log = await readFile(join(dir, 'volumes', 'vol.al'));
      const deltas = Array.from({ length: log.length / 4096 }, (_, i) => decodeDelta(log.subarray(i * 4096, (i + 1) * 4096), 4096))
        .filter((d) => d !== undefined).length;
      if (alExtents < 64 && acks >= 1000) assert.ok(deltas > 0, 'the evictions wrote bitmap deltas');

      const after = await openArray(dir);
      try {
        const summary = after.summary('vol');
        assert.equal(summary.sizeBytes, 256 * MiB, 'the volume definition survived');
        assert.equal(summary.lastRecovery.crashed, true, 'the unclean stop was detected');
        const changed = after.volume('vol').position(CHANGES_POSITION).invalid;
        const missing = [...new Set(acked.map((a) => a.track))].filter((t) => !changed.test(t));
        assert.deepEqual(missing, [], 'every track with an acknowledged write is marked changed');
        // Content oracle: any track whose bytes differ from zeros was written after the reset (the
        // page cache survives a process kill), so it must be marked — including writes that were
        // in flight and never acknowledged.
        const file = await readFile(join(dir, 'volumes', 'vol.vol'));
        const trackBytes = summary.trackBytes;
        const unmarkedWithData: number[] = [];
        for (let t = 1; t < summary.trackCount; t++) {
          const slice = file.subarray(t * trackBytes, (t + 1) * trackBytes);
          if (!changed.test(t) && slice.some((b) => b !== 0)) unmarkedWithData.push(t);
        }
        assert.deepEqual(unmarkedWithData, [], 'no track holds new data without its bit');
        assert.ok(changed.count() < summary.trackCount || alExtents >= 64, 'recovery is bounded by the hot set');
      } finally {
        await after.close();
      }
      // A clean close after recovery leaves a clean log: the next open reports no crash.
      const again = await openArray(dir);
      assert.equal(again.summary('vol').lastRecovery.crashed, false);
      await again.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
}
