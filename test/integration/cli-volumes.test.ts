// The tidemark CLI as a user runs it: a child process of bin/tidemark talking to a real daemon.
// Checks the JSON every command prints, the exit codes (0 ok, 1 refused, 2 usage), that bad input
// changes nothing, and that human output is an aligned table with IEC sizes.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { DaemonFixture, tidemarkBin, waitFor, type DaemonProcess } from '../helpers/daemon.js';
import { RawNbdClient } from '../helpers/raw-nbd-client.js';
import { mustRun } from '../helpers/in-process-array.js';

const MiB = 1024 * 1024;
const CLI_TIMEOUT_MS = 20_000;
let fixture: DaemonFixture;
let daemon: DaemonProcess;

interface Cli { code: number | null; stdout: string; stderr: string }
interface Volume { name: string; sizeBytes: number; trackBytes: number; trackCount: number; state: string; exports: number; changedTracks: number }
interface ErrorBody { error: { code: string; message: string } }

/** Runs `tidemark ARGS`; the array is chosen by env TIDEMARK_ARRAY unless `env` overrides it. */
function cli(args: string[], env: Record<string, string | undefined> = {}): Promise<Cli> {
  return new Promise((resolve, reject) => {
    const child = spawn(tidemarkBin, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, TIDEMARK_ARRAY: daemon.apiUrl, TIDEMARK_TOKEN_FILE: daemon.tokenFile, ...env },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    const timer = setTimeout(() => child.kill('SIGKILL'), CLI_TIMEOUT_MS);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

async function cliJson<T>(args: string[]): Promise<T> {
  const r = await cli(['--json', ...args]);
  assert.equal(r.code, 0, `tidemark ${args.join(' ')} failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

/** A refused command: exit 1 and the error's stable code as JSON on stderr. */
async function cliError(args: string[]): Promise<string> {
  const r = await cli(['--json', ...args]);
  assert.equal(r.code, 1, `tidemark ${args.join(' ')} should be refused: ${r.stdout}${r.stderr}`);
  assert.equal(r.stdout, '');
  return (JSON.parse(r.stderr) as ErrorBody).error.code;
}

const names = async (): Promise<string[]> =>
  (await cliJson<{ volumes: Volume[] }>(['volume', 'list'])).volumes.map((v) => v.name).sort();

before(async () => {
  fixture = await DaemonFixture.create();
  daemon = await fixture.start();
});
after(async () => {
  await fixture.cleanup();
});

test('volume create, list, show and delete with --json', { timeout: 60_000 }, async () => {
  const created = await cliJson<Volume>(['volume', 'create', 'alpha', '--size', '1GiB']);
  assert.equal(created.sizeBytes, 1024 * MiB);
  assert.equal(created.trackBytes, 64 * 1024);
  assert.equal(created.trackCount, 16384);
  assert.equal(created.state, 'ready');
  const small = await cliJson<Volume>(['volume', 'create', 'beta', '--size', '512MiB', '--track-size', '128KiB']);
  assert.equal(small.sizeBytes, 512 * MiB);
  assert.equal(small.trackBytes, 128 * 1024);
  const plain = await cliJson<Volume>(['volume', 'create', 'gamma', '--size', '65536']);
  assert.equal(plain.sizeBytes, 65536);
  const kib = await cliJson<Volume>(['volume', 'create', 'delta', '--size', '64KiB', '--track-size', '4096']);
  assert.equal(kib.trackCount, 16);

  assert.deepEqual(await names(), ['alpha', 'beta', 'delta', 'gamma']);
  assert.deepEqual(await cliJson<Volume>(['volume', 'show', 'alpha']), created);

  assert.deepEqual(await cliJson(['volume', 'delete', 'gamma']), { name: 'gamma', deleted: true });
  assert.deepEqual(await names(), ['alpha', 'beta', 'delta']);
  assert.equal(await cliError(['volume', 'show', 'gamma']), 'TM_ERR_NOT_FOUND');
});

test('bad sizes, names and states are refused with stable codes and change nothing', { timeout: 60_000 }, async () => {
  await cliJson(['volume', 'create', 'steady', '--size', '1MiB']);
  const before = await cliJson<unknown>(['volume', 'list']);
  const refused: Array<[string[], string]> = [
    [['volume', 'create', 'x', '--size', 'lots'], 'TM_ERR_INVALID_ARGUMENT'],
    [['volume', 'create', 'x', '--size', '1GB'], 'TM_ERR_INVALID_ARGUMENT'],
    [['volume', 'create', 'x', '--size', '-5'], 'TM_ERR_INVALID_ARGUMENT'],
    [['volume', 'create', 'x', '--size', '1.5GiB'], 'TM_ERR_INVALID_ARGUMENT'],
    [['volume', 'create', 'x', '--size', '12345'], 'TM_ERR_INVALID_ARGUMENT'],
    [['volume', 'create', 'x', '--size', '1MiB', '--track-size', '3KiB'], 'TM_ERR_INVALID_ARGUMENT'],
    [['volume', 'create', 'bad/name', '--size', '1MiB'], 'TM_ERR_INVALID_ARGUMENT'],
    [['volume', 'create', 'steady', '--size', '1MiB'], 'TM_ERR_ALREADY_EXISTS'],
    [['volume', 'set-state', 'steady', 'sideways'], 'TM_ERR_INVALID_ARGUMENT'],
    [['volume', 'delete', 'nobody'], 'TM_ERR_NOT_FOUND'],
    [['volume', 'changes', 'nobody'], 'TM_ERR_NOT_FOUND'],
  ];
  for (const [args, code] of refused) assert.equal(await cliError(args), code, args.join(' '));
  assert.deepEqual(await cliJson<unknown>(['volume', 'list']), before);

  // Human form: one line on stderr naming the code.
  const human = await cli(['volume', 'create', 'x', '--size', 'lots']);
  assert.equal(human.code, 1);
  assert.match(human.stderr, /invalid size "lots".*\[TM_ERR_INVALID_ARGUMENT\]/);
});

test('usage errors exit 2 and --help describes every command', { timeout: 60_000 }, async () => {
  for (const args of [['volume', 'create', 'x'], ['volume', 'frobnicate'], ['volume', 'show'], ['--no-such-flag']]) {
    const r = await cli(args);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, /error: /);
  }
  const commands: Array<[string[], RegExp]> = [
    [[], /volume.*array/s],
    [['volume'], /create.*list.*show.*delete.*set-state.*changes/s],
    [['volume', 'create'], /--size <size>.*--track-size <size>/s],
    [['volume', 'list'], /list volumes/],
    [['volume', 'show'], /show one volume/],
    [['volume', 'delete'], /refused while NBD/],
    [['volume', 'set-state'], /ready \| write-disabled \| not-ready/],
    [['volume', 'changes'], /--reset/],
    [['array', 'show'], /describe the array/],
    [['array', 'start'], /--data <dir>.*--api <host:port>.*--nbd <host:port>.*--nbd-socket <path>.*--al-extents <n>/s],
  ];
  for (const [args, expected] of commands) {
    const r = await cli([...args, '--help']);
    assert.equal(r.code, 0, args.join(' '));
    assert.match(r.stdout, expected, args.join(' '));
  }
});

test('an unreachable array is a clear error, and --array overrides TIDEMARK_ARRAY', { timeout: 60_000 }, async () => {
  const down = await cli(['volume', 'list'], { TIDEMARK_ARRAY: 'http://127.0.0.1:1' });
  assert.equal(down.code, 1);
  assert.match(down.stderr, /cannot reach the array at http:\/\/127\.0\.0\.1:1.*\[TM_ERR_UNAVAILABLE\]/);
  const viaFlag = await cli([...daemon.cliArgs, '--json', 'volume', 'list'], { TIDEMARK_ARRAY: 'http://127.0.0.1:1' });
  assert.equal(viaFlag.code, 0, viaFlag.stderr);
  assert.ok(Array.isArray((JSON.parse(viaFlag.stdout) as { volumes: unknown }).volumes));
});

test('human output: aligned tables and IEC sizes', { timeout: 60_000 }, async () => {
  await cliJson(['volume', 'create', 'table-a', '--size', '2GiB']);
  await cliJson(['volume', 'create', 'table-long-name', '--size', '192KiB', '--track-size', '4KiB']);
  const r = await cli(['volume', 'list']);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trimEnd().split('\n');
  assert.match(lines[0]!, /^NAME\s+SIZE\s+TRACK\s+STATE/);
  const a = lines.find((l) => l.startsWith('table-a '))!;
  const long = lines.find((l) => l.startsWith('table-long-name '))!;
  assert.match(a, /2 GiB\s+64 KiB\s+ready/);
  assert.match(long, /192 KiB\s+4 KiB\s+ready/);
  // Columns line up: the SIZE column starts at the same offset on every row.
  const sizeColumn = lines[0]!.indexOf('SIZE');
  assert.equal(a.indexOf('2 GiB'), sizeColumn);
  assert.equal(long.indexOf('192 KiB'), sizeColumn);

  const show = await cli(['volume', 'show', 'table-a']);
  assert.match(show.stdout, /size:\s+2 GiB \(2147483648 bytes\)/);
  const array = await cli(['array', 'show']);
  assert.equal(array.code, 0, array.stderr);
  assert.match(array.stdout, new RegExp(`api:\\s+${daemon.apiUrl.replace('http://', '').replace(/\./g, '\\.')}`));
});

test('array show, set-state and changes with --reset', { timeout: 60_000 }, async () => {
  const info = await cliJson<{ name: string; api: { port: number }; nbd: { tcp: { port: number } | null }; volumeCount: number }>(['array', 'show']);
  assert.equal(info.nbd.tcp?.port, daemon.nbdPort);
  assert.equal(`http://127.0.0.1:${info.api.port}`, daemon.apiUrl);

  await cliJson(['volume', 'create', 'tracked', '--size', '8MiB']);
  assert.equal((await cliJson<Volume>(['volume', 'set-state', 'tracked', 'write-disabled'])).state, 'write-disabled');
  assert.equal((await cliJson<Volume>(['volume', 'show', 'tracked'])).state, 'write-disabled');
  assert.equal((await cliJson<Volume>(['volume', 'set-state', 'tracked', 'ready'])).state, 'ready');

  // 1 MiB at offset 2 MiB: tracks 32..47 of 64 KiB.
  await mustRun('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 2M 1M', '-c', 'flush', daemon.uri('tracked')]);
  const changes = await cliJson<{ changedTracks: number; trackBytes: number; runs: Array<{ start: number; end: number }> }>(
    ['volume', 'changes', 'tracked']);
  assert.equal(changes.changedTracks, 16);
  assert.deepEqual(changes.runs, [{ start: 32, end: 48 }]);
  const human = await cli(['volume', 'changes', 'tracked']);
  assert.match(human.stdout, /16 of 128 tracks \(64 KiB each\) changed/);

  const atReset = await cliJson<{ changedTracks: number }>(['volume', 'changes', 'tracked', '--reset']);
  assert.equal(atReset.changedTracks, 16);
  assert.equal((await cliJson<{ changedTracks: number }>(['volume', 'changes', 'tracked'])).changedTracks, 0);
});

test('a reader that closes the pipe early (| head) ends the command quietly, not with an EPIPE crash', { timeout: 60_000 }, async () => {
  for (let i = 0; i < 40; i++) assert.equal((await cli(['volume', 'create', `pipe-${i}`, '--size', '1MiB'])).code, 0);
  try {
    const result = await new Promise<{ code: number | null; stderr: string }>((resolve, reject) => {
      const child = spawn(tidemarkBin, ['volume', 'list'], {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, TIDEMARK_ARRAY: daemon.apiUrl, TIDEMARK_TOKEN_FILE: daemon.tokenFile },
      });
      // Nobody will read: the command's first write meets a closed pipe.
      child.stdout.destroy();
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
      child.once('error', reject);
      child.once('close', (code) => resolve({ code, stderr }));
    });
    assert.equal(result.stderr, '', 'nothing on stderr (no EPIPE stack)');
    assert.equal(result.code, 0);
  } finally {
    for (let i = 0; i < 40; i++) await cli(['volume', 'delete', `pipe-${i}`]);
  }
});

test('volume delete is refused while an NBD client is connected', { timeout: 60_000 }, async () => {
  await cliJson(['volume', 'create', 'held', '--size', '1MiB']);
  const client = await RawNbdClient.connect(daemon.nbdPort);
  try {
    await client.greeting();
    await client.go('held');
    assert.equal(await cliError(['volume', 'delete', 'held']), 'TM_ERR_VOLUME_BUSY');
    assert.ok((await names()).includes('held'));
  } finally {
    client.close();
  }
  await waitFor('the export to be released', async () => (await cliJson<Volume>(['volume', 'show', 'held'])).exports === 0, 15_000);
  const deleted = await cli(['volume', 'delete', 'held']);
  assert.equal(deleted.code, 0, deleted.stderr);
  assert.equal(deleted.stdout, 'deleted volume held\n');
});
