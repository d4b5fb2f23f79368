// Bad input at the NBD boundary: every malformed or out-of-range request gets the spec's errno or
// a closed connection, never a crash, and other clients keep being served.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mustRun, startTestArray, type TestArray } from '../helpers/in-process-array.js';
import { RawNbdClient } from '../helpers/raw-nbd-client.js';

const MiB = 1024 * 1024;
const SIZE = 8 * MiB;
let array: TestArray;
let port: number;

before(async () => {
  array = await startTestArray();
  await array.service.createVolume('vol', SIZE);
  port = array.nbd.tcpAddress!.port;
});
after(async () => {
  await array.close();
});

async function transmitting(name = 'vol'): Promise<RawNbdClient> {
  const client = await RawNbdClient.connect(port);
  await client.greeting();
  await client.go(name);
  return client;
}

/** The array still serves a real client. */
async function stillServing(): Promise<void> {
  await mustRun('qemu-io', ['-f', 'raw', '-c', 'write -P 0x3c 0 4k', '-c', 'read -P 0x3c 0 4k', array.uri('vol')]);
}

test('unknown client flags close the connection', async () => {
  const client = await RawNbdClient.connect(port);
  await client.greeting(0x80000001);
  assert.equal(await client.closedWithin(), true);
  await stillServing();
});

test('a bad option magic closes the connection', async () => {
  const client = await RawNbdClient.connect(port);
  await client.greeting();
  client.write(Buffer.from('GARBAGE!GARBAGE!GARBAGE!'));
  assert.equal(await client.closedWithin(), true);
  await stillServing();
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

test('unknown commands and bad flags get EINVAL and the connection keeps working', async () => {
  const client = await transmitting();
  client.sendRequest(42, 1n, 0n, 0);
  assert.deepEqual((await client.simpleReply()).error, 22);
  client.sendRequest(0, 2n, 0n, 4096, 0x8000);
  assert.equal((await client.simpleReply()).error, 22);
  client.sendRequest(7, 3n, 0n, 4096); // BLOCK_STATUS without structured replies / context
  assert.equal((await client.simpleReply()).error, 22);
  client.sendRequest(0, 4n, 0n, 4096);
  const ok = await client.simpleReply(4096);
  assert.equal(ok.error, 0);
  assert.equal(ok.cookie, 4n);
  client.close();
});

test('out-of-range reads get EINVAL, writes past the end get ENOSPC with the payload consumed', async () => {
  const client = await transmitting();
  client.sendRequest(0, 1n, BigInt(SIZE - 100), 4096);
  assert.equal((await client.simpleReply()).error, 22);
  client.sendRequest(0, 2n, 0xffff_ffff_ffff_f000n, 8192); // offset + length overflows 64 bits
  assert.equal((await client.simpleReply()).error, 22);
  client.sendRequest(1, 3n, BigInt(SIZE - 100), 4096, 0, Buffer.alloc(4096, 1));
  assert.equal((await client.simpleReply()).error, 28);
  client.sendRequest(1, 4n, 0n, 512, 0, Buffer.alloc(512, 0x5a));
  assert.equal((await client.simpleReply()).error, 0, 'the stream stayed framed');
  client.sendRequest(4, 5n, BigInt(SIZE), 4096); // TRIM past the end
  assert.equal((await client.simpleReply()).error, 22);
  client.sendRequest(6, 6n, BigInt(SIZE), 4096); // WRITE_ZEROES past the end
  assert.equal((await client.simpleReply()).error, 28);
  client.sendRequest(0, 7n, 0n, 64 * MiB); // READ over the advertised maximum
  assert.equal((await client.simpleReply()).error, 22);
  client.close();
  await stillServing();
});

test('an oversized write closes the connection', async () => {
  const client = await transmitting();
  client.sendRequest(1, 1n, 0n, 64 * MiB);
  assert.equal(await client.closedWithin(), true);
  await stillServing();
});

test('a client that vanishes in the middle of a WRITE payload does not disturb others', async () => {
  const client = await transmitting();
  client.sendRequest(1, 1n, 0n, MiB);
  client.write(Buffer.alloc(100_000, 7));
  client.close();
  await stillServing();
});

test('writes to a volume made write-disabled after connect get EPERM; reads still work', async () => {
  const client = await transmitting();
  await array.service.setVolumeState('vol', 'write-disabled');
  try {
    client.sendRequest(1, 1n, 0n, 4096, 0, Buffer.alloc(4096, 9));
    assert.equal((await client.simpleReply()).error, 1);
    client.sendRequest(0, 2n, 0n, 4096);
    assert.equal((await client.simpleReply(4096)).error, 0);
    client.close();
    const readOnly = await transmitting();
    readOnly.sendRequest(1, 3n, 0n, 4096, 0, Buffer.alloc(4096, 9));
    assert.equal((await readOnly.simpleReply()).error, 1, 'read-only export refuses writes with EPERM');
    readOnly.close();
    await array.service.setVolumeState('vol', 'not-ready');
    const gone = await transmitting().catch((e: Error) => e);
    assert.ok(gone instanceof Error && /0x80000002/.test(gone.message), 'GO refused by policy while not ready');
  } finally {
    await array.service.setVolumeState('vol', 'ready');
  }
});

test('many pipelined requests all get replies with their own cookies', async () => {
  const client = await transmitting();
  const count = 300;
  for (let i = 0; i < count; i++) {
    client.sendRequest(1, BigInt(1000 + i), BigInt((i % 64) * 65536), 4096, i % 7 === 0 ? 1 : 0, Buffer.alloc(4096, i & 0xff));
  }
  const cookies = new Set<bigint>();
  for (let i = 0; i < count; i++) {
    const reply = await client.simpleReply();
    assert.equal(reply.error, 0);
    cookies.add(reply.cookie);
  }
  assert.equal(cookies.size, count);
  client.sendRequest(3, 1n, 0n, 0); // FLUSH
  assert.equal((await client.simpleReply()).error, 0);
  client.sendRequest(2, 2n, 0n, 0); // DISC: server closes after replies are out
  assert.equal(await client.closedWithin(), true);
});
