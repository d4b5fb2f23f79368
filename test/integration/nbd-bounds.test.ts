// Bounded NBD resources on real daemons: a single 50 MB WRITE (and a 50 MB READ) from a client that
// did not negotiate block sizes is served and reads back; clients that stop reading cannot make the
// array hold more reply bytes than its cap (the daemon's own gauge, and RSS as a cross-check), new
// connections are refused with the reason meanwhile, and everything recovers once they read;
// --nbd-idle-timeout closes silent connections and frees what they held.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DaemonFixture, tidemarkBin, type DaemonProcess } from '../helpers/daemon.js';
import { mustRun, runCommand } from '../helpers/in-process-array.js';
import { RawNbdClient } from '../helpers/raw-nbd-client.js';
import { missingTools, requirement } from '../helpers/requirement.js';

const skip = requirement(missingTools(['qemu-io', 'nbdcopy']));
const MiB = 1024 * 1024;
const CAP = 8 * MiB;
let fixture: DaemonFixture;
let daemon: DaemonProcess;

before(async () => {
  if (skip) return;
  fixture = await DaemonFixture.create();
  daemon = await fixture.start(undefined, ['--nbd-reply-buffer', '8MiB']);
  await mustRun(tidemarkBin, [...daemon.cliArgs, 'volume', 'create', 'vol', '--size', '128MiB']);
});
after(async () => {
  await fixture?.cleanup();
});

async function metric(d: DaemonProcess, name: string): Promise<number> {
  const response = await fetch(`${d.apiUrl}/metrics`);
  const text = await response.text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  assert.ok(line, `metric ${name} missing`);
  return Number(line.split(' ')[1]);
}

async function rssBytes(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) * 1024;
}

async function transmitting(d: DaemonProcess): Promise<RawNbdClient> {
  const client = await RawNbdClient.connect(d.nbdPort);
  await client.greeting();
  await client.go('vol'); // GO without NBD_INFO_BLOCK_SIZE: no block-size promise from this client
  return client;
}

test('a single 50 MB WRITE from a client that did not negotiate block sizes is served and reads back', { skip, timeout: 120_000 }, async () => {
  const length = 50 * 1000 * 1000;
  const offset = 3 * MiB + 512;
  const data = randomBytes(length);
  const client = await transmitting(daemon);
  client.sendRequest(1, 7n, BigInt(offset), length, 1 /* FUA */, data);
  const written = await client.simpleReply(0);
  assert.deepEqual([written.error, written.cookie], [0, 7n]);
  // One READ of all 50 MB, streamed back as one simple reply.
  client.sendRequest(0, 8n, BigInt(offset), length);
  const read = await client.simpleReply(length);
  assert.deepEqual([read.error, read.cookie], [0, 8n]);
  assert.ok(read.data.equals(data), 'the 50 MB READ returns what the WRITE stored');
  // The connection is still in step: a small request after them.
  client.sendRequest(0, 9n, 0n, 4096);
  assert.equal((await client.simpleReply(4096)).error, 0);
  client.close();
  // And a real client sees the same bytes.
  const image = join(fixture.dir, 'vol.img');
  await mustRun('nbdcopy', [daemon.uri('vol'), image]);
  const copied = await readFile(image);
  assert.ok(copied.subarray(offset, offset + length).equals(data), 'nbdcopy reads the 50 MB write back');
  assert.ok(copied.subarray(0, offset).every((b) => b === 0), 'nothing before it was touched');
});

test('clients that stop reading hold at most the reply cap; new connections are refused with the reason; all recovers when they read', { skip, timeout: 120_000 }, async () => {
  const rssBefore = await rssBytes(daemon.pid);
  const clients: RawNbdClient[] = [];
  const perClient = 64;
  for (let c = 0; c < 8; c++) clients.push(await transmitting(daemon));
  for (const [c, client] of clients.entries()) {
    client.socket.pause(); // never read: replies back up into the kernel buffers, then into the array
    const headers = Buffer.alloc(28 * perClient);
    for (let i = 0; i < perClient; i++) {
      headers.writeUInt32BE(0x25609513, i * 28);
      headers.writeBigUInt64BE(BigInt(c * 1000 + i), i * 28 + 8);
      headers.writeBigUInt64BE(BigInt(i * MiB), i * 28 + 16);
      headers.writeUInt32BE(MiB, i * 28 + 24);
    }
    client.write(headers);
  }
  // 8 × 64 MiB asked for. Wait until the array holds its cap: then every session has stopped.
  const deadline = Date.now() + 20_000;
  while (await metric(daemon, 'tidemark_nbd_reply_buffered_bytes') < CAP) {
    assert.ok(Date.now() < deadline, 'the reply buffers never reached the cap');
    await new Promise((r) => setTimeout(r, 100));
  }
  await new Promise((r) => setTimeout(r, 1000)); // let anything that would overshoot do so
  const buffered = await metric(daemon, 'tidemark_nbd_reply_buffered_bytes');
  const peak = await metric(daemon, 'tidemark_nbd_reply_buffered_peak_bytes');
  const rssHeld = await rssBytes(daemon.pid);
  // At most one request beyond the cap: the one a session took while the budget was just below it.
  assert.ok(peak <= CAP + MiB + 64, `peak ${peak} bytes buffered, cap ${CAP}`);
  assert.ok(buffered >= CAP && buffered <= peak);
  assert.ok(rssHeld - rssBefore < 64 * MiB, `RSS grew ${Math.round((rssHeld - rssBefore) / MiB)} MiB for 512 MiB of unread replies`);
  process.stderr.write(`# reply buffers held ${buffered} (peak ${peak}, cap ${CAP}); RSS ${Math.round(rssBefore / MiB)} → ${Math.round(rssHeld / MiB)} MiB\n`);

  // A new client hears why it is turned away.
  const refused = await runCommand('qemu-io', ['-f', 'raw', '-c', 'read 0 4k', daemon.uri('vol')], 60_000);
  assert.notEqual(refused.code, 0);
  assert.match(refused.stderr, /server busy: NBD reply buffers are at their cap/, refused.stderr);
  assert.ok(await metric(daemon, 'tidemark_nbd_connections_refused_total') >= 1);
  assert.match(daemon.output(), /nbd connection refused: reply buffers at their cap/);

  // They read: every reply arrives intact, the budget empties, new clients are served.
  await Promise.all(clients.map(async (client, c) => {
    client.socket.resume();
    const cookies = new Set<bigint>();
    for (let i = 0; i < perClient; i++) {
      const reply = await client.simpleReply(MiB);
      assert.equal(reply.error, 0);
      cookies.add(reply.cookie);
    }
    assert.equal(cookies.size, perClient);
    assert.ok([...cookies].every((k) => k >= BigInt(c * 1000) && k < BigInt(c * 1000 + perClient)));
    client.close();
  }));
  assert.equal(await metric(daemon, 'tidemark_nbd_reply_buffered_bytes'), 0);
  const served = await runCommand('qemu-io', ['-f', 'raw', '-c', 'read 0 4k', daemon.uri('vol')], 60_000);
  assert.equal(served.code, 0, served.stderr);
});

test('--nbd-idle-timeout closes a silent connection (also one whose replies sit unread) and keeps a busy one', { skip, timeout: 60_000 }, async () => {
  const idle = await fixture.start(undefined, ['--nbd-idle-timeout', '1']);
  await mustRun(tidemarkBin, [...idle.cliArgs, 'volume', 'create', 'vol', '--size', '64MiB']);
  const silent = await transmitting(idle);
  const stuck = await transmitting(idle);
  stuck.socket.pause();
  for (let i = 0; i < 64; i++) stuck.sendRequest(0, BigInt(i), BigInt(i * MiB), MiB);
  const busy = await transmitting(idle);
  const started = Date.now();
  let cookie = 1n;
  while (Date.now() - started < 2500) {
    busy.sendRequest(0, cookie, 0n, 4096);
    assert.equal((await busy.simpleReply(4096)).error, 0);
    cookie++;
    await new Promise((r) => setTimeout(r, 300));
  }
  assert.equal(silent.closed, true, 'silent for over 1 s: closed');
  // A paused socket notices the close only when it reads again: it gets what was sent, then the end.
  stuck.socket.resume();
  assert.equal(await stuck.closedWithin(3000), true, 'not reading its replies and sending nothing: closed');
  assert.equal(busy.closed, false, 'a client that keeps sending stays');
  assert.equal(await metric(idle, 'tidemark_nbd_reply_buffered_bytes'), 0, 'what the stuck client held is freed');
  assert.match(idle.output(), /nbd connection idle, closing/);
  busy.close();
  await idle.stop();
});
