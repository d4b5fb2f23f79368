// Two LinkNetwork instances in one process over real loopback TCP. A small TCP proxy sits between
// them where a test needs to kill connections mid-transfer.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { randomBytes } from 'node:crypto';
import { LinkNetwork, type LinkNetworkOptions } from '../../src/adapters/net/link-network.js';
import { isTidemarkError } from '../../src/core/errors.js';

const MiB = 1024 * 1024;
const SECRET = new TextEncoder().encode('integration-test shared secret');

async function waitFor(what: string, predicate: () => boolean, timeoutMs = 15_000): Promise<void> {
  const start = Date.now();
  while (!predicate()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Forwards connections to a target port; kill() destroys the live ones like a network reset. */
class Proxy {
  readonly pairs = new Set<[Socket, Socket]>();
  private constructor(private readonly server: Server, readonly port: number) {}

  static async start(targetPort: number): Promise<Proxy> {
    const server = createServer();
    const ready = new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    await ready;
    const address = server.address();
    assert.ok(address && typeof address === 'object');
    const proxy = new Proxy(server, address.port);
    server.on('connection', (client) => {
      const upstream = connect(targetPort, '127.0.0.1');
      const pair: [Socket, Socket] = [client, upstream];
      proxy.pairs.add(pair);
      client.pipe(upstream);
      upstream.pipe(client);
      const drop = (): void => { client.destroy(); upstream.destroy(); proxy.pairs.delete(pair); };
      client.on('error', drop).on('close', drop);
      upstream.on('error', drop).on('close', drop);
    });
    return proxy;
  }

  kill(count = Number.POSITIVE_INFINITY): number {
    let killed = 0;
    for (const pair of [...this.pairs]) {
      if (killed >= count) break;
      killed++;
      pair[0].destroy();
      pair[1].destroy();
      this.pairs.delete(pair);
    }
    return killed;
  }

  async close(): Promise<void> {
    this.kill();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

interface Pair {
  alpha: LinkNetwork;
  beta: LinkNetwork;
  proxy: Proxy | undefined;
  atBeta: Uint8Array[];
  atAlpha: Uint8Array[];
  events: string[];
  close(): Promise<void>;
}

async function startPair(options: { streams?: number; betaSecret?: Uint8Array; viaProxy?: boolean } = {}): Promise<Pair> {
  const common: Partial<LinkNetworkOptions> = { heartbeatIntervalMs: 100, deadAfterMs: 1500 };
  const alpha = await LinkNetwork.start({ arrayName: 'alpha', listen: { host: '127.0.0.1', port: 0 }, ...common, streams: options.streams ?? 1 });
  const beta = await LinkNetwork.start({ arrayName: 'beta', listen: { host: '127.0.0.1', port: 0 }, ...common });
  const proxy = options.viaProxy ? await Proxy.start(beta.address!.port) : undefined;
  const pair: Pair = {
    alpha, beta, proxy, atBeta: [], atAlpha: [], events: [],
    async close() {
      await alpha.close();
      await beta.close();
      await proxy?.close();
    },
  };
  beta.onMessage((peer, m) => { assert.equal(peer, 'alpha'); pair.atBeta.push(m); });
  alpha.onMessage((peer, m) => { assert.equal(peer, 'beta'); pair.atAlpha.push(m); });
  for (const [name, net] of [['alpha', alpha], ['beta', beta]] as const) {
    net.onPeerUp((p) => pair.events.push(`${name}: up ${p}`));
    net.onPeerDown((p) => pair.events.push(`${name}: down ${p}`));
    net.onSessionReset((p) => pair.events.push(`${name}: reset ${p}`));
  }
  alpha.addPeer({ name: 'beta', address: `127.0.0.1:${proxy?.port ?? beta.address!.port}`, secret: SECRET });
  beta.addPeer({ name: 'alpha', address: `127.0.0.1:${alpha.address!.port}`, secret: options.betaSecret ?? SECRET });
  return pair;
}

function sameMessages(actual: readonly Uint8Array[], expected: readonly Uint8Array[]): void {
  assert.equal(actual.length, expected.length, 'message count');
  for (let i = 0; i < expected.length; i++) {
    assert.ok(Buffer.from(actual[i]!.buffer, actual[i]!.byteOffset, actual[i]!.length).equals(expected[i]!), `message ${i} differs`);
  }
}

function randomMessages(count: number, maxBytes: number): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < count; i++) out.push(randomBytes(Math.floor(Math.random() * maxBytes)));
  return out;
}

test('authenticated exchange of many messages both ways, including 4 MiB ones', async () => {
  const p = await startPair();
  try {
    const toBeta = randomMessages(300, 64 * 1024);
    toBeta.splice(100, 0, randomBytes(4 * MiB));
    toBeta.splice(200, 0, randomBytes(4 * MiB), randomBytes(4 * MiB), Buffer.alloc(0));
    const toAlpha = randomMessages(100, 300_000);
    await Promise.all([
      (async () => { for (const m of toBeta) await p.alpha.send('beta', m); })(),
      (async () => { for (const m of toAlpha) await p.beta.send('alpha', m); })(),
    ]);
    await waitFor('all messages', () => p.atBeta.length === toBeta.length && p.atAlpha.length === toAlpha.length);
    sameMessages(p.atBeta, toBeta);
    sameMessages(p.atAlpha, toAlpha);
    assert.equal(p.alpha.isUp('beta'), true);
    const stats = p.alpha.peer('beta')!;
    assert.equal(stats.state, 'up');
    assert.equal(stats.messagesSent, toBeta.length);
    assert.equal(stats.messagesReceived, toAlpha.length);
    assert.ok(stats.bytesSent > 12 * MiB);
    assert.equal(p.beta.peer('alpha')!.sessionId, stats.sessionId);
    assert.deepEqual(p.events.filter((e) => e.includes('up')).sort(), ['alpha: up beta', 'beta: up alpha']);
    await waitFor('acks', () => p.alpha.peer('beta')!.unackedBytes === 0);
    await assert.rejects(p.alpha.send('nobody', new Uint8Array(1)), (e) => isTidemarkError(e, 'TM_ERR_NOT_FOUND'));
  } finally {
    await p.close();
  }
});

test('a wrong secret never delivers anything', async () => {
  const p = await startPair({ betaSecret: new TextEncoder().encode('some other secret, not shared') });
  try {
    await p.alpha.send('beta', new TextEncoder().encode('must not arrive'));
    await waitFor('auth failure', () => p.alpha.peer('beta')!.state === 'auth-failed' && p.beta.peer('alpha')!.state === 'auth-failed');
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(p.atBeta, []);
    assert.deepEqual(p.atAlpha, []);
    assert.equal(p.events.length, 0, 'never up');
    assert.match(p.alpha.peer('beta')!.lastError!, /authentication failed/);
  } finally {
    await p.close();
  }
});

test('killing the connection mid-transfer: reconnect, no loss, no duplicates', async () => {
  const p = await startPair({ viaProxy: true });
  try {
    await waitFor('link up', () => p.alpha.isUp('beta'));
    const sent = randomMessages(60, 600 * 1024);
    const sending = (async () => { for (const m of sent) await p.alpha.send('beta', m); })();
    sending.catch(() => { /* reported by the await below, or moot once the test failed */ });
    for (const threshold of [5, 20, 40]) {
      await waitFor(`${threshold} delivered`, () => p.atBeta.length >= threshold);
      assert.ok(p.proxy!.kill() > 0);
    }
    await sending;
    await waitFor('all delivered', () => p.atBeta.length === sent.length, 30_000);
    sameMessages(p.atBeta, sent);
    await waitFor('acks', () => p.alpha.peer('beta')!.unackedBytes === 0);
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(p.atBeta.length, sent.length, 'nothing delivered twice later');
    assert.ok(p.events.includes('alpha: down beta'));
    assert.ok(!p.events.some((e) => e.includes('reset')), 'the session survived');
    assert.ok(p.alpha.isUp('beta'));
  } finally {
    await p.close();
  }
});

test('two parallel streams carry one in-order session, and survive losing one stream', async () => {
  const p = await startPair({ viaProxy: true, streams: 2 });
  try {
    await waitFor('two streams', () => p.alpha.peer('beta')?.connections === 2);
    assert.equal(p.proxy!.pairs.size, 2);
    const sent = randomMessages(400, 200 * 1024);
    const sending = (async () => { for (const m of sent) await p.alpha.send('beta', m); })();
    sending.catch(() => { /* reported by the await below, or moot once the test failed */ });
    await waitFor('some delivered', () => p.atBeta.length >= 100);
    assert.equal(p.proxy!.kill(1), 1);
    await sending;
    await waitFor('all delivered', () => p.atBeta.length === sent.length, 30_000);
    sameMessages(p.atBeta, sent);
    await waitFor('two streams again', () => p.alpha.peer('beta')?.connections === 2);
    assert.ok(p.alpha.peer('beta')!.packetsSent > sent.length);
  } finally {
    await p.close();
  }
});

test('close() is clean: sends reject, the listener is gone, the peer sees the link down', async () => {
  const p = await startPair();
  try {
    await waitFor('link up', () => p.alpha.isUp('beta') && p.beta.isUp('alpha'));
    const port = p.alpha.address!.port;
    await p.alpha.close();
    await p.alpha.close(); // idempotent
    await assert.rejects(p.alpha.send('beta', new Uint8Array(1)), (e) => isTidemarkError(e, 'TM_ERR_LINK_DOWN'));
    await waitFor('beta sees alpha down', () => !p.beta.isUp('alpha'));
    assert.ok(p.events.includes('beta: down alpha'));
    await assert.rejects(new Promise((resolve, reject) => {
      const s = connect(port, '127.0.0.1');
      s.once('connect', () => { s.destroy(); resolve(undefined); });
      s.once('error', reject);
    }), /ECONNREFUSED/);
  } finally {
    await p.close();
  }
});

test('sends beyond the window wait (backpressure) and resolve as the peer acknowledges', async () => {
  const p = await startPair();
  try {
    await waitFor('link up', () => p.alpha.isUp('beta'));
    // Eight 4 MiB messages exceed the 16 MiB window: the later sends resolve only after acks.
    const sent = Array.from({ length: 8 }, () => randomBytes(4 * MiB));
    let resolved = 0;
    const all = sent.map((m) => p.alpha.send('beta', m).then(() => { resolved++; }));
    await new Promise((r) => setImmediate(r));
    assert.ok(resolved < sent.length, `only part fits the window at once (${resolved})`);
    assert.ok(p.alpha.peer('beta')!.unackedBytes <= 16 * MiB + 1024);
    await Promise.all(all);
    await waitFor('all delivered', () => p.atBeta.length === sent.length);
    sameMessages(p.atBeta, sent);
  } finally {
    await p.close();
  }
});

test('garbage from an unauthenticated client is dropped without disturbing the link', async () => {
  const p = await startPair();
  try {
    await waitFor('link up', () => p.alpha.isUp('beta'));
    for (const junk of [randomBytes(4096), Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'), Buffer.alloc(100)]) {
      const closed = await new Promise<boolean>((resolve) => {
        const s = connect(p.beta.address!.port, '127.0.0.1', () => s.write(junk));
        s.on('error', () => resolve(true));
        s.on('close', () => resolve(true));
        s.resume();
        setTimeout(() => { s.destroy(); resolve(false); }, 3000).unref();
      });
      assert.equal(closed, true, 'the listener hangs up on garbage');
    }
    await p.alpha.send('beta', Buffer.from('still fine'));
    await waitFor('delivery', () => p.atBeta.length === 1);
    assert.equal(Buffer.from(p.atBeta[0]!).toString(), 'still fine');
    assert.equal(p.alpha.peer('beta')!.connections, 1, 'the real link was never dropped');
  } finally {
    await p.close();
  }
});

test('removing a peer rejects the sends waiting for its window', async () => {
  const p = await startPair({ betaSecret: new TextEncoder().encode('mismatch so nothing is ever acknowledged') });
  try {
    const sends = Array.from({ length: 6 }, () => p.alpha.send('beta', randomBytes(4 * MiB)).then(() => 'queued', (e: unknown) => (e as { code?: string }).code));
    await new Promise((r) => setImmediate(r));
    p.alpha.removePeer('beta');
    const results = await Promise.all(sends);
    assert.ok(results.includes('queued'));
    assert.ok(results.includes('TM_ERR_LINK_DOWN'));
    assert.equal(p.alpha.peer('beta'), undefined);
    assert.throws(() => p.alpha.removePeer('beta'), /no peer named beta/);
  } finally {
    await p.close();
  }
});

test('sends waiting for the window when the peer restarts are rejected, never delivered into its new session', async () => {
  const p = await startPair();
  let beta2: LinkNetwork | undefined;
  try {
    await waitFor('link up', () => p.alpha.isUp('beta'));
    const betaPort = p.beta.address!.port;
    await p.beta.close();
    await waitFor('alpha sees beta down', () => !p.alpha.isUp('beta'));
    // Nothing is acknowledged while beta is gone: the first fill the 16 MiB window, the rest wait.
    const sends = Array.from({ length: 6 }, () => p.alpha.send('beta', randomBytes(4 * MiB)).then(() => 'queued', (e: unknown) => (e as { code?: string }).code));
    await new Promise((r) => setImmediate(r));
    // Beta restarts (a new incarnation) at the same address.
    beta2 = await LinkNetwork.start({ arrayName: 'beta', listen: { host: '127.0.0.1', port: betaPort }, heartbeatIntervalMs: 100, deadAfterMs: 1500 });
    const atBeta2: Uint8Array[] = [];
    beta2.onMessage((_peer, m) => { atBeta2.push(m); });
    beta2.addPeer({ name: 'alpha', address: `127.0.0.1:${p.alpha.address!.port}`, secret: SECRET });
    await waitFor('the link to the restarted beta', () => p.alpha.isUp('beta') && p.events.includes('alpha: reset beta'));
    const results = await Promise.all(sends);
    const waited = results.filter((r) => r !== 'queued');
    assert.ok(waited.length > 0 && waited.every((r) => r === 'TM_ERR_LINK_DOWN'), `the sends that waited fail: ${results.join(', ')}`);
    await p.alpha.send('beta', Buffer.from('new session'));
    await waitFor('the new session carries new messages', () => atBeta2.length > 0);
    assert.deepEqual(atBeta2.map((m) => Buffer.from(m).toString()), ['new session'], 'nothing of the old session reached the restarted beta');
  } finally {
    await beta2?.close();
    await p.close();
  }
});
