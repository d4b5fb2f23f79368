// Bad input at the NBD boundary: every malformed or out-of-range request gets the spec's errno or
// a closed connection, never a crash, and a bystander connected throughout keeps being served.
import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mustRun, startTestArray, type TestArray } from '../helpers/in-process-array.js';
import { RawNbdClient } from '../helpers/raw-nbd-client.js';

const MiB = 1024 * 1024;
const SIZE = 8 * MiB;
const EPERM = 1;
const EINVAL = 22;
const ENOSPC = 28;
let array: TestArray;
let port: number;
let bystander: RawNbdClient;
let bystanderCookie = 1n;

before(async () => {
  array = await startTestArray();
  await array.service.createVolume('vol', SIZE);
  port = array.nbd.tcpAddress!.port;
  bystander = await transmitting();
});
after(async () => {
  bystander.close();
  await array.close();
});

/** After every case: the long-lived connection still writes and reads back its own data. */
afterEach(async () => {
  const offset = BigInt(SIZE - 4096);
  const pattern = Buffer.alloc(4096, Number(bystanderCookie & 0xffn));
  bystander.sendRequest(1, bystanderCookie, offset, 4096, 0, pattern);
  const written = await bystander.simpleReply();
  assert.deepEqual([written.error, written.cookie], [0, bystanderCookie++]);
  bystander.sendRequest(0, bystanderCookie, offset, 4096);
  const read = await bystander.simpleReply(4096);
  assert.deepEqual([read.error, read.cookie], [0, bystanderCookie++]);
  assert.ok(read.data.equals(pattern), 'bystander reads its own write');
});

async function transmitting(name = 'vol'): Promise<RawNbdClient> {
  const client = await RawNbdClient.connect(port);
  await client.greeting();
  await client.go(name);
  return client;
}

/** Waits until the server has dropped the export count of `vol` back to `count`. */
async function exportsBecome(count: number): Promise<void> {
  const deadline = Date.now() + 3000;
  while (array.service.summary('vol').exports !== count) {
    if (Date.now() > deadline) throw new Error(`exports stayed ${array.service.summary('vol').exports}, expected ${count}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('garbage instead of the client flags closes the connection', async () => {
  const client = await RawNbdClient.connect(port);
  await client.read(18);
  client.write(randomBytes(64).fill(0xff, 0, 1));
  assert.equal(await client.closedWithin(), true);
  const flagged = await RawNbdClient.connect(port);
  await flagged.greeting(0x80000001);
  assert.equal(await flagged.closedWithin(), true);
});

test('a bad option magic closes the connection', async () => {
  const client = await RawNbdClient.connect(port);
  await client.greeting();
  client.write(Buffer.from('GARBAGE!GARBAGE!GARBAGE!'));
  assert.equal(await client.closedWithin(), true);
});

test('an absurd option length closes the connection without buffering it', async () => {
  const client = await RawNbdClient.connect(port);
  await client.greeting();
  client.sendOption(7, Buffer.alloc(0), 0x40000000);
  assert.equal(await client.closedWithin(), true);
});

test('an unknown option gets ERR_UNSUP and the next option still works; unknown export gets ERR_UNKNOWN', async () => {
  const client = await RawNbdClient.connect(port);
  await client.greeting();
  client.sendOption(99, Buffer.from('whatever'));
  const reply = await client.optionReply();
  assert.equal(reply.option, 99);
  assert.equal(reply.type, 0x80000001);
  await assert.rejects(client.go('no-such-volume'), /0x80000006/);
  const { size, flags } = await client.go('vol');
  assert.equal(size, BigInt(SIZE));
  assert.ok(flags & 0x0100, 'multi-conn advertised');
  client.close();
});

test('EXPORT_NAME of an unknown export closes the connection', async () => {
  const client = await RawNbdClient.connect(port);
  await client.greeting();
  client.sendOption(1, Buffer.from('no-such-volume'));
  assert.equal(await client.closedWithin(), true);
});

test('unknown commands and bad flags get EINVAL and the connection keeps working', async () => {
  const client = await transmitting();
  client.sendRequest(42, 1n, 0n, 0);
  assert.equal((await client.simpleReply()).error, EINVAL);
  client.sendRequest(0, 2n, 0n, 4096, 0x8000);
  assert.equal((await client.simpleReply()).error, EINVAL);
  client.sendRequest(7, 3n, 0n, 4096); // BLOCK_STATUS without structured replies / context
  assert.equal((await client.simpleReply()).error, EINVAL);
  client.sendRequest(0, 4n, 0n, 4096, 0x04); // DF without structured replies
  assert.equal((await client.simpleReply()).error, EINVAL);
  client.sendRequest(0, 5n, 0n, 4096);
  const ok = await client.simpleReply(4096);
  assert.equal(ok.error, 0);
  assert.equal(ok.cookie, 5n);
  client.close();
});

test('out-of-range reads get EINVAL, writes past the end get ENOSPC with the payload consumed', async () => {
  const client = await transmitting();
  client.sendRequest(0, 1n, BigInt(SIZE - 100), 4096);
  assert.equal((await client.simpleReply()).error, EINVAL);
  client.sendRequest(0, 2n, 0xffff_ffff_ffff_f000n, 8192); // offset + length overflows 64 bits
  assert.equal((await client.simpleReply()).error, EINVAL);
  client.sendRequest(1, 3n, BigInt(SIZE - 100), 4096, 0, Buffer.alloc(4096, 1));
  assert.equal((await client.simpleReply()).error, ENOSPC);
  client.sendRequest(1, 4n, 0n, 512, 0, Buffer.alloc(512, 0x5a));
  assert.equal((await client.simpleReply()).error, 0, 'the stream stayed framed');
  client.sendRequest(4, 5n, BigInt(SIZE), 4096); // TRIM past the end
  assert.equal((await client.simpleReply()).error, EINVAL);
  client.sendRequest(6, 6n, BigInt(SIZE), 4096); // WRITE_ZEROES past the end
  assert.equal((await client.simpleReply()).error, ENOSPC);
  client.sendRequest(5, 7n, BigInt(SIZE - 1), 2); // CACHE past the end
  assert.equal((await client.simpleReply()).error, EINVAL);
  client.sendRequest(0, 8n, 0n, 64 * MiB); // READ over the advertised maximum
  assert.equal((await client.simpleReply()).error, EINVAL);
  client.close();
});

test('with structured replies, a bad READ gets an ERROR chunk carrying errno and a short message', async () => {
  const client = await RawNbdClient.connect(port);
  await client.greeting();
  client.sendOption(8);
  assert.equal((await client.optionReply()).type, 1);
  await client.go('vol');
  client.sendRequest(0, 0x0102030405060708n, BigInt(SIZE), 512);
  const header = await client.read(20);
  assert.equal(header.readUInt32BE(0), 0x668e33ef);
  assert.equal(header.readUInt16BE(4), 1, 'DONE');
  assert.equal(header.readUInt16BE(6), 0x8001, 'ERROR chunk');
  assert.equal(header.readBigUInt64BE(8), 0x0102030405060708n);
  const payload = await client.read(header.readUInt32BE(16));
  assert.equal(payload.readUInt32BE(0), EINVAL);
  const message = payload.subarray(6, 6 + payload.readUInt16BE(4)).toString();
  assert.match(message, /past the end/);
  client.sendRequest(0, 9n, 0n, 512);
  const ok = await client.read(20 + 8 + 512);
  assert.equal(ok.readUInt16BE(6), 1, 'OFFSET_DATA');
  client.close();
});

test('an oversized write closes the connection', async () => {
  const client = await transmitting();
  client.sendRequest(1, 1n, 0n, 64 * MiB);
  assert.equal(await client.closedWithin(), true);
  await exportsBecome(1);
});

test('a client that vanishes mid-request header or mid-WRITE payload is cleaned up; its export is released', async () => {
  const halfHeader = await transmitting();
  halfHeader.write(Buffer.from([0x25, 0x60, 0x95, 0x13, 0, 0]));
  const halfPayload = await transmitting();
  halfPayload.sendRequest(1, 1n, 0n, MiB);
  halfPayload.write(Buffer.alloc(100_000, 7));
  await exportsBecome(3);
  halfHeader.close();
  halfPayload.close();
  await exportsBecome(1);
  await mustRun('qemu-io', ['-f', 'raw', '-c', 'write -P 0x3c 0 4k', '-c', 'read -P 0x3c 0 4k', array.uri('vol')]);
});

test('a bad request magic in transmission closes the connection', async () => {
  const client = await transmitting();
  client.write(Buffer.alloc(28, 0xee));
  assert.equal(await client.closedWithin(), true);
});

test('writes to a volume made write-disabled after connect get EPERM; reads still work; not-ready refuses GO', async () => {
  const client = await transmitting();
  await array.service.setVolumeState('vol', 'write-disabled');
  try {
    client.sendRequest(1, 1n, 0n, 4096, 0, Buffer.alloc(4096, 9));
    assert.equal((await client.simpleReply()).error, EPERM);
    client.sendRequest(6, 2n, 0n, 4096);
    assert.equal((await client.simpleReply()).error, EPERM);
    client.sendRequest(0, 3n, 0n, 4096);
    assert.equal((await client.simpleReply(4096)).error, 0);
    client.close();
    const readOnly = await transmitting();
    readOnly.sendRequest(1, 3n, 0n, 4096, 0, Buffer.alloc(4096, 9));
    assert.equal((await readOnly.simpleReply()).error, EPERM, 'read-only export refuses writes with EPERM');
    readOnly.sendRequest(4, 4n, 0n, 4096);
    assert.equal((await readOnly.simpleReply()).error, EPERM);
    readOnly.close();
    await array.service.setVolumeState('vol', 'not-ready');
    const gone = await transmitting().catch((e: Error) => e);
    assert.ok(gone instanceof Error && /0x80000002/.test(gone.message) && /not ready/.test(gone.message), 'GO refused by policy');
    const byName = await RawNbdClient.connect(port);
    await byName.greeting();
    byName.sendOption(1, Buffer.from('vol'));
    assert.equal(await byName.closedWithin(), true, 'EXPORT_NAME of a not-ready volume closes');
  } finally {
    await array.service.setVolumeState('vol', 'ready');
  }
});

test('many pipelined requests all get replies with their own cookies; DISC after them closes once they are answered', async () => {
  const client = await transmitting();
  const count = 300;
  for (let i = 0; i < count; i++) {
    client.sendRequest(1, BigInt(1000 + i), BigInt((i % 64) * 65536), 4096, i % 7 === 0 ? 1 : 0, Buffer.alloc(4096, i & 0xff));
  }
  client.sendRequest(3, 1n, 0n, 0); // FLUSH
  client.sendRequest(2, 2n, 0n, 0); // DISC right behind them, then half-close as libnbd does
  client.socket.end();
  const cookies = new Set<bigint>();
  for (let i = 0; i < count + 1; i++) {
    const reply = await client.simpleReply();
    assert.equal(reply.error, 0);
    cookies.add(reply.cookie);
  }
  assert.equal(cookies.size, count + 1);
  assert.equal(await client.closedWithin(), true);
});

test('the default export "" is the only volume: nbdinfo --map works without an export name', async () => {
  const map = await mustRun('nbdinfo', ['--map', `nbd://127.0.0.1:${port}`]);
  assert.match(map, /\bdata\b/);
  const json = JSON.parse(await mustRun('nbdinfo', ['--json', `nbd://127.0.0.1:${port}`])) as { exports: Array<{ 'export-name': string }> };
  assert.equal(json.exports[0]!['export-name'], 'vol', 'INFO_NAME gives the canonical name');
});
