// A child process for crash tests: opens an array directory with the real adapters and writes
// forever through the real Volume I/O path, printing each acknowledged write ("ack TRACK SEQ") and
// each completed flush ("flushed SEQ") to stdout. The test kills it with SIGKILL at some moment.
// Usage: node crash-writer.js DIR VOLUME SEED AL_EXTENTS
import { join } from 'node:path';
import { ArrayService } from '../../src/app/array-service.js';
import { FileBlockStoreFactory } from '../../src/adapters/fs/file-block-store.js';
import { FileMetaStore, FileSlotJournalFactory } from '../../src/adapters/fs/file-meta-store.js';
import { Prng } from '../../src/core/lib/prng.js';
import { DEFAULT_ACTIVITY_LOG } from '../../src/core/bitmap/activity-log.js';

const [dir, volumeName, seedText, alText] = process.argv.slice(2);
const service = await ArrayService.open({
  name: 'crash',
  meta: await FileMetaStore.open(join(dir!, 'meta')),
  stores: new FileBlockStoreFactory(join(dir!, 'volumes')),
  journals: new FileSlotJournalFactory(join(dir!, 'volumes')),
  nowMs: () => Date.now(),
  activityLog: { ...DEFAULT_ACTIVITY_LOG, maxActiveExtents: Number(alText) },
});
const volume = service.volume(volumeName!);
const prng = new Prng(Number(seedText));
const trackBytes = volume.geometry.trackBytes;
const tracks = volume.geometry.trackCount;
let seq = 0;
process.stdout.write('ready\n');

/** Each write fills 4 KiB inside one track with a byte derived from its sequence number (never 0). */
async function writer(): Promise<void> {
  for (;;) {
    const n = ++seq;
    const track = prng.int(0, tracks - 1);
    const record = prng.int(0, trackBytes / 4096 - 1);
    const data = Buffer.alloc(4096, (n % 255) + 1);
    data.writeUInt32LE(n, 0);
    await volume.write(track * trackBytes + record * 4096, data, n % 17 === 0);
    process.stdout.write(`ack ${track} ${n}\n`);
    if (n % 50 === 0) {
      await volume.flush();
      process.stdout.write(`flushed ${n}\n`);
    }
  }
}
await Promise.all(Array.from({ length: 16 }, writer));
