// Adaptive copy with a minimum age (--min-age): a record rewritten many times within the interval
// ships once. Two real daemons, qemu-io as the host, the CLI as the operator.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DaemonFixture, api, peerUp, tidemarkBin, waitFor, type DaemonProcess } from '../helpers/daemon.js';
import { mustRun, runCommand } from '../helpers/in-process-array.js';

const MiB = 1024 * 1024;
interface PairJson { state: string; mode: string; minAgeMs: number; tracksOwed: number; counters: { recordsShipped: number } }
const cli = (array: DaemonProcess, ...args: string[]): Promise<string> => mustRun(tidemarkBin, [...array.cliArgs, '--json', ...args]);
const show = async (array: DaemonProcess, name: string): Promise<PairJson> => JSON.parse(await cli(array, 'pair', 'show', name)) as PairJson;

test('adaptive pair with --min-age: 40 rewrites of one record within the interval ship it once; the setting persists; other modes refuse it', async () => {
  const fixture = await DaemonFixture.create();
  try {
    const east = await fixture.start(undefined, ['--name', 'east', '--link', '127.0.0.1:0']);
    const west = await fixture.start(undefined, ['--name', 'west', '--link', '127.0.0.1:0']);
    await peerUp(fixture, east, 'east', west, 'west');
    for (const array of [east, west]) await cli(array, 'volume', 'create', 'hot', '--size', '16MiB');

    const refused = await runCommand(tidemarkBin, [...east.cliArgs, '--json', 'pair', 'create', 'hot', '--peer', 'west',
      '--remote-volume', 'hot', '--mode', 'sync', '--min-age', '5s']);
    assert.equal(refused.code, 1);
    assert.match(refused.stdout + refused.stderr, /TM_ERR_INVALID_ARGUMENT.*adaptive mode only|adaptive mode only/s);
    assert.equal((await api<{ pairs: unknown[] }>(east, 'GET', '/v1/pairs')).body.pairs.length, 0, 'a refused create leaves nothing');

    await cli(east, 'pair', 'create', 'hot', '--peer', 'west', '--remote-volume', 'hot', '--mode', 'adaptive', '--min-age', '5s');
    await waitFor('establish', async () => (await show(east, 'hot')).state === 'synchronized', 30_000);
    const before = (await show(east, 'hot')).counters.recordsShipped;

    // 40 rewrites of the same 4 KiB record, the last one's pattern is what R2 must end with.
    const writes = Array.from({ length: 40 }, (_, i) => ['-c', `write -P ${i + 1} ${MiB} 4k`]).flat();
    await mustRun('qemu-io', ['-f', 'raw', ...writes, east.uri('hot')]);
    const waiting = await show(east, 'hot');
    assert.equal(waiting.minAgeMs, 5000);
    assert.equal(waiting.tracksOwed, 1, 'the change waits out its minimum age');
    assert.equal(waiting.state, 'synchronizing');
    await waitFor('shipped', async () => (await show(east, 'hot')).state === 'synchronized', 30_000);
    const after = await show(east, 'hot');
    assert.equal(after.counters.recordsShipped - before, 1, `one record shipped for 40 rewrites: ${JSON.stringify(after)} before ${before}`);

    const onWest = await runCommand('qemu-io', ['-r', '-f', 'raw', '-c', `read -P 40 ${MiB} 4k`, west.uri('hot')]);
    assert.equal(onWest.code, 0, `R2 holds the last write: ${onWest.stdout}${onWest.stderr}`);
    assert.doesNotMatch(onWest.stdout, /Pattern verification failed/);

    await east.stop();
    const again = await fixture.start(east.dataDir, ['--name', 'east', '--link', east.linkAddress!]);
    assert.equal((await show(again, 'hot')).minAgeMs, 5000, 'the minimum age survives a restart');
  } finally {
    await fixture.cleanup();
  }
});
