// The import's NBD client (src/adapters/nbd-client) against a real NBD server (tidemark's own, and
// nbdkit when installed) and against servers that misbehave: it must refuse what it cannot trust.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server, type Socket } from 'node:net';
import { spawn } from 'node:child_process';
import { NbdClient } from '../../src/adapters/nbd-client/nbd-client.js';
import { ErrorCode, isTidemarkError } from '../../src/core/errors.js';
import { parseNbdUrl } from '../../src/core/nbd/nbd-url.js';
import { startTestArray, type TestArray } from '../helpers/in-process-array.js';
import { waitFor } from '../helpers/daemon.js';
import { freePort } from '../helpers/free-port.js';
import { missingTools, requirement } from '../helpers/requirement.js';

const MiB = 1024 * 1024;
let array: TestArray;

before(async () => {
  array = await startTestArray();
  await array.service.createVolume('src', 8 * MiB);
});
after(async () => array.close());

test('reads, writes, zeroes and flushes a real export; sizes and ranges are checked', async () => {
  const client = await NbdClient.connect(array.uri('src'));
  try {
    assert.equal(client.sizeBytes, 8 * MiB);
    assert.equal(client.writable, true);
    const data = new Uint8Array(6 * MiB).map((_, i) => (i * 7) & 0xff);
    await client.write(MiB, data); // split into several requests
    assert.deepEqual(await client.read(MiB, data.length), data);
    await client.writeZeroes(MiB + 4096, 8192);
    const back = await client.read(MiB, 16384);
    assert.deepEqual(back.subarray(4096, 12288), new Uint8Array(8192));
    assert.equal(back[0], data[0]);
    await client.flush();
    assert.deepEqual(await array.service.volume('src').read(MiB + 12288, 4096), data.subarray(12288, 16384));
    await assert.rejects(client.read(8 * MiB - 4096, 8192), (e: unknown) => isTidemarkError(e, ErrorCode.OutOfRange));
  } finally {
    client.close();
  }
  assert.equal(client.alive, false);
  await assert.rejects(client.read(0, 512), (e: unknown) => isTidemarkError(e, ErrorCode.Unavailable));
});

test('an export the server does not have is refused with TM_ERR_NOT_FOUND; a closed port with TM_ERR_UNAVAILABLE', async () => {
  await assert.rejects(NbdClient.connect(array.uri('nothing-here')), (e: unknown) => isTidemarkError(e, ErrorCode.NotFound));
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise((resolve) => server.close(resolve));
  await assert.rejects(NbdClient.connect(`nbd://127.0.0.1:${port}/x`), (e: unknown) => isTidemarkError(e, ErrorCode.Unavailable));
});

test('URLs are validated', () => {
  assert.deepEqual(parseNbdUrl('nbd://host.example/disk%201'), { host: 'host.example', port: 10809, exportName: 'disk 1' });
  assert.deepEqual(parseNbdUrl('nbd://[::1]:10900/'), { host: '::1', port: 10900, exportName: '' });
  for (const bad of ['http://x/y', 'nbd://', 'nbd://h:99999/x', 'nbd://h/%zz']) {
    assert.throws(() => parseNbdUrl(bad), (e: unknown) => isTidemarkError(e, ErrorCode.InvalidArgument), bad);
  }
});

/** A server that completes the handshake for an 8 MiB export, then answers each request with `reply`. */
async function fakeServer(reply: (socket: Socket, cookie: Buffer) => void, greeting?: Buffer): Promise<{ server: Server; url: string }> {
  const server = createServer((socket) => {
    const hello = Buffer.alloc(18);
    hello.write('NBDMAGICIHAVEOPT', 0, 'latin1');
    hello.writeUInt16BE(3, 16);
    socket.write(greeting ?? hello);
    let buffered = Buffer.alloc(0);
    let negotiated = false;
    socket.on('data', (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      if (!negotiated) {
        if (buffered.length < 4 + 16) return;
        const optLength = buffered.readUInt32BE(4 + 12);
        if (buffered.length < 4 + 16 + optLength) return;
        buffered = buffered.subarray(4 + 16 + optLength);
        negotiated = true;
        const info = Buffer.alloc(20 + 12);
        info.writeBigUInt64BE(0x0003e889045565a9n, 0);
        info.writeUInt32BE(7, 8);
        info.writeUInt32BE(3, 12);
        info.writeUInt32BE(12, 16);
        info.writeUInt16BE(0, 20);
        info.writeBigUInt64BE(BigInt(8 * MiB), 22);
        info.writeUInt16BE(1 | 4, 30);
        const ack = Buffer.alloc(20);
        ack.writeBigUInt64BE(0x0003e889045565a9n, 0);
        ack.writeUInt32BE(7, 8);
        ack.writeUInt32BE(1, 12);
        socket.write(Buffer.concat([info, ack]));
      }
      while (buffered.length >= 28) {
        const cookie = Buffer.from(buffered.subarray(8, 16));
        buffered = buffered.subarray(28);
        reply(socket, cookie);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, url: `nbd://127.0.0.1:${(server.address() as { port: number }).port}/x` };
}

test('replies it cannot trust end the connection: bad magic, an unknown cookie, a server error', async () => {
  const cases: Array<[string, (socket: Socket, cookie: Buffer) => void, ErrorCode]> = [
    ['bad reply magic', (s, c) => { const r = Buffer.alloc(16); r.writeUInt32BE(0xdeadbeef, 0); c.copy(r, 8); s.write(r); }, ErrorCode.Unavailable],
    ['unknown cookie', (s) => { const r = Buffer.alloc(16 + 512); r.writeUInt32BE(0x67446698, 0); r.writeBigUInt64BE(999n, 8); s.write(r); }, ErrorCode.Unavailable],
    ['server EIO', (s, c) => { const r = Buffer.alloc(16); r.writeUInt32BE(0x67446698, 0); r.writeUInt32BE(5, 4); c.copy(r, 8); s.write(r); }, ErrorCode.Io],
  ];
  for (const [what, reply, code] of cases) {
    const { server, url } = await fakeServer(reply);
    const client = await NbdClient.connect(url);
    try {
      await assert.rejects(client.read(0, 512), (e: unknown) => isTidemarkError(e, code), what);
      if (code === ErrorCode.Unavailable) assert.equal(client.alive, false, what);
    } finally {
      client.close();
      await new Promise((resolve) => server.close(resolve));
    }
  }
  const wrongGreeting = Buffer.alloc(18);
  wrongGreeting.write('NBDMAGIC', 0, 'latin1');
  wrongGreeting.writeBigUInt64BE(0x00420281861253n, 8); // oldstyle
  const { server, url } = await fakeServer(() => undefined, wrongGreeting);
  await assert.rejects(NbdClient.connect(url), (e: unknown) => isTidemarkError(e, ErrorCode.Unavailable) && /newstyle/.test((e as Error).message));
  await new Promise((resolve) => server.close(resolve));
});

test('works against nbdkit (a server other than ours)', { skip: requirement(missingTools(['nbdkit'])) }, async () => {
  // Not a random port: one in the ephemeral range can be held by another test's connection.
  const port = await freePort();
  const child = spawn('nbdkit', ['-f', '-i', '127.0.0.1', '-p', String(port), 'memory', '4M'], { stdio: 'ignore' });
  try {
    let client: NbdClient | undefined;
    await waitFor('nbdkit', async () => {
      client = await NbdClient.connect(`nbd://127.0.0.1:${port}/`).catch(() => undefined);
      return client !== undefined;
    });
    assert.equal(client!.sizeBytes, 4 * MiB);
    await client!.write(4096, new Uint8Array(4096).fill(9));
    assert.deepEqual(await client!.read(4096, 4096), new Uint8Array(4096).fill(9));
    await client!.writeZeroes(4096, 512);
    assert.equal((await client!.read(4096, 1024))[511], 0);
    client!.close();
  } finally {
    child.kill('SIGKILL');
  }
});
