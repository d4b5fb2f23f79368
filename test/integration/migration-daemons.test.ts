// Online migration with a real daemon, real NBD clients and kill -9 (issue 13): fio verifies its
// data over one NBD connection through `migration start` and the cutover; a qemu-io connection
// opened before the cutover keeps working after it; after kill -9 VOL is still served from the new
// storage; detach / writes / reattach replays exactly the tracks written; finish drops the old storage.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { access, open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DaemonFixture, api, tidemarkBin, waitFor, type DaemonProcess } from '../helpers/daemon.js';
import { mustRun, runCommand } from '../helpers/in-process-array.js';
import { QemuIoSession } from '../helpers/nbd-qemu-io-session.js';
import { missingTools, requirement } from '../helpers/requirement.js';

const MiB = 1024 * 1024;
const TRACK = 64 * 1024;
const skip = requirement(missingTools(['fio', 'qemu-io', 'qemu-img']));
let fixture: DaemonFixture | undefined;
after(async () => fixture?.cleanup());

interface Migration {
  state: string; servedFrom: string; tracksLeft: number; tracksReplayed: number; target: string;
}

async function cli<T = Migration>(array: DaemonProcess, ...args: string[]): Promise<T> {
  const r = await runCommand(tidemarkBin, [...array.cliArgs, '--json', ...args]);
  if (r.code !== 0) throw new Error(`tidemark ${args.join(' ')} exited ${r.code}: ${r.stderr}${r.stdout}`);
  return JSON.parse(r.stdout) as T;
}

const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

async function exportImage(array: DaemonProcess, volume: string, file: string): Promise<string> {
  await mustRun('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', array.uri(volume), file]);
  return sha256(await readFile(file));
}

async function fileBytes(path: string, offset: number, length: number): Promise<Buffer> {
  const handle = await open(path, 'r');
  try {
    const buffer = Buffer.alloc(length);
    await handle.read(buffer, 0, length, offset);
    return buffer;
  } finally {
    await handle.close();
  }
}

const FIO_JOB = (uri: string): string[] => ['--name=migrate', '--ioengine=nbd', `--uri=${uri}`, '--rw=randwrite', '--bs=4k',
  '--size=40M', '--iodepth=8', '--verify=crc32c', '--verify_fatal=1', '--randrepeat=1', '--randseed=13', '--verify_state_save=0'];

test('migration: fio verify through start and cutover, one connection across it, kill -9, detach/reattach replay, finish',
  { skip, timeout: 300_000 }, async () => {
    fixture = await DaemonFixture.create();
    const dataDir = join(fixture.dir, 'array');
    let array = await fixture.start(dataDir);
    await cli(array, 'volume', 'create', 'vol', '--size', '64MiB');
    await cli(array, 'volume', 'create', 'new', '--size', '64MiB');
    // Data beyond fio's range that the copy must carry.
    await mustRun('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 48M 8M', array.uri('vol')]);

    // One qemu-io connection opened before the migration and used across the cutover.
    const session = QemuIoSession.open(array.uri('vol'));
    await session.run('write -P 0x11 60M 64k', /wrote/);

    // fio writes at a bounded rate, so it is still writing when the copy completes and the cutover runs.
    let fioDone = false;
    const fio = new Promise<{ code: number | null; output: string }>((resolve) => {
      const child = spawn('fio', [...FIO_JOB(array.uri('vol')), '--rate=2m'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let output = '';
      child.stdout.on('data', (d: Buffer) => { output += d.toString(); });
      child.stderr.on('data', (d: Buffer) => { output += d.toString(); });
      child.once('exit', (code) => { fioDone = true; resolve({ code, output }); });
    });
    await waitFor('fio writing', async () => (await cli<{ changedTracks: number }>(array, 'volume', 'show', 'vol')).changedTracks > 130);

    const started = await cli(array, 'migration', 'start', 'vol', '--to', 'new', '--manual-cutover');
    assert.equal(started.state, 'copying');
    assert.equal(started.servedFrom, 'old');
    // The target is no host's while it migrates.
    const refused = await runCommand('qemu-io', ['-f', 'raw', '-c', 'read 0 4k', array.uri('new')]);
    assert.ok(refused.code !== 0 || /error|fail/i.test(refused.stdout + refused.stderr), 'the target must refuse host I/O');
    await waitFor('copy complete', async () => (await cli(array, 'migration', 'show', 'vol')).tracksLeft === 0, 60_000);
    assert.equal((await cli(array, 'migration', 'show', 'vol')).state, 'copying', 'manual cutover waits');
    assert.equal(fioDone, false, 'fio must still be writing at the cutover (lower --rate if the machine is this fast)');
    const cut = await cli(array, 'migration', 'cutover', 'vol');
    assert.equal(cut.state, 'cut-over');
    assert.equal(cut.servedFrom, 'new');

    // The connection opened before the cutover carries on.
    await session.run('read -P 0x11 60M 64k', /read/);
    await session.run('write -P 0x22 61M 64k', /wrote/);
    const readBack = await session.run('read -P 0x22 61M 64k', /read|fail/);
    assert.doesNotMatch(readBack, /fail/i);
    await session.close();

    const fioResult = await fio;
    assert.equal(fioResult.code, 0, fioResult.output);
    assert.doesNotMatch(fioResult.output, /verify.*(bad|fail)|crc32c: verify failed/i);

    // kill -9, restart: still cut over, served from the new storage, every acknowledged byte there.
    await array.stop('SIGKILL');
    array = await fixture.start(dataDir);
    const restarted = await cli(array, 'migration', 'show', 'vol');
    assert.equal(restarted.state, 'cut-over');
    assert.equal(restarted.servedFrom, 'new');
    await mustRun('fio', [...FIO_JOB(array.uri('vol')), '--verify_only']);
    await mustRun('qemu-io', ['-f', 'raw', '-c', 'read -P 0x5a 48M 8M', '-c', 'read -P 0x11 60M 64k', '-c', 'read -P 0x22 61M 64k',
      array.uri('vol')]);
    await waitFor('no tracks left after recovery', async () => (await cli(array, 'migration', 'show', 'vol')).tracksLeft === 0, 60_000);

    // Detach: writes go to the new storage only and are recorded by track.
    const detached = await cli(array, 'migration', 'detach', 'vol');
    assert.equal(detached.state, 'detached');
    await mustRun('qemu-io', ['-f', 'raw', '-c', 'write -P 0x77 0 4k', '-c', 'write -P 0x78 100k 8k', '-c', 'write -P 0x79 1M 4k',
      '-c', 'write -P 0x7a 1028k 4k', '-c', 'write -P 0x7b 62M 64k', array.uri('vol')]);
    const written = new Set([0, Math.floor((100 * 1024) / TRACK), Math.floor((104 * 1024) / TRACK), 16, 992]);
    assert.equal((await cli(array, 'migration', 'show', 'vol')).tracksLeft, written.size);
    const volumes = join(dataDir, 'volumes');
    // VOL is served from new.vol: the write is there and not in the old storage (vol.vol).
    assert.equal((await fileBytes(join(volumes, 'new.vol'), 62 * MiB, 4096)).every((b) => b === 0x7b), true);
    assert.equal((await fileBytes(join(volumes, 'vol.vol'), 62 * MiB, 4096)).every((b) => b === 0x7b), false);

    // Reattach: exactly those tracks are replayed, and the old storage then equals VOL.
    const reattached = await cli(array, 'migration', 'reattach', 'vol');
    assert.equal(reattached.tracksReplayed, written.size);
    await waitFor('replay complete', async () => (await cli(array, 'migration', 'show', 'vol')).tracksLeft === 0, 60_000);
    const image = await exportImage(array, 'vol', join(fixture.dir, 'vol.img'));
    assert.equal(sha256(await readFile(join(volumes, 'vol.vol'))), image, 'old storage equals VOL after the replay');

    // Finish: the old storage and the target volume go; VOL keeps its data under its own name.
    const finished = await cli(array, 'migration', 'finish', 'vol');
    assert.equal(finished.state, 'finished');
    const list = await cli<Array<{ name: string }> | { volumes: Array<{ name: string }> }>(array, 'volume', 'list');
    const names = (Array.isArray(list) ? list : list.volumes).map((v) => v.name);
    assert.deepEqual(names, ['vol']);
    await assert.rejects(access(join(volumes, 'new.vol')));
    assert.equal(await exportImage(array, 'vol', join(fixture.dir, 'vol2.img')), image);
    await array.stop('SIGKILL');
    array = await fixture.start(dataDir);
    assert.equal((await cli(array, 'migration', 'show', 'vol')).state, 'finished');
    assert.equal(await exportImage(array, 'vol', join(fixture.dir, 'vol3.img')), image);
    await array.stop();
  });

test('migration: kill -9 mid-copy resumes the copy; kill -9 after finish keeps VOL on its own storage name', { skip, timeout: 300_000 },
  async () => {
    fixture ??= await DaemonFixture.create();
    const dataDir = join(fixture.dir, 'array-midcopy');
    let array = await fixture.start(dataDir);
    await cli(array, 'volume', 'create', 'db', '--size', '256MiB');
    await cli(array, 'volume', 'create', 'db2', '--size', '256MiB');
    const patterns = Array.from({ length: 16 }, (_, i) => ['-c', `write -P ${0x20 + i} ${i * 16}M 16M`]).flat();
    await mustRun('qemu-io', ['-f', 'raw', ...patterns, array.uri('db')]);
    await cli(array, 'migration', 'start', 'db', '--to', 'db2');
    // Straight to the API (no CLI start-up): the copy of 256 MiB of data takes a second or two.
    const left = (await api<Migration>(array, 'GET', '/v1/migrations/db')).body.tracksLeft;
    await array.stop('SIGKILL');
    assert.ok(left > 0, 'killed mid-copy');
    array = await fixture.start(dataDir);
    const resumed = await cli(array, 'migration', 'show', 'db');
    assert.equal(resumed.state, 'copying');
    await waitFor('cut over after the resumed copy', async () => (await cli(array, 'migration', 'show', 'db')).state === 'cut-over', 120_000);
    const reads = Array.from({ length: 16 }, (_, i) => ['-c', `read -P ${0x20 + i} ${i * 16}M 16M`]).flat();
    await mustRun('qemu-io', ['-f', 'raw', ...reads, array.uri('db')]);
    await cli(array, 'migration', 'finish', 'db');
    await array.stop('SIGKILL');
    array = await fixture.start(dataDir);
    assert.equal((await cli(array, 'migration', 'show', 'db')).state, 'finished');
    await mustRun('qemu-io', ['-f', 'raw', ...reads, array.uri('db')]);
    await access(join(dataDir, 'volumes', 'db.vol'));
    await assert.rejects(access(join(dataDir, 'volumes', 'db2.vol')));
    await array.stop();
  });
