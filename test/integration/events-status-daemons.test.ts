// The event timeline, the history and `tidemark status` / `tidemark events` on two real daemons
// with a sync pair: what the operator sees when a link drops, a pair is suspended, hosts write.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DaemonFixture, api, tidemarkBin, waitFor, type DaemonProcess } from '../helpers/daemon.js';
import { mustRun } from '../helpers/in-process-array.js';
import { missingTools, requirement } from '../helpers/requirement.js';

interface EventJson { seq: number; kind: string; subject: string | null; message: string; fields: Record<string, unknown> }
interface EventPage { events: EventJson[]; next: number; missed: number }
interface EstateJson {
  array: { name: string };
  arrays: Array<{ name: string; self: boolean; reachable: boolean }>;
  links: Array<{ peer: string; link: string; rttMs: number | null }>;
  pairs: Array<{ pair: string; state: string; role: string; tracksOwed: number; lagSeconds: number }>;
  groups: unknown[];
}

const cli = (array: DaemonProcess, ...args: string[]): Promise<string> => mustRun(tidemarkBin, [...array.cliArgs, ...args]);
const events = async (array: DaemonProcess, since = 0): Promise<EventJson[]> =>
  (await api<EventPage>(array, 'GET', `/v1/events?since=${since}`)).body.events;
const hasEvent = async (array: DaemonProcess, match: (e: EventJson) => boolean): Promise<boolean> => (await events(array)).some(match);

test('timeline, history, events and status on two daemons with a sync pair', { skip: requirement(missingTools(['qemu-io'])) }, async () => {
  const fixture = await DaemonFixture.create();
  try {
    const secret = join(fixture.dir, 'secret');
    await writeFile(secret, 'a shared secret of more than sixteen bytes\n', { mode: 0o600 });
    const east = await fixture.start(join(fixture.dir, 'east'), ['--name', 'east', '--link', '127.0.0.1:0']);
    const westDir = join(fixture.dir, 'west');
    let west = await fixture.start(westDir, ['--name', 'west', '--link', '127.0.0.1:0']);
    const westLink = west.linkAddress!;
    assert.ok((await events(east)).some((e) => e.kind === 'array' && e.message === 'array east started'));
    await cli(east, 'peer', 'add', 'west', '--address', westLink, '--secret-file', secret);
    await cli(west, 'peer', 'add', 'east', '--address', east.linkAddress!, '--secret-file', secret);
    await waitFor('link up event', () => hasEvent(east, (e) => e.kind === 'link' && e.message === 'link to west up' && e.subject === 'west'), 15_000);

    await cli(east, 'volume', 'create', 'db', '--size', '16MiB');
    await cli(west, 'volume', 'create', 'db-r', '--size', '16MiB');
    await mustRun('qemu-io', ['-f', 'raw', '-c', 'write -P 7 0 2M', east.uri('db')]);
    await cli(east, 'pair', 'create', 'db', '--peer', 'west', '--remote-volume', 'db-r', '--mode', 'sync');
    await cli(east, 'pair', 'wait', 'db', '--until', 'synchronized', '--timeout', '60');
    await waitFor('synchronized observed', () => hasEvent(east, (e) => e.kind === 'pair' && e.subject === 'db' && e.fields.to === 'synchronized'), 10_000);
    assert.ok(await hasEvent(east, (e) => e.message === 'pair created' && e.subject === 'db'));
    assert.ok(await hasEvent(west, (e) => e.message === 'pair created (R2)'), 'R2 keeps its own timeline');

    // status: the same facts, as JSON and on screen.
    const estate = JSON.parse(await cli(east, '--json', 'status')) as EstateJson;
    assert.equal(estate.array.name, 'east');
    assert.deepEqual(estate.arrays, [{ name: 'east', self: true, reachable: true }, { name: 'west', self: false, reachable: true }]);
    assert.deepEqual(estate.links.map((l) => [l.peer, l.link]), [['west', 'up']]);
    assert.deepEqual(estate.pairs.map((p) => [p.pair, p.role, p.state, p.tracksOwed]), [['db', 'R1', 'synchronized', 0]]);
    await waitFor('link round trip measured', async () => {
      const rtt = (JSON.parse(await cli(east, '--json', 'status')) as EstateJson).links[0]!.rttMs;
      return rtt !== null && rtt > 0 && rtt < 5000;
    }, 20_000);
    // --watch redraws: with --json one object per line.
    const watcher = spawn(tidemarkBin, [...east.cliArgs, '--json', 'status', '--watch', '--interval', '0.2'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let watched = '';
    watcher.stdout.on('data', (d: Buffer) => { watched += d.toString(); });
    try {
      await waitFor('two redraws', async () => watched.split('\n').filter((l) => l.startsWith('{')).length >= 2, 10_000);
    } finally {
      watcher.kill();
    }
    assert.equal((JSON.parse(watched.split('\n')[1]!) as EstateJson).pairs[0]!.state, 'synchronized');
    const screen = await cli(east, 'status');
    assert.match(screen, /^west +127\.0\.0\.1:\d+ +up +\d+\.\d\d ms /m);
    assert.match(screen, /^array east /m);
    assert.match(screen, /^west +127\.0\.0\.1:\d+ +up /m);
    assert.match(screen, /^db +db +R1 +sync +synchronized +west\/db-r +0 tracks/m);

    // A long poll started now is answered by the suspend's events, not by its timeout.
    const cursor = (await api<EventPage>(east, 'GET', '/v1/events')).body.next;
    const started = Date.now();
    const polled = api<EventPage>(east, 'GET', `/v1/events?since=${cursor}&waitMs=20000`);
    // `events --follow` prints them as they come, one JSON object per line.
    const follower = spawn(tidemarkBin, [...east.cliArgs, '--json', 'events', '--follow', '--since', String(cursor)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let followed = '';
    follower.stdout.on('data', (d: Buffer) => { followed += d.toString(); });
    try {
      await new Promise((resolve) => setTimeout(resolve, 300)); // let the follower's first request reach the array
      await cli(east, 'pair', 'suspend', 'db');
      const page = (await polled).body;
      assert.ok(Date.now() - started < 15_000, 'the long poll returned on the event');
      assert.ok(page.events.some((e) => e.message === 'pair suspend' && e.subject === 'db'), JSON.stringify(page.events));
      await waitFor('suspended observed', () => hasEvent(east, (e) => e.subject === 'db' && e.fields.from === 'synchronized' && e.fields.to === 'suspended'), 10_000);
      await waitFor('follower printed the state change', async () => followed.split('\n').some((l) => l.includes('"to":"suspended"')), 10_000);
      for (const line of followed.trim().split('\n')) assert.ok((JSON.parse(line) as EventJson).seq > cursor);
    } finally {
      follower.kill();
    }

    // Hosts write while suspended: owed tracks grow, the history records the I/O and the owed tracks.
    await mustRun('qemu-io', ['-f', 'raw', '-c', 'write -P 9 4M 1M', east.uri('db')]);
    const owed = JSON.parse(await cli(east, '--json', 'status')) as EstateJson;
    assert.equal(owed.pairs[0]!.state, 'suspended');
    assert.equal(owed.pairs[0]!.tracksOwed, 16);
    await waitFor('history sample with the writes and owed tracks', async () => {
      const h = (await api<{ pairs: Record<string, { tracksOwed: number[] }>; volumes: Record<string, { writeBytesPerSecond: number[] }> }>(east, 'GET', '/v1/history')).body;
      return (h.pairs.db?.tracksOwed.includes(16) ?? false) && (h.volumes.db?.writeBytesPerSecond.some((b) => b > 0) ?? false);
    }, 15_000);
    const text = await cli(east, 'events');
    assert.match(text, /#\d+ +pair +pair db: synchronized → suspended/);

    await cli(east, 'pair', 'resume', 'db');
    await cli(east, 'pair', 'wait', 'db', '--until', 'synchronized', '--timeout', '60');

    // The link drops: the timeline says so, and the pair's new state with it.
    await west.stop('SIGKILL');
    await waitFor('link down event', () => hasEvent(east, (e) => e.kind === 'link' && e.message.startsWith('link to west down')), 15_000);
    await waitFor('partitioned observed', () => hasEvent(east, (e) => e.subject === 'db' && e.fields.to === 'partitioned'), 15_000);
    const down = JSON.parse(await cli(east, '--json', 'status')) as EstateJson;
    assert.deepEqual(down.arrays[1], { name: 'west', self: false, reachable: false });
    west = await fixture.start(westDir, ['--name', 'west', '--link', westLink]);
    await cli(east, 'pair', 'wait', 'db', '--until', 'synchronized', '--timeout', '60');

    // Bad input: a clear error, nothing else.
    const bad = await api<{ error: { code: string } }>(east, 'GET', '/v1/events?waitMs=999999');
    assert.equal(bad.status, 400);
    assert.equal(bad.body.error.code, 'TM_ERR_INVALID_ARGUMENT');
    assert.equal((await api(east, 'GET', '/v1/events', undefined, undefined, { authorization: 'Bearer nope' })).status, 401);
  } finally {
    await fixture.cleanup();
  }
});
