// A sync pair between two real daemons in two network namespaces, over a WAN-shaped link (20 ms each
// way, 1 % loss, 50 mbit): establish, a partition (host writes on R1 continue, the pair reports
// `partitioned`), heal, and a resync that ships exactly the bytes written during the partition.
//
// How the test process reaches the daemons (see test/helpers/netns-arrays.ts): the API listens on
// 127.0.0.1 inside each namespace and the CLI runs there (`ip netns exec`); qemu-io and nbdcopy run
// here and use the NBD Unix sockets, which are not bound to a network namespace. Only the link
// between the arrays crosses the shaped link.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { NetnsPair } from '../helpers/netns.js';
import { NetnsArray, mustRunRoot, peerUp, pollUntil, runRoot, volumeHash, type PairJson } from '../helpers/netns-arrays.js';
import { missingTools, requirement } from '../helpers/requirement.js';

const availability = await NetnsPair.available();
const skip = requirement(availability.available ? missingTools(['qemu-io', 'nbdcopy']) : `network namespaces unavailable: ${availability.reason}`);

const KiB = 1024;
const MiB = 1024 * KiB;
/** A write issued right after the cut may wait for the link to be declared dead (deadAfterMs 5 s). */
const PARTITIONED_WRITE_BOUND_MS = 20_000;

const qemuWrite = (array: NetnsArray, volume: string, pattern: number, offset: number, length: number, timeoutMs = 60_000) =>
  mustRunRoot('qemu-io', ['-f', 'raw', '-c', `write -P ${pattern} ${offset} ${length}`, array.uri(volume)], timeoutMs);

test('sync pair across shaped namespaces: establish, partition (writes continue, state partitioned), heal, resync ships only the partition writes',
  { skip, timeout: 90_000 }, async (t) => {
    const dir = await mkdtemp('/tmp/tm-pairns-');
    const pair = await NetnsPair.create();
    const arrays: NetnsArray[] = [];
    try {
      t.diagnostic(`link backend: ${pair.backend}; east ${pair.a.name} ${pair.a.address}, west ${pair.b.name} ${pair.b.address}`);
      await pair.shape({ delayMs: 20, lossPercent: 1, rateMbit: 50 });
      const secret = join(dir, 'secret');
      await writeFile(secret, 'a shared secret of more than sixteen bytes\n', { mode: 0o600 });
      const [east, west] = await Promise.all([
        NetnsArray.start(pair, pair.a, 'east', dir),
        NetnsArray.start(pair, pair.b, 'west', dir),
      ]);
      arrays.push(east, west);
      const show = (): Promise<PairJson> => east.json<PairJson>(['pair', 'show', 'db']);

      await peerUp(east, west, secret);
      await east.cli(['volume', 'create', 'db', '--size', '64MiB']);
      await west.cli(['volume', 'create', 'db-r', '--size', '64MiB']);
      await qemuWrite(east, 'db', 0x5a, 0, 4 * MiB);
      await qemuWrite(east, 'db', 0x6b, 40 * MiB, 1 * MiB);
      await qemuWrite(east, 'db', 0x7c, 63 * MiB + 60 * KiB, 4 * KiB);

      const establishStart = performance.now();
      await east.cli(['pair', 'create', 'db', '--peer', 'west', '--remote-volume', 'db-r', '--mode', 'sync']);
      await east.cli(['pair', 'wait', 'db', '--until', 'synchronized', '--timeout', '120'], 130_000);
      t.diagnostic(`establish of 5 MiB + 4 KiB over the shaped link: ${(performance.now() - establishStart).toFixed(0)} ms`);
      assert.equal((await show()).counters.bytesShipped, 5 * MiB + 4 * KiB, 'establish ships the written bytes, not the holes');
      // A sync write while the link is healthy travels forwarded, not in the background.
      await qemuWrite(east, 'db', 0x11, 8 * MiB, 256 * KiB);
      const [eastHash, westHash] = await Promise.all([volumeHash(east, 'db'), volumeHash(west, 'db-r')]);
      assert.equal(westHash, eastHash, 'R2 equals R1 once synchronized');
      const before = await show();
      assert.equal(before.state, 'synchronized');
      assert.ok(before.counters.writesForwarded > 0, 'host writes were forwarded synchronously');

      // Partition: the first write may wait until the link is declared dead, then completes (policy continue).
      await pair.partition();
      const cutAt = performance.now();
      const firstWrite = qemuWrite(east, 'db', 0x22, 16 * MiB, 12 * KiB, PARTITIONED_WRITE_BOUND_MS + 10_000);
      const partitionedAfterMs = await pollUntil('pair state partitioned', async () => (await show()).state === 'partitioned', 30_000, 200);
      const first = await firstWrite;
      t.diagnostic(`after the cut: pair partitioned within ${partitionedAfterMs.toFixed(0)} ms; first write completed in ${first.elapsedMs.toFixed(0)} ms`);
      assert.ok(first.elapsedMs < PARTITIONED_WRITE_BOUND_MS, `a write during the partition took ${first.elapsedMs.toFixed(0)} ms`);
      const during: Array<[number, number, number]> = [[0x23, 20 * MiB, 4 * KiB], [0x24, 33 * MiB + 8 * KiB, 64 * KiB], [0x25, 0, 4 * KiB]];
      for (const [pattern, offset, length] of during) {
        const r = await qemuWrite(east, 'db', pattern, offset, length, PARTITIONED_WRITE_BOUND_MS);
        assert.ok(r.elapsedMs < 5_000, `a write on a partitioned pair took ${r.elapsedMs.toFixed(0)} ms`);
      }
      const writtenDuringPartition = 12 * KiB + during.reduce((sum, [, , length]) => sum + length, 0);
      const partitioned = await show();
      assert.equal(partitioned.state, 'partitioned');
      assert.ok(partitioned.bytesOwed >= writtenDuringPartition, `bytesOwed ${partitioned.bytesOwed} covers the ${writtenDuringPartition} bytes written`);
      t.diagnostic(`partition lasted ${(performance.now() - cutAt).toFixed(0)} ms; ${partitioned.bytesOwed} bytes owed`);

      await pair.heal();
      const healedAt = performance.now();
      await east.cli(['pair', 'wait', 'db', '--until', 'synchronized', '--timeout', '60'], 70_000);
      const after = await show();
      t.diagnostic(`synchronized ${(performance.now() - healedAt).toFixed(0)} ms after heal; counters before ${JSON.stringify(before.counters)} after ${JSON.stringify(after.counters)}`);
      assert.equal(after.counters.bytesShipped - before.counters.bytesShipped, writtenDuringPartition,
        'the resync ships the bytes written during the partition, nothing else');
      const [eastHash2, westHash2] = await Promise.all([volumeHash(east, 'db'), volumeHash(west, 'db-r')]);
      assert.notEqual(eastHash2, eastHash, 'the partition writes changed R1');
      assert.equal(westHash2, eastHash2, 'R2 equals R1 after the resync');

      // R2 still refuses host writes.
      const refused = await runRoot('qemu-io', ['-f', 'raw', '-c', 'write -P 1 0 4k', west.uri('db-r')]);
      assert.notEqual(refused.code, 0);
    } catch (error) {
      for (const a of arrays) t.diagnostic(`${a.name} log tail:\n${a.log().split('\n').slice(-15).join('\n')}`);
      throw error;
    } finally {
      await Promise.all(arrays.map((a) => a.stop().catch(() => undefined)));
      await pair.destroy();
      await rm(dir, { recursive: true, force: true });
    }
  });
