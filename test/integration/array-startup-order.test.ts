// A restarted array answers its peers from its loaded state. Found by the cascade's kill -9 test:
// B (the R2 of a sync pair) restarted, its link to A came up while B was still reading its records,
// A asked for B's half of the pair at once, was told "no half of this pair", and the pair stayed
// partitioned for good. Here B's data directory (made by real daemons) is reopened with links that
// deliver A's question the very instant B gives the links its peers: the earliest a real link can
// carry it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { DaemonFixture, api, peerUp, tidemarkBin } from '../helpers/daemon.js';
import { mustRun, startTestArray } from '../helpers/in-process-array.js';
import { decodeMessage, encodeMessage } from '../../src/core/replication/peer-messages.js';
import { NO_LINKS, type PeerLinks } from '../../src/ports/peer-transport.js';

const MiB = 1024 * 1024;

/** Links on which `asker` is up as soon as it is added and at once sends `question`; replies are collected. */
function askingLinks(asker: string, question: Record<string, unknown>, replies: Array<Record<string, unknown>>): PeerLinks {
  const handlers: Array<(peer: string, message: Uint8Array) => void> = [];
  let up = false;
  return {
    ...NO_LINKS,
    isUp: (peer) => up && peer === asker,
    peerState: (peer) => (up && peer === asker ? 'up' : 'unknown'),
    onMessage: (h) => { handlers.push(h); },
    send: async (peer, bytes) => {
      const m = decodeMessage(bytes);
      if (peer === asker && m.type === 'response') replies.push(m.header);
    },
    addPeer: (peer) => {
      if (peer.name !== asker) return;
      up = true;
      const message = encodeMessage({ type: 'request', id: 1, header: { ...question, rpc: 'startup-order-test' }, segments: [] });
      for (const h of handlers) h(asker, message);
    },
  };
}

test('a restarted R2 asked for its half of the pair the instant its link comes up answers that it has it', async () => {
  const fixture = await DaemonFixture.create();
  try {
    const [a, b] = await Promise.all([
      fixture.start(join(fixture.dir, 'a'), ['--name', 'a', '--link', '127.0.0.1:0']),
      fixture.start(join(fixture.dir, 'b'), ['--name', 'b', '--link', '127.0.0.1:0']),
    ]);
    await peerUp(fixture, a, 'a', b, 'b');
    const cli = (array: typeof a, ...args: string[]): Promise<string> => mustRun(tidemarkBin, [...array.cliArgs, '--json', ...args]);
    await cli(a, 'volume', 'create', 'db', '--size', String(4 * MiB));
    await cli(b, 'volume', 'create', 'db-r', '--size', String(4 * MiB));
    await cli(a, 'pair', 'create', 'db', '--peer', 'b', '--remote-volume', 'db-r', '--mode', 'sync');
    await cli(a, 'pair', 'wait', 'db', '--until', 'synchronized', '--timeout', '60');
    const pairId = (await api<{ id: string }>(a, 'GET', '/v1/pairs/db')).body.id;
    await a.stop();
    await b.stop('SIGKILL');

    const replies: Array<Record<string, unknown>> = [];
    const restarted = await startTestArray({ name: 'b', dir: b.dataDir, links: askingLinks('a', { op: 'pair.status', pair: pairId }, replies) });
    try {
      for (let i = 0; i < 100 && replies.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
      assert.equal(replies.length, 1, 'B answered A');
      assert.equal(replies[0]!.ok, true, JSON.stringify(replies[0]));
      assert.equal(replies[0]!.exists, true, `B says it has its half of pair ${pairId}: ${JSON.stringify(replies[0])}`);
      assert.equal(replies[0]!.role, 'R2');
      assert.equal(replies[0]!.intent, 'replicating');
    } finally {
      await restarted.crash();
    }
  } finally {
    await fixture.cleanup();
  }
});
