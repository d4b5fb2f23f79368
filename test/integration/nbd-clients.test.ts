// Real NBD clients against the real NBD server and volumes (in-process array, child-process clients).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { mustRun, runCommand, startTestArray, type TestArray } from '../helpers/in-process-array.js';
import { QemuIoSession } from '../helpers/nbd-qemu-io-session.js';
import { missingTools, requirement } from '../helpers/requirement.js';

const MiB = 1024 * 1024;
/** The `skip` option for a test that runs these client tools. */
const needs = (...tools: string[]): { skip: string | false } => ({ skip: requirement(missingTools(tools)) });
let array: TestArray;

before(async () => {
  array = await startTestArray();
  await array.service.createVolume('disk0', 64 * MiB);
  await array.service.createVolume('disk1', 64 * MiB);
  await array.service.createVolume('fio', 64 * MiB);
});
after(async () => {
  await array.close();
});

const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

test('qemu-io: pattern writes, FUA, write-zeroes, discard and aio read back through TCP and the Unix socket', needs('qemu-io'), async () => {
  for (const uri of [array.uri('disk0'), array.unixUri('disk0')]) {
    await mustRun('qemu-io', ['-f', 'raw',
      '-c', 'write -P 0xa5 0 1M', '-c', 'read -P 0xa5 0 1M',
      '-c', 'write -f -P 0x11 1M 64k', '-c', 'read -P 0x11 1M 64k',
      '-c', 'write -P 0x22 2M 1M', '-c', 'write -z 2M 1M', '-c', 'read -P 0 2M 1M',
      '-c', 'write -P 0x33 3M 1M', '-c', 'write -z -u 3M 1M', '-c', 'read -P 0 3M 1M',
      '-c', 'write -P 0x44 4M 1M', '-c', 'discard 4M 1M',
      '-c', 'aio_write -P 7 5M 64k', '-c', 'aio_flush', '-c', 'read -P 7 5M 64k',
      '-c', 'write -P 0x55 100 5000', '-c', 'read -P 0x55 100 5000',
      '-c', 'flush', uri]);
  }
});

test('qemu-io detects a pattern mismatch (the verification can fail)', needs('qemu-io'), async () => {
  await mustRun('qemu-io', ['-f', 'raw', '-c', 'write -P 0x01 8M 64k', array.uri('disk0')]);
  const result = await runCommand('qemu-io', ['-f', 'raw', '-c', 'read -P 0x02 8M 64k', array.uri('disk0')]);
  assert.match(result.stdout + result.stderr, /Pattern verification failed/);
});

test('qemu-img info, convert to and from an export, and compare', needs('qemu-img'), async () => {
  const info = JSON.parse(await mustRun('qemu-img', ['info', '--output=json', '-f', 'raw', array.uri('disk1')])) as { 'virtual-size': number };
  assert.equal(info['virtual-size'], 64 * MiB);
  const source = join(array.dir, 'source.img');
  const image = Buffer.alloc(64 * MiB);
  for (let i = 0; i < 64; i += 3) image.fill(i + 1, i * MiB, i * MiB + 300 * 1024);
  await writeFile(source, image);
  await mustRun('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', source, array.uri('disk1')]);
  await mustRun('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', source, array.uri('disk1')]);
  const back = join(array.dir, 'back.img');
  await mustRun('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', array.uri('disk1'), back]);
  assert.equal(sha256(await readFile(back)), sha256(image));
  const map = JSON.parse(await mustRun('qemu-img', ['map', '--output=json', '-f', 'raw', array.uri('disk1')])) as Array<{ start: number; length: number; data: boolean; zero: boolean }>;
  assert.ok(map.some((e) => e.data), 'written ranges are data');
  assert.ok(map.some((e) => !e.data && e.zero), 'unwritten ranges are holes that read as zero');
});

test('nbdinfo: info, --json, --list, and --map showing data after writes and holes after trim and zeroing', needs('nbdinfo', 'qemu-io'), async () => {
  const json = JSON.parse(await mustRun('nbdinfo', ['--json', array.uri('disk0')])) as {
    exports: Array<{
      'export-name': string; 'export-size': number; can_multi_conn: boolean; is_read_only: boolean; can_fua: boolean;
      can_fast_zero: boolean; can_trim: boolean; can_zero: boolean; can_flush: boolean; can_cache: boolean;
      block_size_minimum: number; block_size_preferred: number; block_size_maximum: number; contexts: string[];
    }>;
  };
  const disk = json.exports[0]!;
  assert.equal(disk['export-name'], 'disk0');
  assert.equal(disk['export-size'], 64 * MiB);
  assert.equal(disk.can_multi_conn, true);
  assert.equal(disk.is_read_only, false);
  for (const can of ['can_fua', 'can_fast_zero', 'can_trim', 'can_zero', 'can_flush', 'can_cache'] as const) assert.equal(disk[can], true, can);
  assert.deepEqual([disk.block_size_minimum, disk.block_size_preferred, disk.block_size_maximum], [1, 4096, 32 * MiB]);
  assert.deepEqual(disk.contexts, ['base:allocation']);
  const list = await mustRun('nbdinfo', ['--list', `nbd://127.0.0.1:${array.nbd.tcpAddress!.port}`]);
  for (const name of ['disk0', 'disk1', 'fio']) assert.match(list, new RegExp(`export="${name}"`));
  await mustRun('qemu-io', ['-f', 'raw', '-c', 'write -P 9 16M 8M', '-c', 'discard 17M 1M', '-c', 'write -z -u 19M 1M', array.uri('disk0')]);
  for (const uri of [array.uri('disk0'), array.unixUri('disk0')]) {
    const map = await mustRun('nbdinfo', ['--map', uri]);
    const rows = map.trim().split('\n').map((line) => line.trim().split(/\s+/)).map(([off, len, type]) => ({ off: Number(off), len: Number(len), type: Number(type) }));
    const at = (offset: number) => rows.find((r) => r.off <= offset && offset < r.off + r.len)!;
    assert.equal(at(16 * MiB).type, 0, 'written data');
    assert.equal(at(17 * MiB).type, 3, 'trimmed range is a hole that reads as zero');
    assert.equal(at(18 * MiB).type, 0);
    assert.equal(at(19 * MiB).type, 3, 'zeroed range (unmap allowed) is a hole that reads as zero');
    assert.equal(at(20 * MiB).type, 0);
    assert.equal(at(40 * MiB).type, 3, 'never-written range is a hole');
  }
  const totals = await mustRun('nbdinfo', ['--map', '--totals', array.unixUri('disk0')]);
  assert.match(totals, /\b0\s+data/);
  assert.match(totals, /\b3\s+hole,zero/);
  await mustRun('qemu-io', ['-f', 'raw', '-c', 'read -P 9 16M 1M', '-c', 'read -P 0 17M 1M', '-c', 'read -P 9 18M 1M',
    '-c', 'read -P 0 19M 1M', '-c', 'read -P 9 20M 4M', array.uri('disk0')]);
});

test('qemu-nbd -L lists exports, their flags, block sizes and meta contexts', needs('qemu-nbd'), async () => {
  const out = await mustRun('qemu-nbd', ['-L', '-b', '127.0.0.1', '-p', String(array.nbd.tcpAddress!.port)]);
  assert.match(out, /exports available: 3/);
  assert.match(out, /export: 'disk0'/);
  assert.match(out, /flags: 0xded/);
  assert.match(out, /min block: 1\s+opt block: 4096\s+max block: 33554432/);
  assert.match(out, /base:allocation/);
});

test('qemu-io fast zero (-z -n) of the whole export succeeds and reads back as zeros', needs('qemu-io'), async () => {
  await mustRun('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 30M 2M', '-c', 'write -z -n -u 0 64M', '-c', 'read -P 0 30M 2M', array.uri('fio')]);
});

test('nbdcopy round trip keeps the bytes identical (multi-conn, TCP in, Unix socket out)', needs('nbdcopy', 'qemu-img'), async () => {
  const source = join(array.dir, 'copy-src.img');
  const image = Buffer.alloc(32 * MiB);
  for (let i = 0; i < image.length; i += 4096) image.writeUInt32LE((i * 2654435761) >>> 0, i);
  image.fill(0, 8 * MiB, 12 * MiB); // a zero run nbdcopy sends as WRITE_ZEROES
  await writeFile(source, image);
  await mustRun('nbdcopy', ['--flush', source, array.uri('disk1')]);
  const out = join(array.dir, 'copy-out.img');
  await mustRun('nbdcopy', [array.unixUri('disk1'), out]);
  const copied = await readFile(out);
  assert.equal(copied.length, 64 * MiB);
  assert.equal(sha256(copied.subarray(0, 32 * MiB)), sha256(image));
  await mustRun('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', out, array.unixUri('disk1')]);
});

test('fio nbd engine: random writes verified with crc32c, with flushes, over TCP and Unix socket', needs('fio'), async () => {
  for (const uri of [array.uri('fio'), array.unixUri('fio')]) {
    const output = await mustRun('fio', ['--name=verify', '--ioengine=nbd', `--uri=${uri}`, '--rw=randwrite', '--bs=4k',
      '--iodepth=16', '--size=16m', '--verify=crc32c', '--do_verify=1', '--verify_state_save=0', '--fsync=32', '--output-format=json'], 120_000);
    const report = JSON.parse(output.slice(output.indexOf('{'))) as { jobs: Array<{ error: number; write: { io_bytes: number }; read: { io_bytes: number } }> };
    assert.equal(report.jobs[0]!.error, 0);
    assert.equal(report.jobs[0]!.write.io_bytes, 16 * MiB);
    assert.equal(report.jobs[0]!.read.io_bytes, 16 * MiB, 'every block was read back and verified');
  }
});

test('fio nbd engine: four connections at once, mixed block sizes, deep queues, verified', needs('fio'), async () => {
  const output = await mustRun('fio', ['--name=multi', '--ioengine=nbd', `--uri=${array.uri('fio')}`, '--rw=randwrite',
    '--bsrange=4k-128k', '--iodepth=32', '--numjobs=4', '--size=8m', '--offset_increment=8m', '--verify=crc32c', '--do_verify=1',
    '--verify_state_save=0', '--fsync=16', '--group_reporting', '--output-format=json'], 120_000);
  const report = JSON.parse(output.slice(output.indexOf('{'))) as { jobs: Array<{ error: number; write: { io_bytes: number }; read: { io_bytes: number } }> };
  assert.equal(report.jobs[0]!.error, 0);
  assert.equal(report.jobs[0]!.write.io_bytes, 32 * MiB);
  assert.equal(report.jobs[0]!.read.io_bytes, 32 * MiB, 'every block was read back and verified');
});

test('a write-disabled volume serves reads and refuses writes with EPERM; a not-ready volume refuses connections', needs('qemu-io', 'nbdinfo'), async () => {
  await mustRun('qemu-io', ['-f', 'raw', '-c', 'write -P 0x77 0 64k', array.uri('disk1')]);
  const session = QemuIoSession.open(array.uri('disk1'));
  try {
    await session.run('read -P 0x77 0 64k', /read 65536\/65536 bytes/);
    await array.service.setVolumeState('disk1', 'write-disabled');
    // The same connection: the server answers the WRITE with EPERM.
    assert.match(await session.run('write -P 1 0 4k', /write failed|wrote/), /write failed: Operation not permitted/);
    await session.run('read -P 0x77 0 64k', /read 65536\/65536 bytes/);
    await session.close();
    // New connections see a read-only export: reads work, opening for writing is refused.
    await mustRun('qemu-io', ['-r', '-f', 'raw', '-c', 'read -P 0x77 0 64k', array.uri('disk1')]);
    assert.equal(JSON.parse(await mustRun('nbdinfo', ['--json', array.uri('disk1')])).exports[0].is_read_only, true);
    const write = await runCommand('qemu-io', ['-f', 'raw', '-c', 'write -P 1 0 4k', array.uri('disk1')]);
    assert.notEqual(write.code, 0, 'qemu-io cannot write a read-only export');
    assert.match(write.stderr, /Permission denied|read-only/);
    await mustRun('qemu-io', ['-r', '-f', 'raw', '-c', 'read -P 0x77 0 64k', array.unixUri('disk1')]);

    await array.service.setVolumeState('disk1', 'not-ready');
    const refused = await runCommand('qemu-io', ['-f', 'raw', '-c', 'read 0 4k', array.uri('disk1')]);
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /not ready/);
    const info = await runCommand('nbdinfo', [array.unixUri('disk1')]);
    assert.notEqual(info.code, 0);
    const list = await mustRun('nbdinfo', ['--list', `nbd://127.0.0.1:${array.nbd.tcpAddress!.port}`]);
    assert.doesNotMatch(list, /export="disk1"/, 'a not-ready volume is not listed');
  } finally {
    await session.close();
    await array.service.setVolumeState('disk1', 'ready');
  }
  await mustRun('qemu-io', ['-f', 'raw', '-c', 'write -P 2 0 4k', '-c', 'read -P 2 0 4k', array.uri('disk1')]);
});
