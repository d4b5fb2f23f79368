// Relay tunnels between three LinkNetwork instances over loopback TCP: alpha and charlie are each
// other's peers only through mid (their link runs end to end inside tunnels mid carries over its
// own links). Checks delivery, backpressure through a relay slower than the sender, that mid sees
// none of the plaintext, that a byte mid alters is detected, that a wrong end-to-end secret is
// refused although mid is a good peer of both, and that losing mid takes the link down until it is back.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LinkNetwork, type LinkNetworkOptions } from '../../src/adapters/net/link-network.js';
import { relayAddress } from '../../src/core/link/tunnel-codec.js';

const MiB = 1024 * 1024;
const enc = new TextEncoder();
const SECRET_AM = enc.encode('alpha and mid share this secret');
const SECRET_MC = enc.encode('mid and charlie share this one');
const SECRET_AC = enc.encode('alpha and charlie, end to end');
const PATTERN = 'HOST-DATA-THE-RELAY-MUST-NEVER-SEE.';

async function waitFor(what: string, predicate: () => boolean, timeoutMs = 20_000): Promise<void> {
  const start = Date.now();
  while (!predicate()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

type Forward = (from: string, to: string, data: Uint8Array) => Uint8Array;
/** Replaces the relay's pass-through seam (LinkTunnels.forward) to read or alter what it carries. */
const onRelay = (network: LinkNetwork, forward: Forward): void => {
  (network.tunnels as unknown as { forward: Forward }).forward = forward;
};

interface Trio {
  alpha: LinkNetwork;
  mid: LinkNetwork;
  charlie: LinkNetwork;
  atCharlie: Uint8Array[];
  atAlpha: Uint8Array[];
  events: string[];
  startMid(port?: number): Promise<LinkNetwork>;
  close(): Promise<void>;
}

const common: Partial<LinkNetworkOptions> = { heartbeatIntervalMs: 100, deadAfterMs: 1500, carryTunnels: true };

async function startTrio(charlieSecretForAlpha = SECRET_AC): Promise<Trio> {
  const alpha = await LinkNetwork.start({ arrayName: 'alpha', listen: { host: '127.0.0.1', port: 0 }, ...common });
  const charlie = await LinkNetwork.start({ arrayName: 'charlie', listen: { host: '127.0.0.1', port: 0 }, ...common });
  const trio: Trio = {
    alpha, charlie, mid: undefined as unknown as LinkNetwork, atCharlie: [], atAlpha: [], events: [],
    async startMid(port = 0) {
      const mid = await LinkNetwork.start({ arrayName: 'mid', listen: { host: '127.0.0.1', port }, ...common });
      mid.addPeer({ name: 'alpha', address: `127.0.0.1:${alpha.address!.port}`, secret: SECRET_AM });
      mid.addPeer({ name: 'charlie', address: `127.0.0.1:${charlie.address!.port}`, secret: SECRET_MC });
      trio.mid = mid;
      return mid;
    },
    async close() {
      await Promise.all([alpha.close(), trio.mid.close(), charlie.close()]);
    },
  };
  const mid = await trio.startMid();
  alpha.addPeer({ name: 'mid', address: `127.0.0.1:${mid.address!.port}`, secret: SECRET_AM });
  alpha.addPeer({ name: 'charlie', address: relayAddress('mid'), secret: SECRET_AC });
  charlie.addPeer({ name: 'mid', address: `127.0.0.1:${mid.address!.port}`, secret: SECRET_MC });
  charlie.addPeer({ name: 'alpha', address: relayAddress('mid'), secret: charlieSecretForAlpha });
  charlie.onMessage((peer, m) => { if (peer === 'alpha') trio.atCharlie.push(m.slice()); });
  alpha.onMessage((peer, m) => { if (peer === 'charlie') trio.atAlpha.push(m.slice()); });
  for (const [name, n] of [['alpha', alpha], ['charlie', charlie]] as const) {
    n.onPeerUp((p) => trio.events.push(`${name}: ${p} up`));
    n.onPeerDown((p) => trio.events.push(`${name}: ${p} down`));
  }
  return trio;
}

/** A message whose every byte is the pattern, numbered so order and duplicates show. */
function message(i: number, bytes: number): Uint8Array {
  const m = Buffer.alloc(bytes);
  m.write(PATTERN.repeat(Math.ceil(bytes / PATTERN.length)).slice(0, bytes), 0, 'latin1');
  m.writeUInt32BE(i, 0);
  return m;
}

test('alpha and charlie talk through mid: both ways, in order, big messages, mid sees no plaintext', { timeout: 60_000 }, async () => {
  const t = await startTrio();
  const seen: Buffer[] = [];
  onRelay(t.mid, (_from, _to, data) => { seen.push(Buffer.from(data)); return data; });
  try {
    await waitFor('alpha–charlie through mid', () => t.alpha.isUp('charlie') && t.charlie.isUp('alpha'));
    assert.equal(t.alpha.peer('charlie')!.address, 'relay:mid');
    const sizes = [8, 4096, 3 * MiB, 100, 2 * MiB + 17];
    for (const [i, n] of sizes.entries()) await t.alpha.send('charlie', message(i, n));
    await t.charlie.send('alpha', message(99, 64 * 1024));
    await waitFor('all delivered', () => t.atCharlie.length === sizes.length && t.atAlpha.length === 1);
    for (const [i, n] of sizes.entries()) assert.ok(Buffer.from(t.atCharlie[i]!).equals(message(i, n)), `message ${i} intact and in order`);
    assert.ok(Buffer.from(t.atAlpha[0]!).equals(message(99, 64 * 1024)));
    const carried = Buffer.concat(seen);
    assert.ok(carried.length > 5 * MiB, `mid carried the traffic (${carried.length} bytes)`);
    assert.equal(t.mid.tunnels.stats().relayedBytes, carried.length);
    // What the relay holds in clear (after its own links' decryption) is A–C ciphertext only.
    assert.equal(carried.indexOf(PATTERN.slice(4, 20)), -1, 'the relay never saw the plaintext');
    assert.ok(!carried.includes('HOST-DATA'), 'not even a fragment of it');
    // The relay is no peer of either for the application: it delivered nothing to itself.
    assert.equal(t.mid.peers().length, 2);
  } finally {
    await t.close();
  }
});

test('40 MiB through the relay, ten times the tunnel window: credits bound what mid holds ahead of charlie, and the tunnel never resets', { timeout: 120_000 }, async () => {
  const t = await startTrio();
  let maxAhead = 0;
  let carried = 0;
  let delivered = 0;
  t.charlie.onMessage((peer, m) => { if (peer === 'alpha') delivered += m.length; });
  onRelay(t.mid, (from, _to, data) => {
    if (from === 'alpha') carried += data.length;
    maxAhead = Math.max(maxAhead, carried - delivered);
    return data;
  });
  try {
    await waitFor('up', () => t.alpha.isUp('charlie'));
    const chunk = message(1, 2 * MiB);
    const sends: Promise<void>[] = [];
    for (let i = 0; i < 20; i++) sends.push(t.alpha.send('charlie', chunk));
    await Promise.all(sends);
    await waitFor('40 MiB delivered', () => t.atCharlie.length === 20, 90_000);
    assert.ok(!t.events.includes('alpha: charlie down'), 'the tunnel never reset (the relay never saw its window exceeded)');
    assert.equal(t.alpha.peer('charlie')!.retransmittedPackets, 0);
    assert.ok(maxAhead <= 4 * MiB + 2 * MiB, `bytes passed by mid and not yet delivered stayed bounded (max ${maxAhead})`);
  } finally {
    await t.close();
  }
});

test('a byte altered by the relay is detected end to end: the connection resets, nothing altered is delivered, the session resumes', { timeout: 60_000 }, async () => {
  const t = await startTrio();
  try {
    await waitFor('up', () => t.alpha.isUp('charlie'));
    let tampered = 0;
    onRelay(t.mid, (from, _to, data) => {
      if (from !== 'alpha' || tampered > 0 || data.length < 1000) return data;
      tampered++;
      const altered = Buffer.from(data);
      altered[altered.length - 100]! ^= 0x01;
      return altered;
    });
    for (let i = 0; i < 5; i++) await t.alpha.send('charlie', message(i, 256 * 1024));
    await waitFor('delivered after the reset', () => t.atCharlie.length === 5, 30_000);
    assert.equal(tampered, 1);
    for (let i = 0; i < 5; i++) assert.ok(Buffer.from(t.atCharlie[i]!).equals(message(i, 256 * 1024)), `message ${i} exactly once, unaltered`);
    assert.match(t.charlie.peer('alpha')!.lastError ?? '', /authentication failed|out of order|replayed/, 'charlie noticed the altered frame');
  } finally {
    await t.close();
  }
});

test('a wrong end-to-end secret is refused although the relay is a good peer of both', { timeout: 30_000 }, async () => {
  const t = await startTrio(enc.encode('charlie thinks this is the secret'));
  try {
    await waitFor('auth failure', () => t.alpha.peer('charlie')!.state === 'auth-failed' || t.charlie.peer('alpha')!.state === 'auth-failed');
    await t.alpha.send('charlie', message(1, 100)).catch(() => undefined);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(t.atCharlie.length, 0);
    assert.ok(t.mid.isUp('alpha') && t.mid.isUp('charlie'), 'the relay links are fine');
  } finally {
    await t.close();
  }
});

test('losing the relay takes the relayed link down; it comes back with the relay, and queued messages arrive', { timeout: 60_000 }, async () => {
  const t = await startTrio();
  try {
    await waitFor('up', () => t.alpha.isUp('charlie'));
    const port = t.mid.address!.port;
    await t.mid.close();
    await waitFor('alpha sees charlie down', () => t.alpha.peer('charlie')!.state === 'down');
    assert.ok(t.events.includes('alpha: charlie down'));
    const queued = t.alpha.send('charlie', message(7, 1000));
    await t.startMid(port);
    await waitFor('back up through the new relay', () => t.alpha.isUp('charlie') && t.charlie.isUp('alpha'), 30_000);
    await queued;
    await waitFor('queued message delivered', () => t.atCharlie.length === 1);
    assert.ok(Buffer.from(t.atCharlie[0]!).equals(message(7, 1000)));
  } finally {
    await t.close();
  }
});

test('the relay refuses a tunnel to an array that is not its direct peer, and says why', { timeout: 30_000 }, async () => {
  const t = await startTrio();
  try {
    await waitFor('up', () => t.alpha.isUp('charlie'));
    t.alpha.addPeer({ name: 'delta', address: relayAddress('mid'), secret: SECRET_AC });
    await waitFor('refused by mid', () => /relay has no direct peer named delta/.test(t.alpha.peer('delta')!.lastError ?? ''));
    assert.notEqual(t.alpha.peer('delta')!.state, 'up');
    assert.ok(t.alpha.isUp('charlie'), 'the other tunnel is untouched');
  } finally {
    await t.close();
  }
});

test('a relayed peer needs its relay to be a direct peer, and a network that carries tunnels', { timeout: 30_000 }, async () => {
  const plain = await LinkNetwork.start({ arrayName: 'plain' });
  const n = await LinkNetwork.start({ arrayName: 'solo', ...common });
  try {
    plain.addPeer({ name: 'near', address: '127.0.0.1:9', secret: SECRET_AM });
    assert.throws(() => plain.addPeer({ name: 'far', address: relayAddress('near'), secret: SECRET_AC }), /does not carry relay tunnels/);
    assert.throws(() => n.addPeer({ name: 'far', address: relayAddress('nobody'), secret: SECRET_AC }), /must be a peer reached directly/);
    n.addPeer({ name: 'near', address: '127.0.0.1:9', secret: SECRET_AM });
    n.addPeer({ name: 'far', address: relayAddress('near'), secret: SECRET_AC });
    assert.throws(() => n.addPeer({ name: 'farther', address: relayAddress('far'), secret: SECRET_AC }), /must be a peer reached directly/);
  } finally {
    await Promise.all([n.close(), plain.close()]);
  }
});
