// The tidemark CLI as a user runs it: a child process talking to a real daemon, --json and human output.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { DaemonFixture, peerUp, tidemarkBin, type DaemonProcess } from '../helpers/daemon.js';
import { mustRun, runCommand } from '../helpers/in-process-array.js';

let fixture: DaemonFixture;
let daemon: DaemonProcess;

before(async () => {
  fixture = await DaemonFixture.create();
  daemon = await fixture.start();
});
after(async () => {
  await fixture.cleanup();
});

const cli = (...args: string[]) => runCommand(tidemarkBin, [...daemon.cliArgs, ...args]);
async function cliJson<T>(...args: string[]): Promise<T> {
  const result = await cli('--json', ...args);
  assert.equal(result.code, 0, `tidemark ${args.join(' ')} failed: ${result.stderr}`);
  return JSON.parse(result.stdout) as T;
}

test('volume create, list, show, changes and delete, as JSON and as tables', async () => {
  const created = await cliJson<{ name: string; sizeBytes: number; trackBytes: number }>('volume', 'create', 'cli1', '--size', '64MiB', '--track-size', '128KiB');
  assert.deepEqual([created.name, created.sizeBytes, created.trackBytes], ['cli1', 64 * 1024 * 1024, 128 * 1024]);
  const table = await cli('volume', 'list');
  assert.equal(table.code, 0);
  assert.match(table.stdout, /^NAME\s+SIZE\s+TRACK\s+STATE/m);
  assert.match(table.stdout, /^cli1\s+64 MiB\s+128 KiB\s+ready/m);
  await mustRun('qemu-io', ['-f', 'raw', '-c', 'write -P 1 0 256k', daemon.uri('cli1')]);
  const changes = await cliJson<{ changedTracks: number; runs: Array<{ start: number; end: number }> }>('volume', 'changes', 'cli1');
  assert.equal(changes.changedTracks, 2);
  assert.deepEqual(changes.runs, [{ start: 0, end: 2 }]);
  const reset = await cliJson<{ changedTracks: number }>('volume', 'changes', 'cli1', '--reset');
  assert.equal(reset.changedTracks, 2, 'the reset reports what it cleared');
  assert.equal((await cliJson<{ changedTracks: number }>('volume', 'show', 'cli1')).changedTracks, 0);
  const state = await cliJson<{ state: string }>('volume', 'set-state', 'cli1', 'write-disabled');
  assert.equal(state.state, 'write-disabled');
  assert.equal((await cli('volume', 'delete', 'cli1')).code, 0);
  assert.equal((await cliJson<{ volumes: unknown[] }>('volume', 'list')).volumes.length, 0);
});

test('bad input: clear errors with stable codes, exit 1; usage errors exit 2; nothing changes', async () => {
  const badSize = await cli('volume', 'create', 'x', '--size', '10GB');
  assert.equal(badSize.code, 1);
  assert.match(badSize.stderr, /invalid size "10GB".*TM_ERR_INVALID_ARGUMENT/);
  const badName = await cli('--json', 'volume', 'create', '../etc', '--size', '1MiB');
  assert.equal(badName.code, 1);
  assert.equal(JSON.parse(badName.stderr).error.code, 'TM_ERR_INVALID_ARGUMENT');
  const missing = await cli('volume', 'show', 'nope');
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /TM_ERR_NOT_FOUND/);
  const usage = await cli('volume', 'create', 'x');
  assert.equal(usage.code, 2);
  assert.match(usage.stderr, /--size/);
  const unreachable = await runCommand(tidemarkBin, ['--array', 'http://127.0.0.1:1', 'volume', 'list']);
  assert.equal(unreachable.code, 1);
  assert.match(unreachable.stderr, /cannot reach the array.*TM_ERR_UNAVAILABLE/);
  assert.equal((await cliJson<{ volumes: unknown[] }>('volume', 'list')).volumes.length, 0);
});

test('clone commands: establish, wait, split, show, list, reestablish, terminate', async () => {
  await cliJson('volume', 'create', 'std', '--size', '32MiB');
  await cliJson('volume', 'create', 'bak', '--size', '32MiB');
  await mustRun('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 0 1M', daemon.uri('std')]);
  const established = await cliJson<{ state: string; tracksToCopy: number }>('clone', 'establish', 'std', 'bak');
  assert.equal(established.state, 'synchronizing');
  const waited = await cliJson<{ state: string; percent: number }>('clone', 'wait', 'std', 'bak', '--until', 'synchronized', '--timeout', '30');
  assert.deepEqual([waited.state, waited.percent], ['synchronized', 100]);
  const split = await cliJson<{ state: string; splitAt: string }>('clone', 'split', 'std', 'bak');
  assert.equal(split.state, 'split');
  await mustRun('qemu-io', ['-f', 'raw', '-r', '-c', 'read -P 0x5a 0 1M', daemon.uri('bak')]);
  const list = await cli('clone', 'list');
  assert.match(list.stdout, /^std\s+bak\s+0\s+split\s+100%/m);
  await mustRun('qemu-io', ['-f', 'raw', '-c', 'write -P 0x6b 0 64k', daemon.uri('std')]);
  const again = await cliJson<{ state: string }>('clone', 'reestablish', 'std', 'bak');
  // One changed track may be copied before the command answers.
  assert.ok(['synchronizing', 'synchronized'].includes(again.state), `state after reestablish: ${again.state}`);
  const shown = await cliJson<{ tracksCopied: number; state: string }>('clone', 'wait', 'std', 'bak', '--until', 'synchronized', '--timeout', '30');
  assert.equal(shown.tracksCopied, 1, 'only the one changed track is copied');
  const refused = await cli('clone', 'restore', 'std', 'bak');
  assert.equal(refused.code, 1, 'restore needs a split session');
  assert.match(refused.stderr, /TM_ERR_INVALID_STATE/);
  assert.equal((await cli('clone', 'terminate', 'std', 'bak')).code, 0);
  assert.equal((await cliJson<{ sessions: unknown[] }>('clone', 'list')).sessions.length, 0);
});

test('wait commands (clone, pair): the reached line, the status with --json, a timeout naming the state, bad options refused', async () => {
  // The clone wait, on the daemon of this file.
  await cliJson('volume', 'create', 'wstd', '--size', '16MiB');
  await cliJson('volume', 'create', 'wbak', '--size', '16MiB');
  await cliJson('clone', 'establish', 'wstd', 'wbak');
  const cloneReached = await cli('clone', 'wait', 'wstd', 'wbak', '--until', 'synchronized', '--timeout', '30');
  assert.equal(cloneReached.code, 0, cloneReached.stderr);
  assert.match(cloneReached.stdout, /^reached wstd → wbak/m);
  assert.equal(cloneReached.stderr, '', 'no progress bar when stderr is not a terminal');
  const cloneLate = await cli('clone', 'wait', 'wstd', 'wbak', '--until', 'split', '--timeout', '0.3');
  assert.equal(cloneLate.code, 1);
  assert.match(cloneLate.stderr, /wstd → wbak is synchronized, not split, after 0\.3 s \[TM_ERR_UNAVAILABLE\]/);
  const cloneBad = await cli('clone', 'wait', 'wstd', 'wbak', '--until', 'nowhere');
  assert.equal(cloneBad.code, 1);
  assert.match(cloneBad.stderr, /--until must be one of synchronized, restored, split \[TM_ERR_INVALID_ARGUMENT\]/);
  assert.equal((await cli('clone', 'terminate', 'wstd', 'wbak')).code, 0);

  // The pair wait, between two more daemons.
  const start = (name: string): Promise<DaemonProcess> => fixture.start(undefined, ['--name', name, '--link', '127.0.0.1:0']);
  const [east, west] = await Promise.all([start('east'), start('west')]);
  const on = (array: DaemonProcess, ...args: string[]) => runCommand(tidemarkBin, [...array.cliArgs, ...args]);
  const must = async (array: DaemonProcess, ...args: string[]): Promise<string> => {
    const r = await on(array, ...args);
    assert.equal(r.code, 0, `tidemark ${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };
  await peerUp(fixture, east, 'east', west, 'west');
  await must(east, 'volume', 'create', 'db', '--size', '16MiB');
  await must(west, 'volume', 'create', 'db-r', '--size', '16MiB');
  await must(east, 'pair', 'create', 'db', '--peer', 'west', '--remote-volume', 'db-r', '--mode', 'sync');
  const pairReached = await must(east, 'pair', 'wait', 'db', '--until', 'synchronized', '--timeout', '60');
  assert.match(pairReached, /^reached db \(R1\) ↔ west:db-r: synchronized$/m);
  const pairJson = JSON.parse(await must(east, '--json', 'pair', 'wait', 'db', '--until', 'synchronized', '--timeout', '5')) as { pair: string; state: string };
  assert.deepEqual([pairJson.pair, pairJson.state], ['db', 'synchronized']);
  const pairLate = await on(east, '--json', 'pair', 'wait', 'db', '--until', 'split', '--timeout', '0.3');
  assert.equal(pairLate.code, 1);
  assert.equal(pairLate.stdout, '', 'nothing on stdout when the state is not reached');
  const error = (JSON.parse(pairLate.stderr) as { error: { code: string; message: string; details: { state: string } } }).error;
  assert.deepEqual([error.code, error.message, error.details.state], ['TM_ERR_UNAVAILABLE', 'pair db is synchronized, not split, after 0.3 s', 'synchronized']);
  const pairBad = await on(east, 'pair', 'wait', 'db', '--until', 'synchronized', '--timeout', '0');
  assert.equal(pairBad.code, 1);
  assert.match(pairBad.stderr, /--timeout must be a positive number of seconds/);
});

test('every command has accurate help', async () => {
  for (const args of [['--help'], ['volume', '--help'], ['clone', '--help'], ['array', 'start', '--help'], ['clone', 'wait', '--help']]) {
    const result = await runCommand(tidemarkBin, args);
    assert.equal(result.code, 0, args.join(' '));
    assert.match(result.stdout, /Usage: tidemark/);
  }
  const start = await runCommand(tidemarkBin, ['array', 'start', '--help']);
  for (const flag of ['--data', '--api', '--nbd', '--nbd-socket', '--al-extents']) assert.ok(start.stdout.includes(flag), flag);
});
