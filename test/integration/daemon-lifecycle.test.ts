// The daemon process: one array per data directory, clean SIGTERM shutdown, restart after kill -9
// with flushed data and volumes intact, refusal to run on corrupt metadata or a taken port.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile, readdir } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { DaemonFixture, api } from '../helpers/daemon.js';
import { mustRun } from '../helpers/in-process-array.js';

const MiB = 1024 * 1024;
let fixture: DaemonFixture;

before(async () => {
  fixture = await DaemonFixture.create();
});
after(async () => {
  await fixture.cleanup();
});

interface Volume { name: string; sizeBytes: number; changedTracks: number; lastRecovery: { crashed: boolean; tracksMarked: number } }

test('a second daemon on the same data directory is refused and the first keeps serving', { timeout: 60_000 }, async () => {
  const first = await fixture.start();
  const second = await fixture.spawnDaemon(first.dataDir).done;
  assert.equal(second.code, 1);
  assert.match(second.output, /in use by another tidemark array/);
  assert.match(second.output, new RegExp(`pid ${first.pid}`));
  assert.equal((await api(first, 'GET', '/v1/array')).status, 200);
  assert.deepEqual(await first.stop(), { code: 0, signal: null });
});

test('SIGTERM stops cleanly (exit 0) and a restart sees the volumes and the data', { timeout: 60_000 }, async () => {
  const first = await fixture.start();
  await api(first, 'POST', '/v1/volumes', { name: 'a', sizeBytes: 2 * MiB });
  await api(first, 'POST', '/v1/volumes', { name: 'b', sizeBytes: 4 * MiB, trackBytes: 256 * 1024 });
  await mustRun('qemu-io', ['-f', 'raw', '-c', 'write -P 0x61 0 64k', first.uri('a')]);
  assert.deepEqual(await first.stop('SIGTERM'), { code: 0, signal: null });
  assert.match(first.output(), /"array stopped/);

  const second = await fixture.start(first.dataDir);
  const { volumes } = (await api<{ volumes: Volume[] }>(second, 'GET', '/v1/volumes')).body;
  assert.deepEqual(volumes.map((v) => [v.name, v.sizeBytes]), [['a', 2 * MiB], ['b', 4 * MiB]]);
  const a = volumes[0]!;
  assert.equal(a.lastRecovery.crashed, false, 'a clean stop leaves nothing to recover');
  assert.equal(a.changedTracks, 1, 'the change bitmap was persisted at shutdown');
  await mustRun('qemu-io', ['-f', 'raw', '-c', 'read -P 0x61 0 64k', second.uri('a')]);
  assert.deepEqual(await second.stop('SIGINT'), { code: 0, signal: null });
});

test('kill -9 and restart keep the volumes, flushed data and the changed tracks', { timeout: 60_000 }, async () => {
  const first = await fixture.start();
  await api(first, 'POST', '/v1/volumes', { name: 'k', sizeBytes: 16 * MiB });
  await mustRun('qemu-io', ['-f', 'raw', '-c', 'write -P 0xa5 0 1M', '-c', 'write -P 0x5a 8M 4k', '-c', 'flush', first.uri('k')]);
  assert.deepEqual(await first.stop('SIGKILL'), { code: null, signal: 'SIGKILL' });

  const second = await fixture.start(first.dataDir);
  const k = (await api<Volume>(second, 'GET', '/v1/volumes/k')).body;
  assert.equal(k.sizeBytes, 16 * MiB);
  assert.equal(k.lastRecovery.crashed, true);
  await mustRun('qemu-io', ['-f', 'raw', '-c', 'read -P 0xa5 0 1M', '-c', 'read -P 0x5a 8M 4k', '-c', 'read -P 0 1M 7M', second.uri('k')]);
  const changes = (await api<{ runs: Array<{ start: number; end: number }> }>(second, 'GET', '/v1/volumes/k/changes')).body;
  const changed = new Set(changes.runs.flatMap((r) => Array.from({ length: r.end - r.start }, (_, i) => r.start + i)));
  for (const track of [...Array.from({ length: 16 }, (_, i) => i), 128]) {
    assert.ok(changed.has(track), `track ${track} is marked changed after the crash`);
  }
  assert.match(second.output(), /not shut down cleanly/);
  assert.deepEqual(await second.stop(), { code: 0, signal: null });
});

test('corrupt metadata: the daemon refuses to start, names the record and exits non-zero', { timeout: 60_000 }, async () => {
  const first = await fixture.start();
  await api(first, 'POST', '/v1/volumes', { name: 'c', sizeBytes: MiB });
  assert.equal((await first.stop()).code, 0);
  const metaDir = join(first.dataDir, 'meta');
  const record = (await readdir(metaDir)).find((f) => f.startsWith('volume') && f.endsWith('.rec'));
  assert.ok(record, 'the volume record exists');
  const bytes = await readFile(join(metaDir, record));
  bytes[bytes.length - 2] = bytes[bytes.length - 2]! ^ 0xff;
  await writeFile(join(metaDir, record), bytes);

  const result = await fixture.spawnDaemon(first.dataDir).done;
  assert.notEqual(result.code, 0);
  assert.match(result.output, /TM_ERR_METADATA_CORRUPT/);
  assert.match(result.output, /volume\/c is corrupt: checksum mismatch/);
  assert.doesNotMatch(result.output, /"array started"/);
});

test('a taken API port: clear error, exit 1, and the data directory is not left locked', { timeout: 60_000 }, async () => {
  const blocker = createServer();
  await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
  const port = (blocker.address() as { port: number }).port;
  try {
    const dataDir = join(fixture.dir, 'port-taken');
    const result = await fixture.spawnDaemon(dataDir, ['--api', `127.0.0.1:${port}`]).done;
    assert.equal(result.code, 1);
    assert.match(result.output, /EADDRINUSE/);
    const retry = await fixture.start(dataDir);
    const exit = await retry.stop();
    assert.equal(exit.code, 0, `${JSON.stringify(exit)}\n${retry.output()}`);
  } finally {
    blocker.close();
  }
});
