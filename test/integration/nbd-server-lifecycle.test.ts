// The NBD server as a process component: connection accounting, handshake timeout, bounded
// buffering against a client that never reads, shutdown with requests in flight, socket files.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { startTestArray, type TestArray } from '../helpers/in-process-array.js';
import { RawNbdClient } from '../helpers/raw-nbd-client.js';
import { startNbdServer, type NbdServer } from '../../src/adapters/nbd-server/nbd-server.js';

const MiB = 1024 * 1024;
const quiet = { info() {}, warn() {}, debug() {}, error() {} };
let array: TestArray;

before(async () => {
  array = await startTestArray();
  await array.service.createVolume('vol', 64 * MiB);
});
after(async () => {
  await array.close();
});

/** A second NBD server over the same array, with its own options. */
async function extraServer(options: { handshakeTimeoutMs?: number; socketPath?: string } = {}): Promise<{ server: NbdServer; gauge: () => number }> {
  let connections = 0;
  const server = await startNbdServer({
    catalog: array.service, logger: quiet, tcp: { host: '127.0.0.1', port: 0 }, ...options,
    onConnection: (delta) => { connections += delta; },
  });
  return { server, gauge: () => connections };
}

async function waitFor(what: string, condition: () => boolean, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('a client idle in the handshake is closed after the timeout; one in transmission is not', async () => {
  const { server, gauge } = await extraServer({ handshakeTimeoutMs: 300 });
  try {
    const idle = await RawNbdClient.connect(server.tcpAddress!.port);
    const working = await RawNbdClient.connect(server.tcpAddress!.port);
    await working.greeting();
    await working.go('vol');
    await waitFor('two connections counted', () => gauge() === 2);
    assert.equal(await idle.closedWithin(2000), true);
    await new Promise((r) => setTimeout(r, 400));
    working.sendRequest(0, 1n, 0n, 512);
    assert.equal((await working.simpleReply(512)).error, 0);
    working.close();
    await waitFor('connections counted down', () => gauge() === 0);
  } finally {
    await server.close();
  }
});

test('a client that pipelines reads but never reads replies is throttled: memory stays bounded', async () => {
  const { server } = await extraServer();
  try {
    const greedy = await RawNbdClient.connect(server.tcpAddress!.port);
    await greedy.greeting();
    await greedy.go('vol');
    greedy.socket.pause(); // stop draining replies: they must back up into the server
    const baseline = process.memoryUsage().arrayBuffers;
    const requests = 20_000; // 1.25 GiB of replies if the server buffered them all
    const header = Buffer.alloc(28 * requests);
    for (let i = 0; i < requests; i++) {
      header.writeUInt32BE(0x25609513, i * 28);
      header.writeBigUInt64BE(BigInt(i), i * 28 + 8);
      header.writeBigUInt64BE(BigInt((i % 1000) * 65536), i * 28 + 16);
      header.writeUInt32BE(65536, i * 28 + 24);
    }
    greedy.write(header);
    let peak = 0;
    for (let i = 0; i < 20; i++) {
      await new Promise((r) => setTimeout(r, 50));
      peak = Math.max(peak, process.memoryUsage().arrayBuffers - baseline);
    }
    assert.ok(peak < 256 * MiB, `server buffered ${Math.round(peak / MiB)} MiB for a client that does not read`);
    // The replies the server did produce are intact.
    greedy.socket.resume();
    for (let i = 0; i < 20; i++) {
      const reply = await greedy.simpleReply(65536);
      assert.equal(reply.error, 0);
      assert.ok(reply.cookie < BigInt(requests));
    }
    // Others are served meanwhile.
    const other = await RawNbdClient.connect(server.tcpAddress!.port);
    await other.greeting();
    await other.go('vol');
    other.sendRequest(0, 7n, 0n, 4096);
    assert.equal((await other.simpleReply(4096)).error, 0);
    other.close();
    greedy.close();
  } finally {
    await server.close();
  }
});

test('close(): in-flight requests are answered, every connection is closed, the listener stops, the export is released', async () => {
  const socketPath = join(array.dir, 'lifecycle.sock');
  const { server, gauge } = await extraServer({ socketPath });
  const writer = await RawNbdClient.connect(server.tcpAddress!.port);
  await writer.greeting();
  await writer.go('vol');
  const negotiating = await RawNbdClient.connect(server.tcpAddress!.port);
  await negotiating.greeting();
  await waitFor('two connections', () => gauge() === 2);
  for (let i = 0; i < 32; i++) writer.sendRequest(1, BigInt(i + 1), BigInt(i * MiB), MiB, 1, Buffer.alloc(MiB, i));
  const replies: Array<Promise<{ error: number }>> = [];
  for (let i = 0; i < 32; i++) replies.push(writer.simpleReply());
  assert.equal((await replies[0]!).error, 0, 'requests are flowing when shutdown begins');
  const started = Date.now();
  await server.close();
  assert.ok(Date.now() - started < 6000, 'shutdown wait is bounded');
  const errors = await Promise.allSettled(replies);
  for (const r of errors) if (r.status === 'fulfilled') assert.ok([0, 108].includes(r.value.error), `reply error ${r.value.error}`);
  assert.equal(await writer.closedWithin(), true);
  assert.equal(await negotiating.closedWithin(), true);
  await waitFor('connections counted down', () => gauge() === 0);
  await waitFor('export released', () => array.service.summary('vol').exports === 0);
  const refused = await new Promise<string>((resolve) => {
    const probe = connect(server.tcpAddress!.port, '127.0.0.1');
    probe.once('connect', () => { probe.destroy(); resolve('connected'); });
    probe.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
  });
  assert.equal(refused, 'ECONNREFUSED');
  assert.equal(existsSync(socketPath), false, 'the socket file is removed');
  await server.close(); // idempotent
});

test('a Unix socket path another server is listening on is not taken over', async () => {
  const socketPath = join(array.dir, 'shared.sock');
  const first = await extraServer({ socketPath });
  try {
    await assert.rejects(extraServer({ socketPath }), /EADDRINUSE/);
    const client = await new Promise<RawNbdClient>((resolve, reject) => {
      const socket = connect(socketPath);
      socket.once('connect', () => { socket.destroy(); resolve(RawNbdClient.connect(first.server.tcpAddress!.port)); });
      socket.once('error', reject);
    });
    await client.greeting();
    await client.go('vol');
    client.close();
  } finally {
    await first.server.close();
  }
});
