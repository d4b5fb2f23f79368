// What `tidemark status` prints for an estate with links up and down, an async pair in a group
// and a group whose coordinator cannot be reached (the daemon test covers the rest).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { printEstate, type Estate } from '../../src/cli/status-command.js';

function captured(run: () => void): string {
  const write = process.stdout.write.bind(process.stdout);
  let out = '';
  process.stdout.write = ((chunk: string) => { out += chunk; return true; }) as typeof process.stdout.write;
  try {
    run();
  } finally {
    process.stdout.write = write;
  }
  return out;
}

test('status: one screen with the array, links, pairs (cycles, group) and groups with their problems', () => {
  const estate: Estate = {
    at: '2026-12-03T18:00:00.000Z',
    array: { name: 'east', version: '0.1.0', startedAt: '2026-12-03T17:00:00.000Z', uptimeSeconds: 3725, api: { host: '127.0.0.1', port: 7480 }, nbd: { tcp: null, socket: null }, volumeCount: 3 },
    arrays: [{ name: 'east', self: true, reachable: true }, { name: 'west', self: false, reachable: true }, { name: 'far', self: false, reachable: false }],
    links: [
      { peer: 'west', address: '10.0.0.2:7481', via: null, link: 'up', sentBytesPerSecond: 2 * 1024 * 1024, receivedBytesPerSecond: 512, rttMs: 1.5, lastError: null },
      { peer: 'far', address: '10.0.0.3:7481', via: null, link: 'down', sentBytesPerSecond: null, receivedBytesPerSecond: null, rttMs: null, lastError: 'connect ECONNREFUSED' },
    ],
    pairs: [
      { pair: 'db', volume: 'db', role: 'R1', mode: 'sync', state: 'synchronized', peer: 'west', remoteVolume: 'db-r', tracksOwed: 0, bytesOwed: 0, lagSeconds: 0, group: null, lastError: null, cycles: null },
      { pair: 'logs', volume: 'logs', role: 'R1', mode: 'async', state: 'partitioned', peer: 'far', remoteVolume: 'logs-r', tracksOwed: 12, bytesOwed: 12 * 65536, lagSeconds: 42.25, group: 'shop', lastError: 'link to far is down', cycles: { captureCycle: 17, transmitCycle: 16, appliedCycle: 14 } },
    ],
    groups: [{ name: 'shop', coordinator: 'far', members: 2, phase: null, tag: null, lagSeconds: null, stalled: null, error: 'cannot reach far' }],
    journals: [], migrations: [], imports: [], cascades: [],
  };
  const screen = captured(() => printEstate(estate));
  assert.match(screen, /^array east {2}tidemark 0\.1\.0 {2}up 1h02m {2}api 127\.0\.0\.1:7480 {2}3 volume\(s\)$/m);
  assert.match(screen, /^west +10\.0\.0\.2:7481 +up +1\.50 ms +2 MiB\/s +512 B\/s\s*$/m);
  assert.match(screen, /^far +10\.0\.0\.3:7481 +down +- +- +- +connect ECONNREFUSED$/m);
  assert.match(screen, /^db +db +R1 +sync +synchronized +west\/db-r +0 tracks \(0 B\) +0\.0 s +-\s*$/m);
  assert.match(screen, /^logs +logs +R1 +async +partitioned +far\/logs-r +12 tracks \(768 KiB\) +42\.3 s +17\/16\/14 +shop$/m);
  assert.match(screen, /^shop +far +2 +- +- +- +cannot reach far$/m);
  assert.match(screen, /^pair logs: link to far is down$/m);
  assert.doesNotMatch(screen, /JOURNAL|MOVE|CASCADE/, 'a kind the array has none of prints nothing');
});

test('status: journals, migrations and imports, cascades; a relayed link shows its relay', () => {
  const estate: Estate = {
    at: '2026-12-03T18:00:00.000Z',
    array: { name: 'east', version: '0.1.0', startedAt: '2026-12-03T17:59:00.000Z', uptimeSeconds: 60, api: { host: '127.0.0.1', port: 7480 }, nbd: { tcp: null, socket: null }, volumeCount: 6 },
    arrays: [{ name: 'east', self: true, reachable: true }, { name: 'west', self: false, reachable: true }, { name: 'north', self: false, reachable: false }],
    links: [
      { peer: 'west', address: '10.0.0.2:7481', via: null, link: 'up', sentBytesPerSecond: 0, receivedBytesPerSecond: 0, rttMs: 2, lastError: null },
      { peer: 'north', address: 'relay:west', via: 'west', link: 'down', sentBytesPerSecond: null, receivedBytesPerSecond: null, rttMs: null, lastError: null },
    ],
    pairs: [],
    groups: [],
    journals: [{
      name: 'orders', roles: ['sequencer', 'primary'], sequencer: 'east', sequence: { issued: 120, sent: 118, received: null, applied: null },
      lag: { entries: 2, bytes: 8192, seconds: 0.25 }, queue: { waitingWrites: 1, bufferedBytes: 4096, unackedMessages: 3 },
      members: [{ array: 'north', link: 'down' }, { array: 'west', link: 'up' }], blocked: null,
    }, {
      name: 'audit', roles: ['secondary'], sequencer: 'west', sequence: { issued: null, sent: null, received: 40, applied: 31 },
      lag: null, queue: null, members: [{ array: 'west', link: 'up' }], blocked: 'at 32: data from west',
    }],
    migrations: [{ volume: 'db', target: 'db-new', state: 'copying', servedFrom: 'old', tracksLeft: 100, trackCount: 400, percent: 75, bytesPerSecond: 2 * 1024 * 1024, etaSeconds: 3 }],
    imports: [{ name: 'vm7', source: 'nbd://old:10809/vm7', state: 'copied', sourceConnected: false, tracksLeft: 0, trackCount: 64, percent: 100, bytesPerSecond: 0, etaSeconds: 0, lastError: 'connection reset' }],
    cascades: [{ name: 'far', volume: 'db-r', peer: 'north', remoteVolume: 'db-c', phase: 'shipping', cycles: 7, bytesShipped: 3 * 1024 * 1024, consistentAt: '2026-12-03T17:59:30.000Z', nextDueAt: null, lastError: 'link to north is down' }],
  };
  const screen = captured(() => printEstate(estate));
  assert.match(screen, /^north +via west +down +- +- +-\s*$/m);
  assert.match(screen, /^JOURNAL +ROLES +ISSUED +SENT +RECEIVED +APPLIED +LAG +QUEUE +MEMBERS$/m);
  assert.match(screen, /^orders +sequencer,primary +120 +118 +- +- +2 \(8 KiB, 0\.3 s\) +1 w, 4 KiB, 3 unacked +north:down west:up$/m);
  assert.match(screen, /^audit +secondary +- +- +40 +31 +- +- +west:up$/m);
  assert.match(screen, /^journal audit: blocked at 32: data from west$/m);
  assert.match(screen, /^migration +db +copying +onto db-new \(served from old\) +100\/400 +75% +2 MiB\/s +3s$/m);
  assert.match(screen, /^import +vm7 +copied +nbd:\/\/old:10809\/vm7 \(disconnected\) +0\/64 +100% +0 B\/s +0s$/m);
  assert.match(screen, /^import vm7: connection reset$/m);
  assert.match(screen, /^far +db-r +north\/db-c +shipping +7 +3 MiB +2026-12-03T17:59:30\.000Z +-$/m);
  assert.match(screen, /^cascade far: link to north is down$/m);
});
