// The network-namespace harness itself: a TCP echo server in namespace B, clients in namespace A,
// reached over the emulated link by B's address. Checks delay (RTT), rate, partition/heal, that
// spawned processes are really killed, and that destroy() leaves nothing behind.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import type { ChildProcess } from 'node:child_process';
import { NetnsPair } from '../helpers/netns.js';
import { requirement } from '../helpers/requirement.js';

const availability = await NetnsPair.available();
const skip = requirement(availability.available ? false : `network namespaces unavailable: ${availability.reason}`);
if (availability.available && availability.backend !== 'netem') {
  console.log(`# netns harness: using the ${availability.backend} link backend: ${availability.note ?? ''}`);
}
const MiB = 1024 * 1024;
const PORT = 7000;

const ECHO_SERVER = `
const net = require('node:net');
net.createServer((s) => { s.setNoDelay(true); s.pipe(s); s.on('error', () => {}); })
  .listen(${PORT}, process.argv[1], () => console.log('listening'));
`;

// Modes: 'rtt' → {rttMs: median of 20 one-byte round trips};
// 'transfer' → sends N bytes, reads them back, prints {progress} every 100 ms and {doneMs} at the end.
const CLIENT = `
const net = require('node:net');
const [host, mode, bytesArg] = process.argv.slice(1);
const s = net.connect(${PORT}, host, () => {
  s.setNoDelay(true);
  if (mode === 'rtt') {
    const rtts = []; let t0 = 0;
    const ping = () => { t0 = performance.now(); s.write('x'); };
    s.on('data', () => {
      rtts.push(performance.now() - t0);
      if (rtts.length < 20) return ping();
      rtts.sort((a, b) => a - b);
      console.log(JSON.stringify({ rttMs: rtts[10] })); s.destroy();
    });
    ping();
  } else {
    const total = Number(bytesArg); let received = 0; const t0 = performance.now();
    const timer = setInterval(() => console.log(JSON.stringify({ progress: received })), 100);
    s.on('data', (d) => {
      received += d.length;
      if (received >= total) {
        clearInterval(timer);
        console.log(JSON.stringify({ doneMs: performance.now() - t0, bytes: received })); s.destroy();
      }
    });
    const chunk = Buffer.alloc(64 * 1024, 7); let sent = 0;
    const pump = () => { while (sent < total) { sent += chunk.length; if (!s.write(chunk)) return s.once('drain', pump); } };
    pump();
  }
});
s.on('error', (e) => { console.error(e.message); process.exit(1); });
`;

const pairs: NetnsPair[] = [];
after(async () => {
  for (const pair of pairs) await pair.destroy();
});

async function pairWithEcho(): Promise<NetnsPair> {
  const pair = await NetnsPair.create();
  pairs.push(pair);
  const server = pair.spawnIn(pair.b, process.execPath, ['-e', ECHO_SERVER, pair.b.address], { stdio: ['ignore', 'pipe', 'inherit'] });
  const first = await nextJsonOrLine(server);
  assert.equal(first, 'listening');
  return pair;
}

function client(pair: NetnsPair, mode: 'rtt' | 'transfer', bytes = 0): ChildProcess {
  return pair.spawnIn(pair.a, process.execPath, ['-e', CLIENT, pair.b.address, mode, String(bytes)], { stdio: ['ignore', 'pipe', 'inherit'] });
}

/** Lines from a child's stdout, queued; each call returns the next one (JSON-parsed when it is JSON). */
const readers = new WeakMap<ChildProcess, { lines: string[]; wake?: () => void; closed: boolean }>();
async function nextJsonOrLine(child: ChildProcess, timeoutMs = 10_000): Promise<unknown> {
  let state = readers.get(child);
  if (!state) {
    const s: { lines: string[]; wake?: () => void; closed: boolean } = { lines: [], closed: false };
    createInterface({ input: child.stdout! })
      .on('line', (line) => { s.lines.push(line); s.wake?.(); })
      .on('close', () => { s.closed = true; s.wake?.(); });
    readers.set(child, s);
    state = s;
  }
  const deadline = Date.now() + timeoutMs;
  while (state.lines.length === 0) {
    if (state.closed) throw new Error('process output ended');
    const left = deadline - Date.now();
    if (left <= 0) throw new Error(`no output within ${timeoutMs} ms`);
    await new Promise<void>((resolve) => { state.wake = resolve; setTimeout(resolve, Math.min(left, 100)); });
  }
  const line = state.lines.shift()!;
  return line.startsWith('{') ? JSON.parse(line) as unknown : line;
}

async function lastProgress(child: ChildProcess): Promise<number> {
  // Drain what is queued and return the newest progress figure.
  let value = -1;
  for (;;) {
    const line = await nextJsonOrLine(child, 2_000) as { progress?: number; doneMs?: number };
    if (line.doneMs !== undefined) throw new Error('transfer finished while it should have stalled');
    value = line.progress ?? value;
    if ((readers.get(child)?.lines.length ?? 0) === 0) return value;
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

test('a process spawned in a namespace is the real program, lives in that namespace and is killable', { skip, timeout: 30_000 }, async () => {
  const pair = await NetnsPair.create();
  pairs.push(pair);
  const child = pair.spawnIn(pair.a, process.execPath, ['-e', 'setInterval(() => {}, 1000); console.log("up")'], { stdio: ['ignore', 'pipe', 'inherit'] });
  assert.equal(await nextJsonOrLine(child), 'up');
  assert.match(readFileSync(`/proc/${child.pid}/cmdline`, 'utf8'), /setInterval/);
  assert.equal(execFileSync('ip', ['netns', 'identify', String(child.pid)], { encoding: 'utf8' }).trim(), pair.a.name);
  child.kill('SIGTERM');
  await new Promise((r) => child.once('exit', r));
  assert.equal(execFileSync('ip', ['netns', 'pids', pair.a.name], { encoding: 'utf8' }).trim(), '');
});

test('delay 20 ms on each end gives an RTT of at least 40 ms', { skip, timeout: 30_000 }, async (t) => {
  const pair = await pairWithEcho();
  const unshaped = await nextJsonOrLine(client(pair, 'rtt')) as { rttMs: number };
  await pair.shape({ delayMs: 20 });
  const shaped = await nextJsonOrLine(client(pair, 'rtt')) as { rttMs: number };
  t.diagnostic(`RTT unshaped ${unshaped.rttMs.toFixed(2)} ms, delay 20 ms per end ${shaped.rttMs.toFixed(2)} ms`);
  assert.ok(unshaped.rttMs < 20, `unshaped RTT ${unshaped.rttMs} ms`);
  assert.ok(shaped.rttMs >= 40 && shaped.rttMs < 200, `shaped RTT ${shaped.rttMs} ms`);
});

test('a 20 mbit rate limits a 4 MiB transfer to roughly 20 mbit', { skip, timeout: 30_000 }, async (t) => {
  const pair = await pairWithEcho();
  await pair.shape({ rateMbit: 20, delayMs: 1 });
  const transfer = client(pair, 'transfer', 4 * MiB);
  let result: { doneMs?: number; bytes?: number } = {};
  while (result.doneMs === undefined) result = await nextJsonOrLine(transfer) as typeof result;
  const mbit = (result.bytes! * 8) / (result.doneMs / 1000) / 1e6;
  t.diagnostic(`4 MiB echoed in ${result.doneMs.toFixed(0)} ms: ${mbit.toFixed(1)} mbit/s`);
  assert.ok(mbit >= 10 && mbit <= 22, `measured ${mbit.toFixed(1)} mbit/s at a 20 mbit limit`);
});

test('a partition stalls a transfer and heal lets it finish', { skip, timeout: 30_000 }, async (t) => {
  const pair = await pairWithEcho();
  await pair.shape({ rateMbit: 20, delayMs: 1 });
  const transfer = client(pair, 'transfer', 4 * MiB);
  for (;;) {
    const line = await nextJsonOrLine(transfer) as { progress?: number };
    if ((line.progress ?? 0) > 0) break;
  }
  await pair.partition();
  assert.equal(pair.isPartitioned, true);
  await sleep(1_000); // let packets queued before the partition drain
  const before = await lastProgress(transfer);
  await sleep(1_000);
  const during = await lastProgress(transfer);
  assert.equal(during, before, 'no bytes arrive during the partition');
  assert.ok(during < 4 * MiB);
  await pair.heal();
  const healedAt = performance.now();
  let result: { doneMs?: number; bytes?: number } = {};
  while (result.doneMs === undefined) result = await nextJsonOrLine(transfer, 15_000) as typeof result;
  assert.equal(result.bytes, 4 * MiB);
  t.diagnostic(`stalled at ${during} bytes; finished ${(performance.now() - healedAt).toFixed(0)} ms after heal`);
});

test('destroy removes both namespaces and their processes, and is idempotent; create removes stale ones', { skip, timeout: 30_000 }, async () => {
  // A namespace left by a test process that died: its pid is gone, so the next create() removes it.
  const dead = spawnSync('true');
  const stale = `tm-${dead.pid}-0-a`;
  execFileSync('ip', ['netns', 'add', stale]);
  const pair = await pairWithEcho();
  assert.ok(!execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }).includes(stale), 'stale namespace removed');
  const names = [pair.a.name, pair.b.name];
  await pair.destroy();
  await pair.destroy();
  const listing = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  for (const name of names) assert.ok(!listing.includes(name), `${name} still listed:\n${listing}`);
  assert.throws(() => pair.spawnIn(pair.a, 'true'), /destroyed/);
});
