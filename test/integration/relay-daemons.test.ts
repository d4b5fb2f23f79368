// A pair between alpha and charlie, which cannot reach each other, through the relay array mid
// (three real daemons, authenticated TCP links alpha—mid and mid—charlie; the alpha–charlie link
// runs end to end inside them). The pair synchronizes and the images are equal; mid holds no
// volume and stores none of the data; kill -9 of mid partitions the pair while alpha's hosts keep
// writing; mid back → the link returns and the pair resynchronizes to equal images.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DaemonFixture, peerUp, tidemarkBin, waitFor, type DaemonProcess } from '../helpers/daemon.js';
import { mustRun } from '../helpers/in-process-array.js';
import { RawNbdClient } from '../helpers/raw-nbd-client.js';
import { missingTools, requirement } from '../helpers/requirement.js';

const skip = requirement(missingTools(['nbdcopy']));
const MiB = 1024 * 1024;
const VOLUME_BYTES = 16 * MiB;
const PATTERN = 'RELAYED-HOST-WRITE-';

let fixture: DaemonFixture;
let alpha: DaemonProcess;
let mid: DaemonProcess;
let charlie: DaemonProcess;

const cli = (array: DaemonProcess, ...args: string[]): Promise<string> => mustRun(tidemarkBin, [...array.cliArgs, '--json', ...args]);
const pairOf = async (array: DaemonProcess, name: string): Promise<{ state: string; role: string }> =>
  JSON.parse(await cli(array, 'pair', 'show', name)) as { state: string; role: string };
const peerOf = async (array: DaemonProcess, name: string): Promise<{ link: string; via: string | null; address: string }> =>
  JSON.parse(await cli(array, 'peer', 'show', name)) as { link: string; via: string | null; address: string };

/** Bytes a host writes: the pattern text with the round and offset in it, so rounds differ. */
function hostBytes(round: number, offset: number, length: number): Buffer {
  const text = `${PATTERN}${round}-`;
  const b = Buffer.alloc(length);
  for (let at = 0; at < length; at += 4096) b.write(`${text}${offset + at}`.padEnd(4096, text), at, 'latin1');
  return b;
}

async function hostWrite(array: DaemonProcess, volume: string, round: number, offset: number, length: number): Promise<void> {
  const c = await RawNbdClient.connect(array.nbdPort);
  try {
    await c.greeting();
    await c.go(volume);
    const chunk = 256 * 1024;
    for (let at = offset; at < offset + length; at += chunk) {
      c.sendRequest(1, BigInt(at), BigInt(at), chunk, 0, hostBytes(round, at, chunk));
      const reply = await c.simpleReply();
      assert.equal(reply.error, 0, `write at ${at}`);
    }
  } finally {
    c.close();
  }
}

async function imageHash(array: DaemonProcess, volume: string): Promise<string> {
  const file = join(fixture.dir, `${volume}-${Date.now()}-${Math.random()}.img`);
  await mustRun('nbdcopy', [array.uri(volume), file]);
  return createHash('sha256').update(await readFile(file)).digest('hex');
}

/** Every regular file under `dir`. */
async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...await filesUnder(path));
    else if (entry.isFile()) out.push(path);
  }
  return out;
}

before(async () => {
  fixture = await DaemonFixture.create();
  const start = (name: string): Promise<DaemonProcess> => fixture.start(join(fixture.dir, name), ['--name', name, '--link', '127.0.0.1:0']);
  [alpha, mid, charlie] = await Promise.all([start('alpha'), start('mid'), start('charlie')]);
  await peerUp(fixture, alpha, 'alpha', mid, 'mid');
  await peerUp(fixture, mid, 'mid', charlie, 'charlie');
});

after(async () => {
  await fixture?.cleanup();
});

test('a pair through a relay: synchronized, equal images, the relay stores nothing; kill -9 of the relay partitions it, its return resynchronizes it', { skip, timeout: 240_000 }, async () => {
  const secret = join(fixture.dir, 'secret-alpha-charlie');
  await writeFile(secret, 'alpha and charlie, end to end through mid\n', { mode: 0o600 });
  // `peer add … --via mid`: no address; mid must be a peer already.
  await cli(alpha, 'peer', 'add', 'charlie', '--via', 'mid', '--secret-file', secret);
  await cli(charlie, 'peer', 'add', 'alpha', '--via', 'mid', '--secret-file', secret);
  await waitFor('alpha–charlie link through mid', async () => (await peerOf(alpha, 'charlie')).link === 'up', 30_000);
  const shown = await peerOf(alpha, 'charlie');
  assert.equal(shown.via, 'mid');
  assert.equal(shown.address, 'relay:mid');
  assert.equal((await peerOf(alpha, 'mid')).via, null, 'a direct peer says so');
  assert.match(await mustRun(tidemarkBin, [...alpha.cliArgs, 'peer', 'list']), /charlie\s+via mid\s+up/);
  // Routed commands use the relayed link like any other.
  assert.equal(JSON.parse(await cli(alpha, '--via', 'charlie', 'array', 'show')).name, 'charlie');

  await cli(alpha, 'volume', 'create', 'db', '--size', String(VOLUME_BYTES));
  await cli(charlie, 'volume', 'create', 'db-r', '--size', String(VOLUME_BYTES));
  await hostWrite(alpha, 'db', 1, 0, VOLUME_BYTES);
  await cli(alpha, 'pair', 'create', 'db', '--peer', 'charlie', '--remote-volume', 'db-r', '--mode', 'sync');
  await cli(alpha, 'pair', 'wait', 'db', '--until', 'synchronized', '--timeout', '120');
  // Sync writes through the relay too.
  await hostWrite(alpha, 'db', 2, 4 * MiB, 2 * MiB);
  const source = await imageHash(alpha, 'db');
  assert.equal(await imageHash(charlie, 'db-r'), source, 'the replica equals the source');

  assert.deepEqual((JSON.parse(await cli(mid, 'volume', 'list')) as { volumes: unknown[] }).volumes, [], 'the relay holds no volume');
  assert.deepEqual((JSON.parse(await cli(mid, 'pair', 'list')) as { pairs: unknown[] }).pairs, [], 'nor a pair');
  for (const file of await filesUnder(mid.dataDir)) {
    const bytes = await readFile(file);
    assert.ok(!bytes.includes(PATTERN), `${file} holds none of the host's data`);
  }
  assert.equal((await readdir(join(mid.dataDir, 'volumes'))).length, 0, 'no volume file on the relay');
  const metrics = await (await fetch(`${mid.apiUrl}/metrics`)).text();
  assert.match(metrics, /tidemark_relay_tunnels 1\n/, 'mid relays one tunnel');
  const relayed = Number(/tidemark_relay_bytes_total (\d+)/.exec(metrics)?.[1]);
  assert.ok(relayed > VOLUME_BYTES, `mid passed on the establish (${relayed} bytes)`);
  assert.match(await (await fetch(`${alpha.apiUrl}/metrics`)).text(), /tidemark_relay_tunnel_ends 1\n/);

  // The relay dies: the link alpha–charlie has nothing to run on.
  const midDir = mid.dataDir;
  const midLink = mid.linkAddress!;
  await mid.stop('SIGKILL');
  await waitFor('pair partitioned', async () => (await pairOf(alpha, 'db')).state === 'partitioned', 30_000);
  assert.notEqual((await peerOf(alpha, 'charlie')).link, 'up');
  // Hosts keep writing to R1 (the pair continues on link failure); the changed tracks are recorded.
  await hostWrite(alpha, 'db', 3, 8 * MiB, 3 * MiB);
  assert.equal((await pairOf(alpha, 'db')).state, 'partitioned');

  // The relay comes back (same data directory and link address): the link and the pair resume.
  mid = await fixture.start(midDir, ['--name', 'mid', '--link', midLink]);
  await waitFor('alpha–charlie link back through mid', async () => (await peerOf(alpha, 'charlie')).link === 'up', 60_000);
  await cli(alpha, 'pair', 'wait', 'db', '--until', 'synchronized', '--timeout', '120');
  const after = await imageHash(alpha, 'db');
  assert.notEqual(after, source, 'the writes while partitioned changed the source');
  assert.equal(await imageHash(charlie, 'db-r'), after, 'the replica caught up through the relay');
  assert.equal((await pairOf(charlie, 'db')).role, 'R2');
  assert.ok((await stat(join(mid.dataDir, 'volumes'))).isDirectory());
  assert.equal((await readdir(join(mid.dataDir, 'volumes'))).length, 0, 'still nothing stored on the relay');
});

test('peer add --via refuses a relay that is not a direct peer, and a relay in use cannot be removed', { skip, timeout: 60_000 }, async () => {
  const secret = join(fixture.dir, 'secret-x');
  await writeFile(secret, 'some secret of sixteen bytes or more\n', { mode: 0o600 });
  const run = (array: DaemonProcess, ...args: string[]) => import('../helpers/in-process-array.js').then((m) => m.runCommand(tidemarkBin, [...array.cliArgs, ...args]));
  const noRelay = await run(alpha, 'peer', 'add', 'zulu', '--via', 'nobody', '--secret-file', secret);
  assert.notEqual(noRelay.code, 0);
  assert.match(noRelay.stderr, /no peer named "nobody" to relay through/);
  const relayed = await run(alpha, 'peer', 'add', 'zulu', '--via', 'charlie', '--secret-file', secret);
  assert.match(relayed.stderr, /charlie is itself reached through mid/);
  const both = await run(alpha, 'peer', 'add', 'zulu', '--via', 'mid', '--address', '127.0.0.1:1', '--secret-file', secret);
  assert.match(both.stderr, /--address or the --via relay/);
  const remove = await run(alpha, 'peer', 'remove', 'mid');
  assert.notEqual(remove.code, 0);
  assert.match(remove.stderr, /mid relays the link to charlie/);
  assert.equal((await peerOf(alpha, 'mid')).link, 'up', 'nothing changed');
});
