// Fan-out and chains between real array daemons (separate processes, authenticated TCP links):
// one volume replicated sync to one array and async to another while a host issues dependent
// writes over NBD and the source array is killed with SIGKILL; and a chain east → west → north.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DaemonFixture, imageOf, tidemarkBin, waitFor, type DaemonProcess } from '../helpers/daemon.js';
import { mustRun, runCommand } from '../helpers/in-process-array.js';
import { RawNbdClient } from '../helpers/raw-nbd-client.js';

const MiB = 1024 * 1024;
const VOLUME_BYTES = 16 * MiB;
const RECORD = 4096;
const MAGIC = 0x5fa40f17;

interface PairJson {
  pair: string; volume: string; state: string; role: string; mode: string;
  cycles: { appliedCycle: number } | null;
  counters: { writesForwarded: number; recordsShipped: number };
}

const cli = (array: DaemonProcess, ...args: string[]): Promise<string> => mustRun(tidemarkBin, [...array.cliArgs, '--json', ...args]);
const pair = async (array: DaemonProcess, name: string): Promise<PairJson> => JSON.parse(await cli(array, 'pair', 'show', name)) as PairJson;

async function peerUp(fixture: DaemonFixture, a: DaemonProcess, aName: string, b: DaemonProcess, bName: string): Promise<void> {
  const secret = join(fixture.dir, `secret-${aName}-${bName}`);
  await writeFile(secret, `secret between ${aName} and ${bName}, long enough\n`, { mode: 0o600 });
  await cli(a, 'peer', 'add', bName, '--address', b.linkAddress!, '--secret-file', secret);
  await cli(b, 'peer', 'add', aName, '--address', a.linkAddress!, '--secret-file', secret);
  await waitFor(`link ${aName}-${bName}`, async () => (JSON.parse(await cli(a, 'peer', 'show', bName)) as { link: string }).link === 'up', 15_000);
}

async function threeDaemons(fixture: DaemonFixture): Promise<{ east: DaemonProcess; west: DaemonProcess; north: DaemonProcess }> {
  const start = (name: string): Promise<DaemonProcess> => fixture.start(join(fixture.dir, name), ['--name', name, '--link', '127.0.0.1:0']);
  const [east, west, north] = await Promise.all([start('east'), start('west'), start('north')]);
  await peerUp(fixture, east, 'east', west, 'west');
  await peerUp(fixture, east, 'east', north, 'north');
  await peerUp(fixture, west, 'west', north, 'north');
  return { east, west, north };
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** Write i fills record i: a recognisable, untorn record per write. */
function writeBytes(i: number): Buffer {
  const data = Buffer.alloc(RECORD, (i % 251) + 1);
  data.writeUInt32LE(MAGIC, 0);
  data.writeUInt32LE(i, 4);
  return data;
}

/** Each write only after the previous one was acknowledged, until the array dies; returns how many were acknowledged. */
async function dependentWrites(port: number, volume: string): Promise<number> {
  const c = await RawNbdClient.connect(port);
  await c.greeting();
  await c.go(volume);
  let acked = 0;
  try {
    for (let i = 0; i < VOLUME_BYTES / RECORD; i++) {
      c.sendRequest(1, BigInt(i), BigInt(i * RECORD), RECORD, 0, writeBytes(i));
      const reply = await c.simpleReply();
      if (reply.error !== 0) throw new Error(`write ${i} failed: ${reply.error}`);
      acked = i + 1;
    }
  } catch {
    // The array died under the host: the writes acknowledged so far are the issued sequence.
  } finally {
    c.close();
  }
  return acked;
}

/** The write numbers an image holds, each checked whole and in its own record. */
function writesIn(image: Buffer, what: string): number[] {
  const found: number[] = [];
  for (let slot = 0; slot * RECORD < image.length; slot++) {
    const at = slot * RECORD;
    if (image.readUInt32LE(at) !== MAGIC) {
      assert.ok(image.subarray(at, at + RECORD).every((b) => b === 0), `${what} record ${slot} holds neither a write nor zeros`);
      continue;
    }
    const i = image.readUInt32LE(at + 4);
    assert.equal(i, slot, `${what} record ${slot} holds write ${i}`);
    assert.ok(image.subarray(at, at + RECORD).equals(writeBytes(i)), `${what} record ${slot} is torn`);
    found.push(i);
  }
  return found;
}

async function fanOutKill(killAfterMs: number): Promise<{ acked: number; sync: number; async: number }> {
  const fixture = await DaemonFixture.create();
  try {
    const { east, west, north } = await threeDaemons(fixture);
    await cli(east, 'volume', 'create', 'db', '--size', String(VOLUME_BYTES));
    await cli(west, 'volume', 'create', 'db-r', '--size', String(VOLUME_BYTES));
    await cli(north, 'volume', 'create', 'db-far', '--size', String(VOLUME_BYTES));
    await cli(east, 'pair', 'create', 'db', '--peer', 'west', '--remote-volume', 'db-r', '--mode', 'sync');
    // A second pair on the volume must be named.
    const unnamed = await runCommand(tidemarkBin, [...east.cliArgs, 'pair', 'create', 'db', '--peer', 'north', '--remote-volume', 'db-far', '--mode', 'async']);
    assert.notEqual(unnamed.code, 0);
    assert.match(unnamed.stderr, /TM_ERR_PAIR_NAME_REQUIRED/);
    await cli(east, 'pair', 'create', 'db', '--name', 'db-far', '--peer', 'north', '--remote-volume', 'db-far', '--mode', 'async', '--cycle-ms', '100');
    await cli(east, 'pair', 'wait', 'db', '--until', 'synchronized', '--timeout', '60');
    await cli(east, 'pair', 'wait', 'db-far', '--until', 'synchronized', '--timeout', '60');
    await waitFor('async cycles running', async () => (await pair(east, 'db-far')).cycles !== null, 20_000);
    const shown = await pair(east, 'db-far');
    assert.deepEqual([shown.pair, shown.volume, shown.mode], ['db-far', 'db', 'async']);
    assert.deepEqual([(await pair(north, 'db-far')).role, (await pair(west, 'db')).role], ['R2', 'R2'], 'each R2 knows the pair by its name');

    const workload = dependentWrites(east.nbdPort, 'db');
    await new Promise((r) => setTimeout(r, killAfterMs));
    await east.stop('SIGKILL');
    const acked = await workload;

    // The sync replica holds every acknowledged write (and at most the one in flight).
    const sync = writesIn(await imageOf(fixture, west, 'db-r'), 'west db-r');
    for (let i = 0; i < acked; i++) assert.equal(sync[i], i, `west holds acknowledged write ${i} (acked ${acked})`);
    assert.ok(sync.length <= acked + 1, `west holds no write beyond the one in flight (${sync.length} > ${acked} + 1)`);

    // The async replica, failed over on its own array, is east's image at a cycle boundary: the first K writes.
    await waitFor('north fails over alone', async () => (await runCommand(tidemarkBin, [...north.cliArgs, 'pair', 'failover', 'db-far'])).code === 0, 20_000);
    const far = writesIn(await imageOf(fixture, north, 'db-far'), 'north db-far');
    assert.ok(far.every((w, i) => w === i), `north holds the first ${far.length} writes and nothing else (got ${far.slice(0, 12).join(',')}…)`);
    assert.ok(far.length <= acked + 1);
    return { acked, sync: sync.length, async: far.length };
  } finally {
    await fixture.cleanup();
  }
}

test('fan-out: one volume sync to west and async to north; SIGKILL of east mid-load: west holds every acknowledged write, north a prefix of them', async () => {
  const runs = [];
  for (const killAfterMs of [800, 2500]) runs.push({ killAfterMs, ...await fanOutKill(killAfterMs) });
  // The later kill must have found cycles that reached north: the async pair really replicated.
  assert.ok(runs[1]!.acked > 0 && runs[1]!.async > 0, `writes reached north: ${JSON.stringify(runs)}`);
  console.log(`fan-out kill runs: ${JSON.stringify(runs)}`);
});

test('chain: east → west (sync) and west → north (async); north converges to east\'s image once writes stop', async () => {
  const fixture = await DaemonFixture.create();
  try {
    const { east, west, north } = await threeDaemons(fixture);
    await cli(east, 'volume', 'create', 'db', '--size', String(VOLUME_BYTES));
    await cli(west, 'volume', 'create', 'mid', '--size', String(VOLUME_BYTES));
    await cli(north, 'volume', 'create', 'far', '--size', String(VOLUME_BYTES));
    await mustRun('qemu-io', ['-f', 'raw', '-c', `write -P 0x31 0 ${2 * MiB}`, east.uri('db')]);
    await cli(east, 'pair', 'create', 'db', '--peer', 'west', '--remote-volume', 'mid', '--mode', 'sync');
    // west's volume is already the R2 of pair db: its onward pair needs a name of its own.
    await cli(west, 'pair', 'create', 'mid', '--name', 'onward', '--peer', 'north', '--remote-volume', 'far', '--mode', 'async', '--cycle-ms', '100');
    await cli(east, 'pair', 'wait', 'db', '--until', 'synchronized', '--timeout', '60');
    await cli(west, 'pair', 'wait', 'onward', '--until', 'synchronized', '--timeout', '60');
    const list = JSON.parse(await cli(west, 'pair', 'list')) as { pairs: PairJson[] };
    assert.deepEqual(list.pairs.map((p) => [p.pair, p.volume, p.role]), [['db', 'mid', 'R2'], ['onward', 'mid', 'R1']]);

    // Host writes on east while the chain runs: overwrites, scattered records, zeroes.
    await mustRun('qemu-io', ['-f', 'raw',
      '-c', `write -P 0x42 ${MiB} ${3 * MiB}`, '-c', 'write -P 0x43 8M 4k', '-c', 'write -P 0x44 8M 4k', '-c', `write -z ${MiB} 64k`,
      '-c', `aio_write -P 0x45 12M 256k`, '-c', 'aio_write -P 0x46 13M 64k', '-c', 'aio_flush', '-c', 'flush', east.uri('db')]);
    for (let i = 0; i < 8; i++) await mustRun('qemu-io', ['-f', 'raw', '-c', `write -P ${0x50 + i} ${(4 + i) * MiB + i * 8192} 12k`, east.uri('db')]);
    const want = sha(await imageOf(fixture, east, 'db'));
    assert.equal(sha(await imageOf(fixture, west, 'mid')), want, 'the sync hop holds every write at once');
    await waitFor('north converges to east', async () => sha(await imageOf(fixture, north, 'far')) === want, 30_000);
    const onward = await pair(west, 'onward');
    assert.ok(onward.cycles !== null && onward.cycles.appliedCycle > 0, 'west forwarded through its async cycles');
  } finally {
    await fixture.cleanup();
  }
});
