// Remote pairs between real array daemons (separate processes, authenticated TCP link): qemu-io and
// nbdcopy as hosts, the CLI as the operator, SIGKILL of R2 mid-load.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DaemonFixture, api, tidemarkBin, waitFor, type DaemonProcess } from '../helpers/daemon.js';
import { mustRun, runCommand } from '../helpers/in-process-array.js';

const MiB = 1024 * 1024;

interface PairJson {
  state: string; role: string; generation: number; tracksOwed: number; invalidTracks: { local: number };
  counters: { recordsShipped: number; bytesShipped: number; writesForwarded: number; bytesPulled: number };
}

const cli = (array: DaemonProcess, ...args: string[]): Promise<string> => mustRun(tidemarkBin, [...array.cliArgs, '--json', ...args]);
const pair = async (array: DaemonProcess, name: string): Promise<PairJson> => JSON.parse(await cli(array, 'pair', 'show', name)) as PairJson;

async function hashOf(fixture: DaemonFixture, array: DaemonProcess, volume: string): Promise<string> {
  const out = join(fixture.dir, `${volume}-${Date.now()}-${Math.random()}.img`);
  await mustRun('nbdcopy', [array.uri(volume), out]);
  return createHash('sha256').update(await readFile(out)).digest('hex');
}

/** Two daemons, east and west, each the other's peer with one secret, and their link up. */
/** Waits until east's link to west is up (after west starts or restarts). */
const linkToWestUp = (east: DaemonProcess): Promise<void> =>
  waitFor('link up', async () => (JSON.parse(await cli(east, 'peer', 'show', 'west')) as { link: string }).link === 'up', 15_000);

/** Waits until east's pair db is synchronized. */
const synchronized = (east: DaemonProcess): Promise<string> => cli(east, 'pair', 'wait', 'db', '--until', 'synchronized', '--timeout', '60');

async function linkedArrays(fixture: DaemonFixture, extra: string[]): Promise<{
  east: DaemonProcess; west: DaemonProcess; westDir: string; westLink: string; extra: string[];
}> {
  const secret = join(fixture.dir, 'secret');
  await writeFile(secret, 'a shared secret of more than sixteen bytes\n', { mode: 0o600 });
  const westDir = join(fixture.dir, 'west');
  const east = await fixture.start(join(fixture.dir, 'east'), ['--name', 'east', '--link', '127.0.0.1:0', ...extra]);
  const west = await fixture.start(westDir, ['--name', 'west', '--link', '127.0.0.1:0', ...extra]);
  const westLink = west.linkAddress!;
  await cli(east, 'peer', 'add', 'west', '--address', westLink, '--secret-file', secret);
  await cli(west, 'peer', 'add', 'east', '--address', east.linkAddress!, '--secret-file', secret);
  await linkToWestUp(east);
  return { east, west, westDir, westLink, extra };
}

const qemuWrite = (array: DaemonProcess, volume: string, pattern: number, offset: number, length: number): Promise<string> =>
  mustRun('qemu-io', ['-f', 'raw', '-c', `write -P ${pattern} ${offset} ${length}`, array.uri(volume)]);

test('sync pair between two daemons: establish, R2 refuses writes, R2 killed mid-load resyncs only changed records, failover and failback', async () => {
  const fixture = await DaemonFixture.create();
  try {
    const linked = await linkedArrays(fixture, ['--link-streams', '2']);
    const { east, westDir, westLink, extra } = linked;
    let { west } = linked;

    await cli(east, 'volume', 'create', 'db', '--size', '32MiB');
    await cli(west, 'volume', 'create', 'db-r', '--size', '32MiB');
    await qemuWrite(east, 'db', 0x5a, 0, 4 * MiB);
    await cli(east, 'pair', 'create', 'db', '--peer', 'west', '--remote-volume', 'db-r', '--mode', 'sync');
    await synchronized(east);
    assert.equal((await pair(east, 'db')).counters.bytesShipped, 4 * MiB, 'establish ships the written 4 MiB, not the holes');
    const metrics = await (await fetch(`${east.apiUrl}/metrics`)).text();
    assert.match(metrics, /tidemark_pair_state\{pair="db",peer="west",role="R1",state="synchronized"\} 1/);
    assert.match(metrics, /tidemark_link_up\{peer="west"\} 1/);
    assert.match(metrics, new RegExp(`tidemark_pair_shipped_bytes\\{pair="db",peer="west",role="R1"\\} ${4 * MiB}`));
    assert.equal(await hashOf(fixture, west, 'db-r'), await hashOf(fixture, east, 'db'));

    const refused = await runCommand('qemu-io', ['-f', 'raw', '-c', 'write -P 1 0 4k', west.uri('db-r')]);
    assert.notEqual(refused.code, 0);
    assert.match(refused.stdout + refused.stderr, /Operation not permitted|Permission denied/);

    await qemuWrite(east, 'db', 0x11, 8 * MiB, 256 * 1024);
    assert.ok((await pair(east, 'db')).counters.writesForwarded > 0);
    assert.equal(await hashOf(fixture, west, 'db-r'), await hashOf(fixture, east, 'db'));

    // R2 dies; writes continue on R1 and are tracked; R2 returns and only those records travel.
    await west.stop('SIGKILL');
    await waitFor('partitioned', async () => (await pair(east, 'db')).state === 'partitioned', 15_000);
    const before = (await pair(east, 'db')).counters;
    await qemuWrite(east, 'db', 0x22, 16 * MiB, 12 * 1024);
    await qemuWrite(east, 'db', 0x23, 20 * MiB, 4 * 1024);
    west = await fixture.start(westDir, ['--name', 'west', '--link', westLink, ...extra]);
    await synchronized(east);
    const after = (await pair(east, 'db')).counters;
    assert.equal(after.bytesShipped - before.bytesShipped, 16 * 1024, 'the resync ships the 16 KiB written meanwhile, nothing else');
    assert.equal(await hashOf(fixture, west, 'db-r'), await hashOf(fixture, east, 'db'));

    // Failover: R2 takes writes, R1 refuses them; failback brings R2's writes home.
    await cli(east, 'pair', 'failover', 'db');
    await qemuWrite(west, 'db-r', 0x33, 24 * MiB, 64 * 1024);
    const r1Refused = await runCommand('qemu-io', ['-f', 'raw', '-c', 'write -P 1 0 4k', east.uri('db')]);
    assert.notEqual(r1Refused.code, 0);
    await cli(west, 'pair', 'failback', 'db-r'); // given on R2's array, forwarded to R1
    await synchronized(east);
    assert.equal((await pair(east, 'db')).counters.bytesPulled, 64 * 1024);
    assert.equal(await hashOf(fixture, west, 'db-r'), await hashOf(fixture, east, 'db'));
    const { body } = await api<{ pairs: PairJson[] }>(west, 'GET', '/v1/pairs');
    assert.equal(body.pairs[0]!.role, 'R2');
  } finally {
    await fixture.cleanup();
  }
});

test('an array with the wrong secret never becomes a peer', async () => {
  const fixture = await DaemonFixture.create();
  try {
    const good = join(fixture.dir, 'good');
    const bad = join(fixture.dir, 'bad');
    await writeFile(good, 'the right secret, long enough');
    await writeFile(bad, 'the wrong secret, long enough');
    const east = await fixture.start(join(fixture.dir, 'east'), ['--name', 'east', '--link', '127.0.0.1:0']);
    const west = await fixture.start(join(fixture.dir, 'west'), ['--name', 'west', '--link', '127.0.0.1:0']);
    await cli(east, 'peer', 'add', 'west', '--address', west.linkAddress!, '--secret-file', good);
    await cli(west, 'peer', 'add', 'east', '--address', east.linkAddress!, '--secret-file', bad);
    await new Promise((r) => setTimeout(r, 1500));
    const link = (JSON.parse(await cli(east, 'peer', 'show', 'west')) as { link: string }).link;
    assert.notEqual(link, 'up');
    await cli(east, 'volume', 'create', 'db', '--size', '1MiB');
    await cli(west, 'volume', 'create', 'db', '--size', '1MiB');
    const refused = await runCommand(tidemarkBin, [...east.cliArgs, 'pair', 'create', 'db', '--peer', 'west', '--remote-volume', 'db', '--mode', 'sync']);
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /TM_ERR_LINK_DOWN/);
  } finally {
    await fixture.cleanup();
  }
});

test('R2 killed -9 while suspended resumes without a false divergence; R2 killed -9 after its own hosts wrote (split) still reports those tracks as its own', async () => {
  const fixture = await DaemonFixture.create();
  try {
    const linked = await linkedArrays(fixture, []);
    const { east, westDir, westLink } = linked;
    let { west } = linked;
    await cli(east, 'volume', 'create', 'db', '--size', '16MiB');
    await cli(west, 'volume', 'create', 'db-r', '--size', '16MiB');
    await cli(east, 'pair', 'create', 'db', '--peer', 'west', '--remote-volume', 'db-r', '--mode', 'sync');
    await synchronized(east);
    // Replica writes leave west's activity log with hot extents; its hosts write nothing.
    await qemuWrite(east, 'db', 0x71, 0, MiB);
    await qemuWrite(east, 'db', 0x72, 9 * MiB, 64 * 1024);
    await cli(east, 'pair', 'suspend', 'db');
    await west.stop('SIGKILL');
    west = await fixture.start(westDir, ['--name', 'west', '--link', westLink]);
    await linkToWestUp(east);
    assert.equal((await pair(west, 'db')).invalidTracks.local, 0, 'the hot extents held replica writes, not R2 hosts\' changes');
    await cli(east, 'pair', 'resume', 'db');
    await synchronized(east);
    assert.equal(await hashOf(fixture, west, 'db-r'), await hashOf(fixture, east, 'db'));

    // Split: R2's hosts write, then R2 dies before its bitmaps were persisted: the activity log
    // still gives those tracks back as R2's own changes, and establish (R1's data wins) ships them.
    await cli(east, 'pair', 'split', 'db');
    await qemuWrite(west, 'db-r', 0x73, 12 * MiB, 4096);
    await west.stop('SIGKILL');
    west = await fixture.start(westDir, ['--name', 'west', '--link', westLink]);
    await linkToWestUp(east);
    assert.ok((await pair(west, 'db')).invalidTracks.local > 0, 'R2 hosts\' write is recovered as its own change');
    assert.notEqual(await hashOf(fixture, west, 'db-r'), await hashOf(fixture, east, 'db'));
    await cli(east, 'pair', 'establish', 'db');
    await synchronized(east);
    assert.equal(await hashOf(fixture, west, 'db-r'), await hashOf(fixture, east, 'db'));
  } finally {
    await fixture.cleanup();
  }
});

test('swap between two daemons, then R2 fails over alone while R1 keeps writing: divergence is detected and resolved by an explicit restore', async () => {
  const fixture = await DaemonFixture.create();
  try {
    const linked = await linkedArrays(fixture, []);
    const { east, westDir, westLink } = linked;
    let { west } = linked;
    await cli(east, 'volume', 'create', 'db', '--size', '16MiB');
    await cli(west, 'volume', 'create', 'db', '--size', '16MiB');
    await cli(east, 'pair', 'create', 'db', '--peer', 'west', '--remote-volume', 'db', '--mode', 'sync');
    await synchronized(east);

    // Swap: west becomes the source over the same link; east becomes its write-disabled replica.
    await cli(east, 'pair', 'swap', 'db');
    assert.equal((await pair(west, 'db')).role, 'R1');
    await qemuWrite(west, 'db', 0x44, MiB, 64 * 1024);
    assert.equal(await hashOf(fixture, east, 'db'), await hashOf(fixture, west, 'db'));
    await cli(west, 'pair', 'swap', 'db');
    assert.equal((await pair(east, 'db')).role, 'R1');

    // West restarts where east cannot reach it, and takes over alone; east keeps taking writes.
    await west.stop('SIGKILL');
    west = await fixture.start(westDir, ['--name', 'west', '--link', '127.0.0.1:0']);
    await cli(west, 'pair', 'failover', 'db');
    await qemuWrite(west, 'db', 0x55, 2 * MiB, 4096);
    await qemuWrite(east, 'db', 0x66, 3 * MiB, 4096);
    await west.stop('SIGTERM');
    west = await fixture.start(westDir, ['--name', 'west', '--link', westLink]);
    await waitFor('divergence detected', async () => (await pair(east, 'db')).state === 'diverged', 20_000);
    const refused = await runCommand(tidemarkBin, [...east.cliArgs, 'pair', 'failback', 'db']);
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /TM_ERR_PAIR_DIVERGED/);
    await cli(east, 'pair', 'restore', 'db'); // the explicit choice: keep west's data
    await synchronized(east);
    assert.equal(await hashOf(fixture, east, 'db'), await hashOf(fixture, west, 'db'));
  } finally {
    await fixture.cleanup();
  }
});

test('async pair between two daemons: cycles carry writes; R2 killed mid-stream recovers its cycles and ends equal to R1', async () => {
  const fixture = await DaemonFixture.create();
  try {
    const linked = await linkedArrays(fixture, []);
    const { east, westDir, westLink } = linked;
    let { west } = linked;
    await cli(east, 'volume', 'create', 'db', '--size', '32MiB');
    await cli(west, 'volume', 'create', 'db-r', '--size', '32MiB');
    await cli(east, 'pair', 'create', 'db', '--peer', 'west', '--remote-volume', 'db-r', '--mode', 'async', '--cycle-ms', '200');
    const cycles = async (): Promise<{ captureCycle: number; appliedCycle: number } | null> =>
      (JSON.parse(await cli(east, 'pair', 'show', 'db')) as { cycles: { captureCycle: number; appliedCycle: number } | null }).cycles;
    await waitFor('cycles running', async () => (await cycles()) !== null, 20_000);
    for (let i = 0; i < 6; i++) await qemuWrite(east, 'db', 0x10 + i, i * 2 * MiB, 256 * 1024);
    await west.stop('SIGKILL'); // mid-stream: cycles received, sealed or committed are on west's disk
    await qemuWrite(east, 'db', 0x77, 20 * MiB, 512 * 1024); // captured while west is down
    west = await fixture.start(westDir, ['--name', 'west', '--link', westLink]);
    await waitFor('link up again', async () => (JSON.parse(await cli(east, 'peer', 'show', 'west')) as { link: string }).link === 'up', 20_000);
    const during = await cycles();
    assert.notEqual(during, null, 'the cycles survive R2\'s restart (R2 recovers them from its metadata)');
    const last = during!.captureCycle;
    await waitFor(`R2 applied cycle ${last}`, async () => {
      const c = await cycles();
      return c !== null && c.appliedCycle >= last;
    }, 60_000);
    await waitFor('R2 equals R1', async () => (await hashOf(fixture, west, 'db-r')) === (await hashOf(fixture, east, 'db')), 30_000);
  } finally {
    await fixture.cleanup();
  }
});

interface SpillJson {
  id: string; state: string; cycleMemoryBytes: number; spillLimitBytes: number;
  cycles: { captureCycle: number; appliedCycle: number; memoryBytes: number; spilledRecords: number; spilledBytes: number } | null;
  cyclesFallback: { reason: string; tracks: number; message: string } | null;
  counters: { cycleFallbacks: number };
}

/** Files (with their sizes on disk) under a pair's spill directory on an array. */
async function spillFiles(dataDir: string, pairId: string): Promise<Array<{ name: string; allocated: number }>> {
  const dir = join(dataDir, 'spill', encodeURIComponent(pairId));
  const names = await readdir(dir).catch(() => [] as string[]);
  return Promise.all(names.map(async (name) => ({ name, allocated: (await stat(join(dir, name))).blocks * 512 })));
}

/** Async pair east → west with a small cycle memory; the cycles running. */
async function asyncPair(fixture: DaemonFixture, spillLimit: string): Promise<{
  east: DaemonProcess; west: DaemonProcess; eastDir: string; westDir: string; westLink: string; show(): Promise<SpillJson>;
}> {
  const { east, west, westDir, westLink } = await linkedArrays(fixture, []);
  await cli(east, 'volume', 'create', 'db', '--size', '32MiB');
  await cli(west, 'volume', 'create', 'db-r', '--size', '32MiB');
  await qemuWrite(east, 'db', 0x01, 0, 2 * MiB);
  await cli(east, 'pair', 'create', 'db', '--peer', 'west', '--remote-volume', 'db-r', '--mode', 'async', '--cycle-ms', '200',
    '--cycle-memory', '256KiB', '--spill-limit', spillLimit);
  const show = async (): Promise<SpillJson> => JSON.parse(await cli(east, 'pair', 'show', 'db')) as SpillJson;
  await waitFor('cycles running', async () => (await show()).cycles !== null, 20_000);
  return { east, west, eastDir: join(fixture.dir, 'east'), westDir, westLink, show };
}

/** Writes while R2 is down: whole records, sub-record pieces and rewrites, ~6 MiB of cycle data. */
async function writeWhileDown(east: DaemonProcess): Promise<void> {
  for (let i = 0; i < 6; i++) await qemuWrite(east, 'db', 0x40 + i, 4 * MiB + i * MiB, MiB);
  await qemuWrite(east, 'db', 0x66, 4 * MiB + 1000, 3000); // inside records already captured (and maybe spilled)
  await qemuWrite(east, 'db', 0x67, 24 * MiB + 100, 9000); // partial records at both ends
  await qemuWrite(east, 'db', 0x68, 5 * MiB, 256 * 1024); // a rewrite of spilled records
}

test('async pair between two daemons: with R2 down the cycles spill to disk past their memory, pair show reports it, and R2 converges once back (spill files gone)', async () => {
  const fixture = await DaemonFixture.create();
  try {
    const p = await asyncPair(fixture, '64MiB');
    let { west } = p;
    const { east } = p;
    const before = await p.show();
    assert.equal(before.cycleMemoryBytes, 256 * 1024);
    assert.equal(before.spillLimitBytes, 64 * MiB);

    await west.stop('SIGKILL');
    await waitFor('partitioned', async () => (await p.show()).state === 'partitioned', 15_000);
    await writeWhileDown(east);
    const down = await p.show();
    assert.notEqual(down.cycles, null, 'the cycles keep capturing, to disk');
    assert.equal(down.cyclesFallback, null);
    assert.ok(down.cycles!.spilledBytes >= 5 * MiB, `spilled ${down.cycles!.spilledBytes} bytes`);
    assert.equal(down.cycles!.spilledBytes, down.cycles!.spilledRecords * 4096);
    assert.ok(down.cycles!.memoryBytes <= 256 * 1024 + 64 * 4096, `memory ${down.cycles!.memoryBytes} stays near its 256 KiB budget`);
    const files = await spillFiles(p.eastDir, down.id);
    assert.ok(files.length >= 1, 'a spill file per cycle under <data dir>/spill/<pair>/');
    assert.ok(files.reduce((n, f) => n + f.allocated, 0) >= 5 * MiB, 'the spilled records are on disk');
    const text = await mustRun(tidemarkBin, [...east.cliArgs, 'pair', 'show', 'db']);
    assert.match(text, /cycle memory:\s+.* of 256 KiB; spilled [\d.]+ MiB \(\d+ records\) of 64 MiB/);
    const metrics = await (await fetch(`${east.apiUrl}/metrics`)).text();
    const gauge = /tidemark_pair_cycle_spilled_bytes\{pair="db",peer="west",role="R1"\} (\d+)/.exec(metrics);
    assert.ok(gauge && Number(gauge[1]) > 0, 'the spilled bytes are a metric');

    west = await fixture.start(p.westDir, ['--name', 'west', '--link', p.westLink]);
    const last = (await p.show()).cycles!.captureCycle;
    await waitFor(`R2 applied cycle ${last}`, async () => {
      const c = (await p.show()).cycles;
      return c !== null && c.appliedCycle >= last;
    }, 60_000);
    await waitFor('R2 equals R1', async () => (await hashOf(fixture, west, 'db-r')) === (await hashOf(fixture, east, 'db')), 30_000);
    const after = await p.show();
    assert.equal(after.counters.cycleFallbacks, 0, 'no fall back: the cycles carried everything');
    await waitFor('spill files deleted once R2 committed their cycles', async () => (await spillFiles(p.eastDir, after.id)).length === 0, 10_000);
    assert.equal((await p.show()).cycles!.spilledBytes, 0);
  } finally {
    await fixture.cleanup();
  }
});

test('async pair between two daemons: past the spill limit the cycles fall back to bitmaps (reported), and the pair resyncs to equality and restarts its cycles', async () => {
  const fixture = await DaemonFixture.create();
  try {
    const p = await asyncPair(fixture, '1MiB');
    let { west } = p;
    const { east } = p;
    await west.stop('SIGKILL');
    await waitFor('partitioned', async () => (await p.show()).state === 'partitioned', 15_000);
    await writeWhileDown(east);
    const down = await p.show();
    assert.equal(down.cycles, null, 'the cycles stopped');
    assert.ok(down.cyclesFallback, 'pair show says why');
    assert.equal(down.cyclesFallback.reason, 'capture-limit');
    assert.ok(down.cyclesFallback.tracks > 0);
    assert.match(down.cyclesFallback.message, /256 KiB in memory plus the 1 MiB spill limit: fell back to bitmaps/);
    assert.equal(down.counters.cycleFallbacks, 1);
    assert.equal(down.state, 'partitioned');
    const text = await mustRun(tidemarkBin, [...east.cliArgs, 'pair', 'show', 'db']);
    assert.match(text, /cycles fell back:\s+\S+: the cycles outgrew 256 KiB in memory plus the 1 MiB spill limit/);
    const metrics = await (await fetch(`${east.apiUrl}/metrics`)).text();
    assert.match(metrics, /tidemark_pair_cycle_fallbacks\{pair="db",peer="west",role="R1"\} 1/);
    await waitFor('spill files deleted at the fall back', async () => (await spillFiles(p.eastDir, down.id)).length === 0, 10_000);

    west = await fixture.start(p.westDir, ['--name', 'west', '--link', p.westLink]);
    await synchronized(east);
    await waitFor('cycles running again', async () => (await p.show()).cycles !== null, 20_000);
    assert.equal((await p.show()).cyclesFallback, null, 'cleared once the cycles run again');
    await qemuWrite(east, 'db', 0x7e, 30 * MiB, 64 * 1024);
    const last = (await p.show()).cycles!.captureCycle;
    await waitFor(`R2 applied cycle ${last}`, async () => {
      const c = (await p.show()).cycles;
      return c !== null && c.appliedCycle >= last;
    }, 60_000);
    await waitFor('R2 equals R1', async () => (await hashOf(fixture, west, 'db-r')) === (await hashOf(fixture, east, 'db')), 30_000);
  } finally {
    await fixture.cleanup();
  }
});
