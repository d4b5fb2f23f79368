// `array start --poll-us N`: after NBD or link input the daemon keeps its event loop polling instead of
// sleeping. End to end: a sync pair of polling daemons replicates what a host wrote; under light
// traffic (a read every 2 ms) a polling daemon stays on the CPU between requests where one without
// polling sleeps; out-of-range values are refused before anything starts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DaemonFixture, imageOf, peerUp, tidemarkBin, type DaemonProcess } from '../helpers/daemon.js';
import { mustRun, runCommand } from '../helpers/in-process-array.js';

const MiB = 1024 * 1024;
const cli = (array: DaemonProcess, ...args: string[]): Promise<string> => mustRun(tidemarkBin, [...array.cliArgs, '--json', ...args]);

/** CPU seconds (user + system, all threads) the process has used so far. */
async function cpuSeconds(pid: number): Promise<number> {
  const fields = (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ 100)
}

/** CPU seconds `array` spends while a host reads 4 KiB every 2 ms, 400 times. */
async function cpuUnderLightTraffic(array: DaemonProcess, volume: string): Promise<number> {
  const commands = Array.from({ length: 400 }, () => ['-c', 'read 0 4k', '-c', 'sleep 2']).flat();
  const before = await cpuSeconds(array.pid);
  await mustRun('qemu-io', ['-f', 'raw', '-r', ...commands, array.uri(volume)], 60_000);
  return (await cpuSeconds(array.pid)) - before;
}

test('a sync pair of polling daemons replicates a host\'s writes; a polling daemon stays awake between requests', async (t) => {
  const fixture = await DaemonFixture.create();
  try {
    const [east, west, quiet] = await Promise.all([
      fixture.start(join(fixture.dir, 'east'), ['--name', 'east', '--link', '127.0.0.1:0', '--poll-us', '10000']),
      fixture.start(join(fixture.dir, 'west'), ['--name', 'west', '--link', '127.0.0.1:0', '--poll-us', '500']),
      fixture.start(join(fixture.dir, 'quiet'), ['--name', 'quiet']),
    ]);
    assert.match(east.output(), /"pollUs":10000/);
    assert.match(quiet.output(), /"pollUs":0/);
    await peerUp(fixture, east, 'east', west, 'west');
    await cli(east, 'volume', 'create', 'db', '--size', String(8 * MiB));
    await cli(west, 'volume', 'create', 'db-r', '--size', String(8 * MiB));
    await cli(east, 'pair', 'create', 'db', '--peer', 'west', '--remote-volume', 'db-r', '--mode', 'sync');
    await cli(east, 'pair', 'wait', 'db', '--until', 'synchronized', '--timeout', '60');
    await mustRun('qemu-io', ['-f', 'raw', '-c', 'write -P 0x3c 0 1M', '-c', 'write -P 0x7e 5M 64k', east.uri('db')]);
    const primary = await imageOf(fixture, east, 'db');
    assert.equal(primary[5 * MiB], 0x7e);
    await east.stop();
    assert.ok((await imageOf(fixture, west, 'db-r')).equals(primary), 'R2 holds what the host wrote');

    // Each read restarts east's 10 ms window, so it never sleeps; quiet sleeps between reads.
    await cli(quiet, 'volume', 'create', 'v', '--size', String(MiB));
    const restarted = await fixture.start(east.dataDir, ['--name', 'east', '--poll-us', '10000']);
    const polling = await cpuUnderLightTraffic(restarted, 'db');
    const sleeping = await cpuUnderLightTraffic(quiet, 'v');
    t.diagnostic(`CPU seconds over ~1 s of light traffic: polling ${polling.toFixed(2)}, not polling ${sleeping.toFixed(2)}`);
    assert.ok(polling > 0.3 && polling > 3 * sleeping, `CPU seconds over ~1 s of light traffic: polling ${polling}, not polling ${sleeping}`);
    assert.equal((await restarted.stop()).code, 0, 'a polling daemon stops cleanly');
  } finally {
    await fixture.cleanup();
  }
});

test('--poll-us out of range or not a whole number: refused before the array starts', async () => {
  const fixture = await DaemonFixture.create();
  try {
    for (const bad of ['-1', '1.5', '10001', 'fast']) {
      const { done } = fixture.spawnDaemon(join(fixture.dir, `bad-${bad}`), ['--poll-us', bad]);
      const exit = await done;
      assert.equal(exit.code, 1, `${bad}: ${exit.output}`);
      assert.match(exit.output, /--poll-us must be a whole number from 0 to 10000/);
    }
    const r = await runCommand(tidemarkBin, ['array', 'start', '--help']);
    assert.match(r.stdout, /--poll-us/);
  } finally {
    await fixture.cleanup();
  }
});
