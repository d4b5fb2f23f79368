// Requests and responses between arrays: an answer meant for an earlier incarnation of the
// requesting array (found by pair seed 203: it acknowledged a forwarded write that was never applied).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { inProcessLinks } from '../../src/sim/sim-links.js';
import { PeerRpc } from '../../src/app/replication/peer-rpc.js';

const SECRET = new Uint8Array(16);

test('an answer to a request of an earlier incarnation is never taken for a new request with the same id', async () => {
  const hub = inProcessLinks();
  const west = hub.endpoint('west');
  west.addPeer({ name: 'east', address: '-', secret: SECRET });
  const westRpc = new PeerRpc(west, () => undefined);
  let releaseSlow!: () => void;
  const slowStarted = new Promise<void>((started) => {
    westRpc.handle('group.locate', () => new Promise((resolve) => {
      started();
      releaseSlow = () => resolve({ header: { coordinates: false }, segments: [] });
    }));
  });
  westRpc.handle('group.is-member', async () => ({ header: { member: true }, segments: [] }));

  const east1 = hub.endpoint('east');
  east1.addPeer({ name: 'west', address: '-', secret: SECRET });
  const rpc1 = new PeerRpc(east1, () => undefined, undefined, 'east-1');
  const old = rpc1.request('west', { op: 'group.locate', group: 'g' });
  old.catch(() => undefined);
  await slowStarted;

  // East restarts: a new incarnation whose first request reuses id 1.
  rpc1.close();
  const east2 = hub.endpoint('east');
  east2.addPeer({ name: 'west', address: '-', secret: SECRET });
  const rpc2 = new PeerRpc(east2, () => undefined, undefined, 'east-2');
  const fresh = rpc2.request('west', { op: 'group.is-member', group: 'g', member: 'east/v' });
  releaseSlow(); // west answers the old request now, to the new incarnation
  const reply = await fresh;
  assert.equal(reply.header.member, true);
});
