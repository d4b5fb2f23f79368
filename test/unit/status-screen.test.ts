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
      { peer: 'west', address: '10.0.0.2:7481', link: 'up', sentBytesPerSecond: 2 * 1024 * 1024, receivedBytesPerSecond: 512, rttMs: 1.5, lastError: null },
      { peer: 'far', address: '10.0.0.3:7481', link: 'down', sentBytesPerSecond: null, receivedBytesPerSecond: null, rttMs: null, lastError: 'connect ECONNREFUSED' },
    ],
    pairs: [
      { pair: 'db', volume: 'db', role: 'R1', mode: 'sync', state: 'synchronized', peer: 'west', remoteVolume: 'db-r', tracksOwed: 0, bytesOwed: 0, lagSeconds: 0, group: null, lastError: null, cycles: null },
      { pair: 'logs', volume: 'logs', role: 'R1', mode: 'async', state: 'partitioned', peer: 'far', remoteVolume: 'logs-r', tracksOwed: 12, bytesOwed: 12 * 65536, lagSeconds: 42.25, group: 'shop', lastError: 'link to far is down', cycles: { captureCycle: 17, transmitCycle: 16, appliedCycle: 14 } },
    ],
    groups: [{ name: 'shop', coordinator: 'far', members: 2, phase: null, tag: null, lagSeconds: null, stalled: null, error: 'cannot reach far' }],
  };
  const screen = captured(() => printEstate(estate));
  assert.match(screen, /^array east {2}tidemark 0\.1\.0 {2}up 1h02m {2}api 127\.0\.0\.1:7480 {2}3 volume\(s\)$/m);
  assert.match(screen, /^west +10\.0\.0\.2:7481 +up +1\.50 ms +2 MiB\/s +512 B\/s\s*$/m);
  assert.match(screen, /^far +10\.0\.0\.3:7481 +down +- +- +- +connect ECONNREFUSED$/m);
  assert.match(screen, /^db +db +R1 +sync +synchronized +west\/db-r +0 tracks \(0 B\) +0\.0 s +-\s*$/m);
  assert.match(screen, /^logs +logs +R1 +async +partitioned +far\/logs-r +12 tracks \(768 KiB\) +42\.3 s +17\/16\/14 +shop$/m);
  assert.match(screen, /^shop +far +2 +- +- +- +cannot reach far$/m);
  assert.match(screen, /^pair logs: link to far is down$/m);
});
