// The HTTP API against a real daemon process: volume lifecycle, validation with stable codes that
// change nothing, state changes seen by NBD clients, delete refused while exported, change tracking.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { DaemonFixture, api, waitFor, type DaemonProcess } from '../helpers/daemon.js';
import { RawNbdClient } from '../helpers/raw-nbd-client.js';
import { mustRun, runCommand } from '../helpers/in-process-array.js';

const MiB = 1024 * 1024;
let fixture: DaemonFixture;
let daemon: DaemonProcess;

interface ErrorBody { error: { code: string; message: string; details: Record<string, unknown> } }
interface Volume { name: string; sizeBytes: number; trackBytes: number; trackCount: number; state: string; exports: number; changedTracks: number }

before(async () => {
  fixture = await DaemonFixture.create();
  daemon = await fixture.start();
});
after(async () => {
  await fixture.cleanup();
});

const names = async (): Promise<string[]> =>
  (await api<{ volumes: Volume[] }>(daemon, 'GET', '/v1/volumes')).body.volumes.map((v) => v.name);

test('create, show, list and delete a volume', { timeout: 30_000 }, async () => {
  const created = await api<Volume>(daemon, 'POST', '/v1/volumes', { name: 'life', sizeBytes: 8 * MiB, trackBytes: 128 * 1024 });
  assert.equal(created.status, 201);
  assert.equal(created.body.sizeBytes, 8 * MiB);
  assert.equal(created.body.trackCount, 64);
  assert.equal(created.body.state, 'ready');
  const shown = await api<Volume>(daemon, 'GET', '/v1/volumes/life');
  assert.deepEqual(shown.body, created.body);
  assert.ok((await names()).includes('life'));
  const deleted = await api(daemon, 'DELETE', '/v1/volumes/life');
  assert.deepEqual(deleted, { status: 200, body: { name: 'life', deleted: true } });
  assert.ok(!(await names()).includes('life'));
  assert.equal((await api<ErrorBody>(daemon, 'GET', '/v1/volumes/life')).status, 404);
});

test('bad input gets a stable code and changes nothing', { timeout: 30_000 }, async () => {
  await api(daemon, 'POST', '/v1/volumes', { name: 'keep', sizeBytes: MiB });
  const before = await api(daemon, 'GET', '/v1/volumes');
  const cases: Array<{ body?: unknown; raw?: string; status: number; code: string; why: string }> = [
    { body: { name: 'x', sizeBytes: 12345 }, status: 400, code: 'TM_ERR_INVALID_ARGUMENT', why: 'size not a multiple of 4096' },
    { body: { name: 'x', sizeBytes: '1048576' }, status: 400, code: 'TM_ERR_INVALID_ARGUMENT', why: 'size as a string' },
    { body: { name: 'x', sizeBytes: 0 }, status: 400, code: 'TM_ERR_INVALID_ARGUMENT', why: 'zero size' },
    { body: { name: 'x', sizeBytes: MiB, trackBytes: 3 * 4096 }, status: 400, code: 'TM_ERR_INVALID_ARGUMENT', why: 'track not a power of two' },
    { body: { name: 'bad/name', sizeBytes: MiB }, status: 400, code: 'TM_ERR_INVALID_ARGUMENT', why: 'slash in name' },
    { body: { name: '-x', sizeBytes: MiB }, status: 400, code: 'TM_ERR_INVALID_ARGUMENT', why: 'leading dash' },
    { body: { name: 'x', sizeBytes: MiB, colour: 'red' }, status: 400, code: 'TM_ERR_INVALID_ARGUMENT', why: 'unknown field' },
    { body: { sizeBytes: MiB }, status: 400, code: 'TM_ERR_INVALID_ARGUMENT', why: 'no name' },
    { raw: '{"name":', status: 400, code: 'TM_ERR_INVALID_ARGUMENT', why: 'broken JSON' },
    { raw: `{"name":"x","sizeBytes":1048576,"pad":"${'a'.repeat(100_000)}"}`, status: 422, code: 'TM_ERR_LIMIT_EXCEEDED', why: 'oversized body' },
    { body: { name: 'keep', sizeBytes: MiB }, status: 409, code: 'TM_ERR_ALREADY_EXISTS', why: 'duplicate' },
  ];
  for (const c of cases) {
    const response = await api<ErrorBody>(daemon, 'POST', '/v1/volumes', c.body, c.raw);
    assert.equal(response.status, c.status, c.why);
    assert.equal(response.body.error.code, c.code, c.why);
    assert.ok(response.body.error.message.length > 0, c.why);
  }
  const unknown = await api<ErrorBody>(daemon, 'GET', '/v1/volumes/nope');
  assert.equal(unknown.status, 404);
  assert.equal(unknown.body.error.code, 'TM_ERR_NOT_FOUND');
  assert.equal((await api<ErrorBody>(daemon, 'DELETE', '/v1/volumes/nope')).body.error.code, 'TM_ERR_NOT_FOUND');
  const badState = await api<ErrorBody>(daemon, 'PUT', '/v1/volumes/keep/state', { state: 'sleeping' });
  assert.equal(badState.body.error.code, 'TM_ERR_INVALID_ARGUMENT');
  const badQuery = await api<ErrorBody>(daemon, 'GET', '/v1/volumes/keep/changes?maxRuns=0');
  assert.equal(badQuery.body.error.code, 'TM_ERR_INVALID_ARGUMENT');
  const noRoute = await api<ErrorBody>(daemon, 'GET', '/v2/whatever');
  assert.equal(noRoute.status, 404);
  assert.equal(noRoute.body.error.code, 'TM_ERR_NOT_FOUND');
  assert.deepEqual(await api(daemon, 'GET', '/v1/volumes'), before);
});

test('states are enforced at the NBD boundary', { timeout: 60_000 }, async () => {
  await api(daemon, 'POST', '/v1/volumes', { name: 'st', sizeBytes: MiB });
  await mustRun('qemu-io', ['-f', 'raw', '-c', 'write -P 0x11 0 4k', daemon.uri('st')]);
  const wd = await api<Volume>(daemon, 'PUT', '/v1/volumes/st/state', { state: 'write-disabled' });
  assert.equal(wd.body.state, 'write-disabled');
  const write = await runCommand('qemu-io', ['-f', 'raw', '-c', 'write -P 0x22 0 4k', daemon.uri('st')]);
  assert.notEqual(write.code, 0);
  assert.match(write.stdout + write.stderr, /Permission denied|Operation not permitted|Read-only/i);
  await mustRun('qemu-io', ['-f', 'raw', '-r', '-c', 'read -P 0x11 0 4k', daemon.uri('st')]);
  await api(daemon, 'PUT', '/v1/volumes/st/state', { state: 'ready' });
  await mustRun('qemu-io', ['-f', 'raw', '-c', 'write -P 0x33 0 4k', '-c', 'read -P 0x33 0 4k', daemon.uri('st')]);
});

test('delete is refused while an NBD client has the volume open', { timeout: 30_000 }, async () => {
  await api(daemon, 'POST', '/v1/volumes', { name: 'held', sizeBytes: MiB });
  const client = await RawNbdClient.connect(daemon.nbdPort);
  try {
    await client.greeting();
    await client.go('held');
    assert.equal((await api<Volume>(daemon, 'GET', '/v1/volumes/held')).body.exports, 1);
    const refused = await api<ErrorBody>(daemon, 'DELETE', '/v1/volumes/held');
    assert.equal(refused.status, 409);
    assert.equal(refused.body.error.code, 'TM_ERR_VOLUME_BUSY');
    assert.ok((await names()).includes('held'));
  } finally {
    client.close();
  }
  await waitFor('the export to be released', async () =>
    (await api<Volume>(daemon, 'GET', '/v1/volumes/held')).body.exports === 0);
  assert.equal((await api(daemon, 'DELETE', '/v1/volumes/held')).status, 200);
});

interface Changes { volume: string; changedTracks: number; runs: Array<{ start: number; end: number }>; nextTrack: number | null }

test('changes report written tracks as runs, page, and reset atomically', { timeout: 60_000 }, async () => {
  await api(daemon, 'POST', '/v1/volumes', { name: 'chg', sizeBytes: 4 * MiB });
  const empty = await api<Changes>(daemon, 'GET', '/v1/volumes/chg/changes');
  assert.deepEqual(empty.body.runs, []);
  // Tracks are 64 KiB: 128 KiB at 0 is tracks 0-1; 4 KiB at 1 MiB is track 16.
  await mustRun('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 0 128k', '-c', 'write -P 0x5b 1M 4k', daemon.uri('chg')]);
  const all = await api<Changes>(daemon, 'GET', '/v1/volumes/chg/changes');
  assert.equal(all.body.volume, 'chg');
  assert.equal(all.body.changedTracks, 3);
  assert.deepEqual(all.body.runs, [{ start: 0, end: 2 }, { start: 16, end: 17 }]);
  assert.equal(all.body.nextTrack, null);
  const page = await api<Changes>(daemon, 'GET', '/v1/volumes/chg/changes?maxRuns=1');
  assert.deepEqual(page.body.runs, [{ start: 0, end: 2 }]);
  assert.equal(page.body.nextTrack, 16);
  const rest = await api<Changes>(daemon, 'GET', '/v1/volumes/chg/changes?fromTrack=16');
  assert.deepEqual(rest.body.runs, [{ start: 16, end: 17 }]);
  const reset = await api<Changes>(daemon, 'POST', '/v1/volumes/chg/changes/reset');
  assert.equal(reset.status, 200);
  assert.deepEqual(reset.body.runs, all.body.runs, 'the reset returns what it cleared');
  const after = await api<Changes>(daemon, 'GET', '/v1/volumes/chg/changes');
  assert.equal(after.body.changedTracks, 0);
  assert.equal((await api<Volume>(daemon, 'GET', '/v1/volumes/chg')).body.changedTracks, 0);
});

test('GET /v1/array reports the bound addresses and the volume count', { timeout: 10_000 }, async () => {
  const info = await api<{ name: string; version: string; api: { port: number }; nbd: { tcp: { port: number }; socket: string }; volumeCount: number }>(
    daemon, 'GET', '/v1/array');
  assert.equal(info.status, 200);
  assert.equal(info.body.api.port, Number(new URL(daemon.apiUrl).port));
  assert.equal(info.body.nbd.tcp.port, daemon.nbdPort);
  assert.equal(info.body.nbd.socket, daemon.socketPath);
  assert.equal(info.body.volumeCount, (await names()).length);
  assert.match(info.body.version, /^\d+\.\d+\.\d+/);
});
