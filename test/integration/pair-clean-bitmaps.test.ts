// Clean bitmaps at rest, with real daemons and real NBD clients: hosts that never FLUSH still leave an
// idle synchronized pair clean on disk (R1's own flush rounds), so a kill -9 of R1 costs a resync of
// what the activity log marks, not of the whole volume. `--flush-round-after` sets how long shipped
// data waits unflushed before such a round.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DaemonFixture, tidemarkBin, waitFor, type DaemonProcess } from '../helpers/daemon.js';
import { mustRun } from '../helpers/in-process-array.js';

const MiB = 1024 * 1024;
const VOLUME_BYTES = 256 * MiB;
const TRACKS = VOLUME_BYTES / (64 * 1024);

interface PairJson {
  state: string;
  invalidTracks: { local: number; remote: number | null; persisted: number | null };
  counters: { tracksCompared: number; tracksCopied: number; flushRounds: number; bytesShipped: number };
}

const cli = (array: DaemonProcess, ...args: string[]): Promise<string> => mustRun(tidemarkBin, [...array.cliArgs, '--json', ...args]);
const pair = async (array: DaemonProcess, name: string): Promise<PairJson> => JSON.parse(await cli(array, 'pair', 'show', name)) as PairJson;

/** sha256 of a whole export, streamed by nbdcopy (no temporary image). */
function hashOf(array: DaemonProcess, volume: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('nbdcopy', [array.uri(volume), '-'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const hash = createHash('sha256');
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => hash.update(d));
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    child.once('error', reject);
    child.once('close', (code) => (code === 0 ? resolve(hash.digest('hex')) : reject(new Error(`nbdcopy exited ${code}: ${stderr}`))));
  });
}

/** Host writes that never FLUSH: qemu-io with cache=unsafe drops flushes (including the one at close). */
const writeNoFlush = (array: DaemonProcess, volume: string, commands: string[]): Promise<string> =>
  mustRun('qemu-io', ['-f', 'raw', '-t', 'unsafe', ...commands.flatMap((c) => ['-c', c]), array.uri(volume)]);

async function hostFlushes(array: DaemonProcess, volume: string): Promise<number> {
  const metrics = await (await fetch(`${array.apiUrl}/metrics`)).text();
  const m = new RegExp(`tidemark_volume_ops_total\\{volume="${volume}",kind="flush"\\} (\\d+)`).exec(metrics);
  return m ? Number(m[1]) : 0;
}

/** Polls until R1 shows no invalid track, in memory and on disk; returns how long that took. */
async function untilClean(east: DaemonProcess, timeoutMs: number): Promise<number> {
  const started = Date.now();
  await waitFor('R1 clean on disk', async () => {
    const p = await pair(east, 'db');
    return p.invalidTracks.local === 0 && p.invalidTracks.persisted === 0;
  }, timeoutMs);
  return Date.now() - started;
}

/**
 * east (R1, with `eastArgs`) and west linked, and a synchronized sync pair db → db-r of 256 MiB, its
 * establish just finished (every track was marked by it).
 */
async function syncPair(fixture: DaemonFixture, eastArgs: readonly string[] = []): Promise<{ east: DaemonProcess; west: DaemonProcess; eastDir: string; eastLink: string }> {
  const secret = join(fixture.dir, 'secret');
  await writeFile(secret, 'a shared secret of more than sixteen bytes\n', { mode: 0o600 });
  const eastDir = join(fixture.dir, 'east');
  const east = await fixture.start(eastDir, ['--name', 'east', '--link', '127.0.0.1:0', ...eastArgs]);
  const eastLink = east.linkAddress!;
  const west = await fixture.start(join(fixture.dir, 'west'), ['--name', 'west', '--link', '127.0.0.1:0']);
  await cli(east, 'peer', 'add', 'west', '--address', west.linkAddress!, '--secret-file', secret);
  await cli(west, 'peer', 'add', 'east', '--address', eastLink, '--secret-file', secret);
  await waitFor('link up', async () => (JSON.parse(await cli(east, 'peer', 'show', 'west')) as { link: string }).link === 'up', 15_000);
  await cli(east, 'volume', 'create', 'db', '--size', '256MiB');
  await cli(west, 'volume', 'create', 'db-r', '--size', '256MiB');
  await cli(east, 'pair', 'create', 'db', '--peer', 'west', '--remote-volume', 'db-r', '--mode', 'sync');
  await cli(east, 'pair', 'wait', 'db', '--until', 'synchronized', '--timeout', '60');
  return { east, west, eastDir, eastLink };
}

test('an idle synchronized pair is clean on disk within 5 s though hosts never flush; after 5 MiB of writes and kill -9 of R1 the resync examines under 10 % of the tracks', async () => {
  const fixture = await DaemonFixture.create();
  try {
    // A fresh pair: the establish marked every track, and nobody flushes.
    const started = await syncPair(fixture);
    let east = started.east;
    const { west, eastDir, eastLink } = started;
    const afterEstablish = await untilClean(east, 5000);

    // Host writes without a flush, then idle.
    await writeNoFlush(east, 'db', ['write -P 0x5a 0 1M']);
    const afterWrites = await untilClean(east, 5000);
    assert.equal(await hostFlushes(east, 'db'), 0, 'the host never flushed: R1 made R2 durable on its own');
    assert.ok((await pair(east, 'db')).counters.flushRounds >= 2, 'R1 ran flush rounds');
    console.log(`clean on disk ${afterEstablish} ms after the establish, ${afterWrites} ms after 1 MiB of writes`);

    // 5 MiB more, as 80 writes of 64 KiB, then R1 is killed at once (its last round may not have run).
    const base = 100 * MiB;
    await writeNoFlush(east, 'db', Array.from({ length: 80 }, (_, i) => `write -P ${(i % 200) + 1} ${base + i * 64 * 1024} 64k`));
    await east.stop('SIGKILL');
    east = await fixture.start(eastDir, ['--name', 'east', '--link', eastLink]);
    await cli(east, 'pair', 'wait', 'db', '--until', 'synchronized', '--timeout', '120');
    const resync = await pair(east, 'db');
    console.log(`resync after kill -9 of R1: ${resync.counters.tracksCompared} of ${TRACKS} tracks compared, ${resync.counters.tracksCopied} copied`);
    // The resync compared exactly what the restart marked: the written extents (hot in the activity
    // log), never the whole volume.
    assert.ok(resync.counters.tracksCompared > 0, 'the restart marked the tracks written before the kill');
    assert.ok(resync.counters.tracksCompared <= TRACKS / 10, `the resync compared ${resync.counters.tracksCompared} of ${TRACKS} tracks`);
    assert.ok(resync.counters.tracksCopied <= TRACKS / 10, `the resync went through ${resync.counters.tracksCopied} of ${TRACKS} tracks`);
    assert.equal(await hashOf(west, 'db-r'), await hashOf(east, 'db'), 'R2 equals R1 after the resync');
    await untilClean(east, 5000);
  } finally {
    await fixture.cleanup();
  }
});

test('--flush-round-after 6s: R1 leaves shipped tracks marked for the interval, then cleans them without a host flush', async () => {
  const fixture = await DaemonFixture.create();
  try {
    const { east } = await syncPair(fixture, ['--flush-round-after', '6s']);
    await untilClean(east, 20_000);

    const rounds = (await pair(east, 'db')).counters.flushRounds;
    await writeNoFlush(east, 'db', ['write -P 0x5a 0 1M']);
    const written = Date.now();
    // 1 MiB is far below the byte bound (384 MiB for 6 s): only the interval starts the round.
    await new Promise((r) => setTimeout(r, 3000));
    const early = await pair(east, 'db');
    assert.ok(Date.now() - written < 6000, 'still inside the interval');
    assert.equal(early.counters.flushRounds, rounds, 'no round before the interval is over');
    assert.equal(early.invalidTracks.local, 16, 'the 16 tracks written stay marked until a round makes R2 durable');
    const waited = Date.now() - written + await untilClean(east, 10_000);
    assert.ok(waited >= 6000, `clean only after the interval (${waited} ms)`);
    assert.equal(await hostFlushes(east, 'db'), 0, 'the host never flushed');
    assert.ok((await pair(east, 'db')).counters.flushRounds > rounds, 'R1 ran a round of its own');
    console.log(`with --flush-round-after 6s: clean on disk ${waited} ms after the writes`);
  } finally {
    await fixture.cleanup();
  }
});

test('--flush-round-after outside 100ms-10m or not a duration: refused before the array starts', async () => {
  const fixture = await DaemonFixture.create();
  try {
    for (const bad of ['50ms', '11m', '0', 'soon']) {
      const { done } = fixture.spawnDaemon(join(fixture.dir, `bad-${bad}`), ['--flush-round-after', bad]);
      const exit = await done;
      assert.equal(exit.code, 1, `${bad}: ${exit.output}`);
      assert.match(exit.output, /--flush-round-after (must be from 100ms to 10m|takes a duration)/, bad);
    }
  } finally {
    await fixture.cleanup();
  }
});
