// Online import from a real qemu-nbd export with a real daemon and real NBD clients (issue 13): a
// host reads source data through tidemark before it is copied, fio verifies its writes during the
// import, the daemon is killed (-9) mid-copy and resumes, a source outage fails reads of unfetched
// tracks with an error (never wrong data) and the copy resumes when the source returns; after
// `import finish` the volume equals the source plus the host's writes, and with --write-back the
// source equals the volume too.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { open, readFile, truncate, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { DaemonFixture, tidemarkBin, waitFor, type DaemonProcess } from '../helpers/daemon.js';
import { freePort } from '../helpers/free-port.js';
import { mustRun, runCommand } from '../helpers/in-process-array.js';
import { missingTools, requirement } from '../helpers/requirement.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const skip = requirement(missingTools(['qemu-nbd', 'qemu-io', 'qemu-img', 'fio']));
let fixture: DaemonFixture | undefined;
const servers = new Set<ChildProcess>();
after(async () => {
  for (const s of servers) s.kill('SIGKILL');
  await fixture?.cleanup();
});

interface Import { state: string; tracksLeft: number; sourceConnected: boolean; writeBack: boolean }

async function cli<T = Import>(array: DaemonProcess, ...args: string[]): Promise<T> {
  const r = await runCommand(tidemarkBin, [...array.cliArgs, '--json', ...args]);
  if (r.code !== 0) throw new Error(`tidemark ${args.join(' ')} exited ${r.code}: ${r.stderr}${r.stdout}`);
  return JSON.parse(r.stdout) as T;
}

/** qemu-nbd serving `image` as export `src` on 127.0.0.1:port, persistent, for several clients. */
async function serve(image: string, port: number): Promise<ChildProcess> {
  const child = spawn('qemu-nbd', ['-f', 'raw', '-x', 'src', '-b', '127.0.0.1', '-p', String(port), '-t', '-e', '8', image],
    { stdio: 'ignore' });
  servers.add(child);
  child.once('exit', () => servers.delete(child));
  await waitFor('qemu-nbd listening', () => new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port });
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  }));
  return child;
}

async function stopServer(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL');
  await exited;
}

/** Constant-byte regions of the source image (offset, byte). */
const REGIONS: ReadonlyArray<[number, number]> = [[0, 0x31], [300 * MiB, 0x32], [700 * MiB, 0x33], [1020 * MiB, 0x34]];
const REGION_BYTES = 4 * MiB;

async function makeImage(path: string, sizeBytes: number, regions: ReadonlyArray<[number, number]>): Promise<void> {
  await writeFile(path, '');
  await truncate(path, sizeBytes);
  const handle = await open(path, 'r+');
  try {
    for (const [offset, byte] of regions) await handle.write(Buffer.alloc(REGION_BYTES, byte), 0, REGION_BYTES, offset);
  } finally {
    await handle.close();
  }
}

/** Byte ranges where two files differ, compared in 4 MiB chunks outside `skipFrom..skipTo`. */
async function differingChunks(a: string, b: string, sizeBytes: number, skipFrom: number, skipTo: number): Promise<number[]> {
  const [fa, fb] = [await open(a, 'r'), await open(b, 'r')];
  const out: number[] = [];
  try {
    const [ba, bb] = [Buffer.alloc(4 * MiB), Buffer.alloc(4 * MiB)];
    for (let at = 0; at < sizeBytes; at += 4 * MiB) {
      if (at >= skipFrom && at < skipTo) continue;
      await fa.read(ba, 0, ba.length, at);
      await fb.read(bb, 0, bb.length, at);
      if (!ba.equals(bb)) out.push(at);
    }
  } finally {
    await fa.close();
    await fb.close();
  }
  return out;
}

const FIO_REGION = { offset: 200 * MiB, size: 32 * MiB };
const fioJob = (uri: string, size = FIO_REGION.size): string[] => ['--name=import', '--ioengine=nbd', `--uri=${uri}`, '--rw=randwrite',
  '--bs=4k', `--offset=${FIO_REGION.offset}`, `--size=${size}`, '--iodepth=8', '--verify=crc32c', '--verify_fatal=1',
  '--randrepeat=1', '--randseed=7', '--verify_state_save=0'];

test('import from qemu-nbd (1 GiB): reads before the copy, fio verify during it, kill -9 mid-copy, source outage, finish',
  { skip, timeout: 600_000 }, async () => {
    fixture = await DaemonFixture.create();
    const image = join(fixture.dir, 'source.img');
    await makeImage(image, GiB, REGIONS);
    const port = await freePort();
    let server = await serve(image, port);
    const dataDir = join(fixture.dir, 'array');
    let array = await fixture.start(dataDir);
    const url = `nbd://127.0.0.1:${port}/src`;

    const started = await cli(array, 'import', 'start', 'big', '--from', url, '--max-rate', '32MiB');
    assert.equal(started.state, 'copying');
    const volume = await cli<{ sizeBytes: number }>(array, 'volume', 'show', 'big');
    assert.equal(volume.sizeBytes, GiB);

    // Source data read through tidemark before the copy got there (the copy runs from track 0 up).
    assert.ok((await cli(array, 'import', 'show', 'big')).tracksLeft > (GiB - 1020 * MiB) / (64 * 1024));
    await mustRun('qemu-io', ['-f', 'raw', '-c', `read -P 0x34 ${1020 * MiB} ${REGION_BYTES}`, '-c', `read -P 0x33 ${700 * MiB} 64k`,
      '-c', `read -P 0 ${900 * MiB} 1M`, array.uri('big')]);

    // fio writes and verifies during the import; partial-track writes land over fetched data.
    await mustRun('fio', fioJob(array.uri('big')), 180_000);
    await mustRun('qemu-io', ['-f', 'raw', '-c', `write -P 0x5e ${300 * MiB + 4096} 4096`, array.uri('big')]);

    // kill -9 mid-copy; the import resumes and no host write is lost (nor fetched over).
    const before = await cli(array, 'import', 'show', 'big');
    assert.equal(before.state, 'copying');
    assert.ok(before.tracksLeft > 0);
    await array.stop('SIGKILL');
    array = await fixture.start(dataDir);
    assert.equal((await cli(array, 'import', 'show', 'big')).state, 'copying');
    await mustRun('fio', [...fioJob(array.uri('big')), '--verify_only'], 180_000);
    await mustRun('qemu-io', ['-f', 'raw', '-c', `read -P 0x5e ${300 * MiB + 4096} 4096`, '-c', `read -P 0x32 ${300 * MiB} 4096`,
      '-c', `read -P 0x32 ${300 * MiB + 8192} 64k`, array.uri('big')]);

    // Source outage: an unfetched track fails with an error, a fetched one still reads right.
    await stopServer(server);
    const outage = await runCommand('qemu-io', ['-f', 'raw', '-c', `read ${1000 * MiB} 64k`, array.uri('big')]);
    assert.match(outage.stdout + outage.stderr, /error|fail/i, `a read of an unfetched track must fail while the source is down:\n${outage.stdout}`);
    await mustRun('qemu-io', ['-f', 'raw', '-c', `read -P 0x34 ${1020 * MiB} 64k`, array.uri('big')]);
    await waitFor('the outage seen', async () => !(await cli(array, 'import', 'show', 'big')).sourceConnected);
    await assert.rejects(cli(array, 'import', 'finish', 'big'), /TM_ERR_INVALID_STATE/);

    // The source returns: the copy resumes and completes.
    server = await serve(image, port);
    await waitFor('import copied', async () => (await cli(array, 'import', 'show', 'big')).state === 'copied', 400_000);
    const finished = await cli(array, 'import', 'finish', 'big');
    assert.equal(finished.state, 'finished');
    await stopServer(server);

    // The volume equals the source plus the host's writes (fio's region verified by fio; one 4 KiB write).
    const exported = join(fixture.dir, 'big.img');
    await mustRun('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', array.uri('big'), exported], 300_000);
    const expected = join(fixture.dir, 'expected.img');
    await mustRun('cp', ['--sparse=always', image, expected]);
    const e = await open(expected, 'r+');
    await e.write(Buffer.alloc(4096, 0x5e), 0, 4096, 300 * MiB + 4096);
    await e.close();
    assert.deepEqual(await differingChunks(exported, expected, GiB, FIO_REGION.offset, FIO_REGION.offset + FIO_REGION.size), []);
    await mustRun('fio', [...fioJob(array.uri('big')), '--verify_only'], 180_000);
    await array.stop();
  });

test('import --write-back: host writes reach the source, which equals the volume after finish', { skip, timeout: 300_000 }, async () => {
  fixture ??= await DaemonFixture.create();
  const image = join(fixture.dir, 'wb-source.img');
  await makeImage(image, 64 * MiB, [[0, 0x41], [40 * MiB, 0x42]]);
  const port = await freePort();
  const server = await serve(image, port);
  const array = await fixture.start(join(fixture.dir, 'array-wb'));
  const started = await cli(array, 'import', 'start', 'wb', '--from', `nbd://127.0.0.1:${port}/src`, '--write-back', '--max-rate', '8MiB');
  assert.equal(started.writeBack, true);
  // Partial-track writes on unfetched tracks, a zeroed range, and fio's verified writes.
  await mustRun('qemu-io', ['-f', 'raw', '-c', `write -P 0x61 ${40 * MiB + 512} 1000`, '-c', `write -P 0x62 ${63 * MiB} 4096`,
    '-c', `write -z ${2 * MiB} 64k`, '-c', 'flush', array.uri('wb')]);
  await mustRun('fio', ['--name=wb', '--ioengine=nbd', `--uri=${array.uri('wb')}`, '--rw=randwrite', '--bs=4k', `--offset=${8 * MiB}`,
    '--size=8M', '--iodepth=8', '--verify=crc32c', '--verify_fatal=1', '--verify_state_save=0'], 180_000);
  await cli(array, 'import', 'wait', 'wb', '--until', 'copied', '--timeout', '200');
  await cli(array, 'import', 'finish', 'wb');
  await stopServer(server);
  const exported = join(fixture.dir, 'wb.img');
  await mustRun('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', array.uri('wb'), exported]);
  const sha = async (p: string): Promise<string> => createHash('sha256').update(await readFile(p)).digest('hex');
  assert.equal(await sha(image), await sha(exported), 'the source image equals the volume');
  await mustRun('qemu-io', ['-f', 'raw', '-c', `read -P 0x61 ${40 * MiB + 512} 1000`, '-c', `read -P 0x42 ${40 * MiB + 1512} 4096`,
    '-c', `read -P 0 ${2 * MiB} 64k`, '-c', `read -P 0x41 ${2 * MiB + 64 * 1024} 4096`, array.uri('wb')]);
  await array.stop();
});
