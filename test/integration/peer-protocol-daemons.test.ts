// Malformed and unknown peer messages over an authenticated link (issue 10): two real daemons
// replicate a pair; a third party that authenticates on the real link with a configured secret
// (this process, through the project's own LinkNetwork) sends what a broken or hostile peer array
// could. The daemon answers what has an id with an error reply, logs each one, keeps serving, and
// nothing changes: both halves of the pair show the same before and after, and it still replicates.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DaemonFixture, api, tidemarkBin, waitFor, type DaemonProcess } from '../helpers/daemon.js';
import { mustRun } from '../helpers/in-process-array.js';
import { LinkNetwork } from '../../src/adapters/net/link-network.js';
import { decodeMessage, encodeMessage, type PeerMessage } from '../../src/core/replication/peer-messages.js';
import { PEER_PROTOCOL_VERSION } from '../../src/core/replication/peer-protocol.js';

const MiB = 1024 * 1024;
/** A log line of west refusing one of the probe's messages (other background errors under load do not count). */
const refusalOfProbe = (line: string): boolean => line.includes('TM_ERR_') && line.includes('"peer":"alpha"');
const cli = (array: DaemonProcess, ...args: string[]): Promise<string> => mustRun(tidemarkBin, [...array.cliArgs, '--json', ...args]);

interface PairJson {
  id: string; pair: string; volume: string; role: string; state: string; mode: string; generation: number; peer: string; remoteVolume: string;
  tracksOwed: number; diverged: boolean; invalidTracks: { local: number };
}

/** What must not change (counters and ages move on their own). */
const essentials = (p: PairJson): Record<string, unknown> => ({
  id: p.id, pair: p.pair, volume: p.volume, role: p.role, state: p.state, mode: p.mode, generation: p.generation, peer: p.peer,
  remoteVolume: p.remoteVolume, tracksOwed: p.tracksOwed, diverged: p.diverged, invalidTracks: p.invalidTracks.local,
});

async function snapshot(east: DaemonProcess, west: DaemonProcess): Promise<unknown> {
  const pairs = async (a: DaemonProcess): Promise<unknown> => (JSON.parse(await cli(a, 'pair', 'list')) as { pairs: PairJson[] }).pairs.map(essentials);
  const volumes = async (a: DaemonProcess): Promise<unknown> =>
    (JSON.parse(await cli(a, 'volume', 'list')) as { volumes: Array<{ name: string; state: string; sizeBytes: number }> }).volumes.map((v) => [v.name, v.state, v.sizeBytes]);
  return { eastPairs: await pairs(east), westPairs: await pairs(west), eastVolumes: await volumes(east), westVolumes: await volumes(west) };
}

async function hashOf(fixture: DaemonFixture, array: DaemonProcess, volume: string): Promise<string> {
  const out = join(fixture.dir, `${volume}-${Date.now()}-${Math.random()}.img`);
  await mustRun('nbdcopy', [array.uri(volume), out]);
  return createHash('sha256').update(await readFile(out)).digest('hex');
}

const request = (id: number, header: Record<string, unknown>, segments: PeerMessage['segments'] = []): Uint8Array =>
  encodeMessage({ type: 'request', id, header: { ...header, rpc: 'probe' }, segments });

test('malformed and unknown peer messages from an authenticated peer get error replies; the daemon keeps serving and nothing changes', async () => {
  const fixture = await DaemonFixture.create();
  let probe: LinkNetwork | undefined;
  let stranger: LinkNetwork | undefined;
  try {
    const secretFile = join(fixture.dir, 'secret');
    const secret = 'a shared secret of more than sixteen bytes';
    await writeFile(secretFile, `${secret}\n`, { mode: 0o600 });
    const east = await fixture.start(join(fixture.dir, 'east'), ['--name', 'east', '--link', '127.0.0.1:0']);
    const west = await fixture.start(join(fixture.dir, 'west'), ['--name', 'west', '--link', '127.0.0.1:0']);
    await cli(east, 'peer', 'add', 'west', '--address', west.linkAddress!, '--secret-file', secretFile);
    await cli(west, 'peer', 'add', 'east', '--address', east.linkAddress!, '--secret-file', secretFile);
    // The probe is a configured peer of west: it names itself "alpha" (lower than west, so it dials).
    await cli(west, 'peer', 'add', 'alpha', '--address', '127.0.0.1:9', '--secret-file', secretFile);
    await waitFor('link up', async () => (JSON.parse(await cli(east, 'peer', 'show', 'west')) as { link: string }).link === 'up', 15_000);

    await cli(east, 'volume', 'create', 'db', '--size', '8MiB');
    await cli(west, 'volume', 'create', 'db-r', '--size', '8MiB');
    await mustRun('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 0 1M', east.uri('db')]);
    await cli(east, 'pair', 'create', 'db', '--peer', 'west', '--remote-volume', 'db-r', '--mode', 'sync');
    await cli(east, 'pair', 'wait', 'db', '--until', 'synchronized', '--timeout', '60');
    const pairId = (JSON.parse(await cli(east, 'pair', 'show', 'db')) as PairJson).id;
    // An idle synchronized pair cleans its bitmap on its own (flush rounds): let it, so the
    // before/after comparison sees only what the probe's messages could have changed.
    await waitFor('clean bitmap', async () => (JSON.parse(await cli(east, 'pair', 'show', 'db')) as PairJson).invalidTracks.local === 0, 15_000);

    probe = await LinkNetwork.start({ arrayName: 'alpha' });
    probe.addPeer({ name: 'west', address: west.linkAddress!, secret: new TextEncoder().encode(secret) });
    const replies = new Map<number, PeerMessage>();
    let repliesSeen = 0;
    probe.onMessage((_peer, bytes) => {
      const m = decodeMessage(bytes);
      if (m.type !== 'response') return; // west's own requests to a peer whose link is up (peer.ping)
      repliesSeen++;
      replies.set(m.id, m);
    });
    await waitFor('probe authenticated on west\'s link', async () => probe!.isUp('west'), 15_000);

    const before = await snapshot(east, west);
    const westImage = await hashOf(fixture, west, 'db-r');
    const logLinesBefore = west.output().split('\n').filter(refusalOfProbe).length;

    const valid = request(9, { op: 'pair.status', pair: pairId });
    const notJson = valid.slice();
    notJson.fill(0x7b, 9, 12);
    const bad: Array<[string, Uint8Array, number | undefined, string | undefined]> = [
      ['unknown op', request(1, { op: 'pair.format-disk', pair: pairId }), 1, 'TM_ERR_UNSUPPORTED'],
      ['generation is not a number', request(2, { op: 'pair.set-intent', pair: pairId, intent: 'failed-over', generation: 'lots' }), 2, 'TM_ERR_PROTOCOL'],
      ['no pair', request(3, { op: 'pair.delete' }), 3, 'TM_ERR_PROTOCOL'],
      // Data with a bad header must never reach the replica.
      ['fua is not a boolean', request(4, { op: 'pair.apply', pair: pairId, fua: 'yes' }, [{ kind: 'data', offset: 0, data: new Uint8Array(4096).fill(0xee) }]), 4, 'TM_ERR_PROTOCOL'],
      ['no op at all', request(5, { pair: pairId }), 5, 'TM_ERR_PROTOCOL'],
      ['header not JSON', notJson, 9, 'TM_ERR_PROTOCOL'],
      ['framing truncated after the id', request(6, { op: 'pair.status', pair: pairId }).subarray(0, 20), 6, 'TM_ERR_PROTOCOL'],
      ['framing truncated before the id', Uint8Array.of(0, 0, 0, 1), undefined, undefined],
    ];
    for (const [, bytes] of bad) await probe.send('west', bytes);
    const answered = bad.filter((b) => b[2] !== undefined);
    await waitFor('error replies', async () => answered.every(([, , id]) => replies.has(id!)), 10_000);
    for (const [what, , id, code] of answered) {
      const reply = replies.get(id!)!;
      assert.equal(reply.type, 'response', what);
      assert.equal(reply.header.ok, false, what);
      assert.equal((reply.header.error as { code: string }).code, code, `${what}: ${JSON.stringify(reply.header.error)}`);
    }
    assert.match((replies.get(2)!.header.error as { message: string }).message, /bad pair\.set-intent request: field generation/);
    assert.match((replies.get(1)!.header.error as { message: string }).message, /unknown peer operation "pair\.format-disk"/);

    // A well-formed request from the probe is served (it is not the pair's peer, so it has no half of it).
    await probe.send('west', request(10, { op: 'pair.status', pair: pairId }));
    await waitFor('status reply', async () => replies.has(10), 10_000);
    assert.deepEqual({ ok: replies.get(10)!.header.ok, exists: replies.get(10)!.header.exists }, { ok: true, exists: false });
    assert.equal(repliesSeen, answered.length + 1, 'nothing answered the message without an id');

    // One log line per refused message (the one without an id included).
    await waitFor('log lines', async () => west.output().split('\n').filter(refusalOfProbe).length - logLinesBefore >= bad.length, 5000);
    assert.equal(west.output().split('\n').filter(refusalOfProbe).length - logLinesBefore, bad.length, west.output().slice(-3000));

    // Alive, serving, unchanged.
    assert.equal((await api(west, 'GET', '/v1/volumes')).status, 200);
    assert.deepEqual(await snapshot(east, west), before);
    assert.equal(await hashOf(fixture, west, 'db-r'), westImage, 'the replica holds nothing the malformed apply carried');
    assert.equal(probe.isUp('west'), true, 'a refused message does not end the link');

    // And the pair still replicates.
    await mustRun('qemu-io', ['-f', 'raw', '-c', `write -P 0x77 ${2 * MiB} 256k`, east.uri('db')]);
    await cli(east, 'pair', 'wait', 'db', '--until', 'synchronized', '--timeout', '30');
    assert.equal(await hashOf(fixture, west, 'db-r'), await hashOf(fixture, east, 'db'));

    // A peer speaking another protocol version is refused at the handshake, and west says why.
    await cli(west, 'peer', 'add', 'aaa', '--address', '127.0.0.1:9', '--secret-file', secretFile);
    stranger = await LinkNetwork.start({ arrayName: 'aaa', protocolVersion: PEER_PROTOCOL_VERSION + 1 });
    stranger.addPeer({ name: 'west', address: west.linkAddress!, secret: new TextEncoder().encode(secret) });
    const mismatch = new RegExp(`peer protocol version mismatch: aaa speaks v${PEER_PROTOCOL_VERSION + 1}, west speaks v${PEER_PROTOCOL_VERSION}`);
    await waitFor('refusal seen by the stranger', async () => mismatch.test(stranger!.peer('west')?.lastError ?? ''), 10_000);
    assert.equal(stranger.isUp('west'), false);
    assert.match(west.output(), mismatch);
    const shown = JSON.parse(await cli(west, 'peer', 'show', 'aaa')) as { link: string; lastError: string | null };
    assert.notEqual(shown.link, 'up');
    assert.match(shown.lastError ?? '', mismatch);
  } finally {
    await probe?.close();
    await stranger?.close();
    await fixture.cleanup();
  }
});
