// Link encryption between real daemons (issue 15): east dials west through a userspace TCP relay
// in this process, which sees every byte on the wire in both directions (what tcpdump on the
// loopback would see of the link) and can alter a frame in flight.
//  1. Hosts write distinctive text to a paired volume (the establish copy and forwarded sync
//     writes): the replica gets it, the captured link bytes contain none of it.
//  1b. The same seen by tcpdump on the loopback (root): both link legs carry none of it, while the
//     NBD leg beside them, captured the same way, carries it in clear (the capture's control).
//  2. The relay flips one byte of one DATA frame carrying a host write: west rejects the frame and
//     resets the connection, the session resumes on a new one, the write completes, and the replica
//     never holds anything but the old or the new data; afterwards it equals the source.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { DaemonFixture, imageOf, tidemarkBin, waitFor, type DaemonProcess } from '../helpers/daemon.js';
import { mustRun } from '../helpers/in-process-array.js';
import { missingTools, requirement } from '../helpers/requirement.js';

const MiB = 1024 * 1024;
const KiB = 1024;
const HEADER_BYTES = 24;
const DATA_FRAME = 5;
const skip = requirement(missingTools(['qemu-io', 'nbdcopy']));
const skipCapture = requirement(process.getuid?.() !== 0 ? 'needs root: tcpdump captures on the loopback' : missingTools(['qemu-io', 'nbdcopy', 'tcpdump']));
// The API-token branch gives DaemonProcess `cliArgs` (--array URL --token-file F); without it, --array alone.
const cliArgs = (array: DaemonProcess): string[] => (array as DaemonProcess & { cliArgs?: string[] }).cliArgs ?? ['--array', array.apiUrl];
const cli = (array: DaemonProcess, ...args: string[]): Promise<string> => mustRun(tidemarkBin, [...cliArgs(array), '--json', ...args]);

/**
 * A TCP relay that records both directions and understands link framing (24-byte header, length
 * at offset 8) in the dialer→acceptor direction, so it can alter one byte of a chosen frame.
 */
class LinkRelay {
  readonly captured: Buffer[] = [];
  connections = 0;
  private tamper: { minLength: number; done: (info: { seq: number; length: number }) => void } | undefined;
  private readonly sockets = new Set<Socket>();

  private constructor(private readonly server: Server) {}

  static async start(target: string): Promise<LinkRelay> {
    const [host, port] = [target.slice(0, target.lastIndexOf(':')), Number(target.slice(target.lastIndexOf(':') + 1))];
    const server = createServer();
    const relay = new LinkRelay(server);
    server.on('connection', (inbound) => relay.relay(inbound, host, port));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return relay;
  }

  get address(): string {
    const a = this.server.address();
    assert.ok(a && typeof a === 'object');
    return `127.0.0.1:${a.port}`;
  }

  get capturedBytes(): Buffer {
    return Buffer.concat(this.captured);
  }

  /** Flips one payload byte of the next DATA frame of at least minLength bytes (dialer → acceptor). */
  tamperNextData(minLength: number): Promise<{ seq: number; length: number }> {
    return new Promise((done) => { this.tamper = { minLength, done }; });
  }

  private relay(inbound: Socket, host: string, port: number): void {
    this.connections++;
    const outbound = connect(port, host);
    for (const s of [inbound, outbound]) {
      this.sockets.add(s);
      s.on('error', () => { inbound.destroy(); outbound.destroy(); });
      s.on('close', () => { this.sockets.delete(s); inbound.destroy(); outbound.destroy(); });
    }
    let pending: Buffer = Buffer.alloc(0);
    inbound.on('data', (chunk: Buffer) => {
      this.captured.push(Buffer.from(chunk));
      // Forward whole frames only, so one can be altered before it leaves.
      pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
      for (;;) {
        if (pending.length < HEADER_BYTES) break;
        const length = pending.readUInt32BE(8);
        if (pending.length < HEADER_BYTES + length) break;
        const frame = Buffer.from(pending.subarray(0, HEADER_BYTES + length));
        pending = pending.subarray(HEADER_BYTES + length);
        const t = this.tamper;
        if (t && frame[5] === DATA_FRAME && length >= t.minLength) {
          this.tamper = undefined;
          frame[HEADER_BYTES + 100]! ^= 0x01;
          t.done({ seq: Number(frame.readBigUInt64BE(12)), length });
        }
        outbound.write(frame);
      }
    });
    outbound.on('data', (chunk: Buffer) => {
      this.captured.push(Buffer.from(chunk));
      inbound.write(chunk);
    });
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** 1 MiB of text lines that occur nowhere else: "TIDEMARK-PLAINTEXT-<tag>-000123\n". */
function markerImage(tag: string): Buffer {
  const lines: string[] = [];
  let size = 0;
  for (let i = 0; size < MiB; i++) {
    const line = `TIDEMARK-PLAINTEXT-${tag}-${String(i).padStart(6, '0')}\n`;
    lines.push(line);
    size += line.length;
  }
  return Buffer.from(lines.join('')).subarray(0, MiB);
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

interface Setup { fixture: DaemonFixture; east: DaemonProcess; west: DaemonProcess; relay: LinkRelay }

/** east (the dialer: its name sorts lower) reaches west only through the relay; a sync pair db → db-r. */
async function setup(markerFile?: string): Promise<Setup> {
  const fixture = await DaemonFixture.create();
  const secret = join(fixture.dir, 'secret');
  await writeFile(secret, 'a shared secret of more than sixteen bytes\n', { mode: 0o600 });
  const east = await fixture.start(join(fixture.dir, 'east'), ['--name', 'east', '--link', '127.0.0.1:0']);
  const west = await fixture.start(join(fixture.dir, 'west'), ['--name', 'west', '--link', '127.0.0.1:0']);
  const relay = await LinkRelay.start(west.linkAddress!);
  await cli(east, 'peer', 'add', 'west', '--address', relay.address, '--secret-file', secret);
  await cli(west, 'peer', 'add', 'east', '--address', east.linkAddress!, '--secret-file', secret);
  await waitFor('link up', async () => (JSON.parse(await cli(east, 'peer', 'show', 'west')) as { link: string }).link === 'up', 15_000);
  await cli(east, 'volume', 'create', 'db', '--size', '8MiB');
  await cli(west, 'volume', 'create', 'db-r', '--size', '8MiB');
  if (markerFile) await mustRun('nbdcopy', [markerFile, east.uri('db')]);
  await cli(east, 'pair', 'create', 'db', '--peer', 'west', '--remote-volume', 'db-r', '--mode', 'sync');
  await cli(east, 'pair', 'wait', 'db', '--until', 'synchronized', '--timeout', '60');
  return { fixture, east, west, relay };
}

test('link traffic on the wire contains none of the data hosts write to a paired volume', { skip }, async () => {
  let s: Setup | undefined;
  try {
    const dir = await DaemonFixture.create();
    const first = join(dir.dir, 'first.img');
    const second = join(dir.dir, 'second.img');
    await writeFile(first, markerImage('ESTABLISH'));
    await writeFile(second, markerImage('FORWARDED'));
    s = await setup(first);
    const { fixture, east, west, relay } = s;
    // A sync write forwarded while synchronized (the establish copy above shipped the first image).
    await mustRun('nbdcopy', [second, east.uri('db')]);
    await cli(east, 'pair', 'wait', 'db', '--until', 'synchronized', '--timeout', '60');
    const replica = await imageOf(fixture, west, 'db-r');
    assert.equal(sha(replica), sha(await imageOf(fixture, east, 'db')), 'the replica holds what the hosts wrote');
    assert.ok(replica.includes('TIDEMARK-PLAINTEXT-FORWARDED-000000'), 'the second image reached the replica');

    const wire = relay.capturedBytes;
    assert.ok(wire.length > 2 * MiB, `both images crossed the relay (${wire.length} bytes captured)`);
    for (const needle of ['TIDEMARK-PLAINTEXT', 'PLAINTEXT-ESTABLISH', 'PLAINTEXT-FORWARDED', 'ESTABLISH-0', 'FORWARDED-0']) {
      assert.equal(wire.indexOf(needle), -1, `"${needle}" is not on the wire`);
    }
    // No 16-byte window of either image appears either (sampled at every line start).
    const lines = [markerImage('ESTABLISH'), markerImage('FORWARDED')].flatMap((img) => img.toString('latin1').split('\n').slice(0, 2000));
    for (const line of lines) if (line.length >= 16) assert.equal(wire.indexOf(line.slice(-16), 0, 'latin1'), -1, `"${line}" fragment on the wire`);
    // The check itself can fail: the same search finds the text in the image the host wrote.
    assert.notEqual(replica.indexOf('TIDEMARK-PLAINTEXT'), -1);
    await dir.cleanup();
  } finally {
    await s?.relay.close();
    await s?.fixture.cleanup();
  }
});

/** What one tcpdump run saw: the pcap file, and how many packets the kernel dropped because tcpdump fell behind. */
interface Capture { bytes: Buffer; dropped: number }

/**
 * Starts tcpdump on the loopback writing the packets `filter` selects to `file`; the returned function
 * stops it and reads the capture. The 64 MiB buffer keeps a busy 2-core machine from dropping the
 * 64 KiB loopback packets of a fast copy (the default 2 MiB buffer did, once in CI).
 */
async function tcpdump(filter: string, file: string): Promise<() => Promise<Capture>> {
  const child = spawn('tcpdump', ['-i', 'lo', '-U', '-B', '65536', '-s', '0', '-w', file, filter], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  await new Promise<void>((resolve, reject) => {
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
      if (stderr.includes('listening on')) resolve();
    });
    child.on('exit', (code) => reject(new Error(`tcpdump exited (${String(code)}) before capturing: ${stderr}`)));
  });
  return async () => {
    const exited = once(child, 'exit');
    child.kill('SIGINT');
    await exited;
    const dropped = Number(/(\d+) packets? dropped by kernel/.exec(stderr)?.[1] ?? NaN);
    return { bytes: await readFile(file), dropped };
  };
}

const portOf = (address: string): number => Number(address.slice(address.lastIndexOf(':') + 1));

test('tcpdump on the loopback: the link legs carry none of a host\'s writes, the NBD leg beside them carries them in clear', { skip: skipCapture }, async () => {
  let s: Setup | undefined;
  const stops: Array<() => Promise<Capture>> = [];
  try {
    s = await setup();
    const { fixture, east, west, relay } = s;
    const image = join(fixture.dir, 'captured.img');
    await writeFile(image, markerImage('CAPTURED'));
    // Both legs of the link (east → relay, relay → west), and east's NBD port as the control.
    const link = await tcpdump(`tcp port ${portOf(relay.address)} or tcp port ${portOf(west.linkAddress!)}`, join(fixture.dir, 'link.pcap'));
    stops.push(link);
    const nbd = await tcpdump(`tcp port ${east.nbdPort}`, join(fixture.dir, 'nbd.pcap'));
    stops.push(nbd);
    await mustRun('nbdcopy', [image, east.uri('db')]);
    await cli(east, 'pair', 'wait', 'db', '--until', 'synchronized', '--timeout', '60');
    assert.ok((await imageOf(fixture, west, 'db-r')).includes('TIDEMARK-PLAINTEXT-CAPTURED-000000'), 'the writes reached the replica');
    stops.length = 0;
    const { bytes: linkBytes, dropped: linkDropped } = await link();
    const { bytes: nbdBytes } = await nbd();
    // The control: the capture does see host data where it travels in clear (NBD without TLS).
    assert.notEqual(nbdBytes.indexOf('TIDEMARK-PLAINTEXT-CAPTURED'), -1, 'tcpdump captured the NBD leg in clear');
    // A capture with gaps proves nothing about what crossed in them.
    assert.equal(linkDropped, 0, `tcpdump kept up with the link (${linkDropped} packets dropped by the kernel)`);
    assert.ok(linkBytes.length > MiB, `the image crossed the link (${linkBytes.length} bytes captured)`);
    for (const needle of ['TIDEMARK-PLAINTEXT', 'PLAINTEXT-CAPTURED', 'CAPTURED-0']) {
      assert.equal(linkBytes.indexOf(needle), -1, `"${needle}" is not in the link capture`);
    }
  } finally {
    for (const stop of stops) await stop().catch(() => undefined);
    await s?.relay.close();
    await s?.fixture.cleanup();
  }
});

test('a DATA frame altered in flight resets the link; nothing altered reaches the replica and the pair recovers', { skip }, async () => {
  let s: Setup | undefined;
  try {
    s = await setup();
    const { fixture, east, west, relay } = s;
    const connectionsBefore = relay.connections;
    const tampered = relay.tamperNextData(32 * KiB);
    const offset = 2 * MiB;
    const length = 256 * KiB;
    // Sample the replica's target range while the write is being altered, rejected and resent:
    // it may hold the old (zero) or the new bytes, never anything else.
    let writing = true;
    let samples = 0;
    const sampler = (async () => {
      while (writing) {
        const image = await imageOf(fixture, west, 'db-r');
        // Old or new per byte (the write may land in pieces), and nothing outside the range changes.
        assert.ok(image.subarray(offset, offset + length).every((b) => b === 0 || b === 0x6b), `replica range holds bytes never written (sample ${samples})`);
        assert.ok(image.subarray(0, offset).every((b) => b === 0) && image.subarray(offset + length).every((b) => b === 0), `replica changed outside the write (sample ${samples})`);
        samples++;
      }
    })();
    await mustRun('qemu-io', ['-f', 'raw', '-c', `write -P 0x6b ${offset} ${length}`, east.uri('db')]);
    const info = await Promise.race([tampered, new Promise<never>((_, reject) => setTimeout(() => reject(new Error('no DATA frame of >= 32 KiB crossed the relay')), 20_000).unref())]);
    writing = false;
    await sampler;
    assert.ok(info.seq > 0 && info.length >= 32 * KiB);

    await waitFor('west rejected the altered frame', async () => /frame authentication failed/.test(west.output()), 15_000);
    await waitFor('east reconnected through the relay', async () => relay.connections > connectionsBefore, 15_000);
    await cli(east, 'pair', 'wait', 'db', '--until', 'synchronized', '--timeout', '60');
    const westView = JSON.parse(await cli(west, 'peer', 'show', 'east')) as { link: string; lastError?: string | null };
    assert.match(String(westView.lastError), /frame authentication failed/);
    assert.equal((JSON.parse(await cli(east, 'peer', 'show', 'west')) as { link: string }).link, 'up');
    const replica = await imageOf(fixture, west, 'db-r');
    assert.equal(sha(replica), sha(await imageOf(fixture, east, 'db')), 'replica equals source after recovery');
    assert.ok(replica.subarray(offset, offset + length).every((b) => b === 0x6b), 'the write arrived, unaltered');
    assert.ok(samples > 0);
    // Still replicating on the new connection.
    await mustRun('qemu-io', ['-f', 'raw', '-c', `write -P 0x2c ${4 * MiB} 64k`, east.uri('db')]);
    await cli(east, 'pair', 'wait', 'db', '--until', 'synchronized', '--timeout', '60');
    assert.equal(sha(await imageOf(fixture, west, 'db-r')), sha(await imageOf(fixture, east, 'db')));
  } finally {
    await s?.relay.close();
    await s?.fixture.cleanup();
  }
});
