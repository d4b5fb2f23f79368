// One seed of the link simulation: two arrays exchange random-size messages over a simulated
// network with cuts, silent black holes, partitions, corrupted bytes, parallel streams and
// sometimes a process restart. Oracle: each side's delivered sequence is always exactly a prefix
// of what the other side sent in the current session (no loss, duplication, reordering or
// corruption); after the faults stop, everything sent is delivered within a bound.
import { createHmac } from 'node:crypto';
import { aes256GcmOpen, aes256GcmSeal } from '../adapters/net/node-crypto.js';
import { LinkEndpoint } from '../core/link/endpoint.js';
import type { LinkAction, LinkConfig } from '../core/link/types.js';
import { crc32c } from '../core/lib/crc32c.js';
import { Prng } from '../core/lib/prng.js';
import { Scheduler } from './scheduler.js';
import { SimLinkHost, SimNetwork, type SimNetworkFaults } from './sim-network.js';

export interface LinkSeedResult {
  readonly seed: number;
  readonly ok: boolean;
  readonly failure: string | undefined;
  readonly sent: number;
  readonly delivered: number;
  readonly resets: number;
  readonly restarts: number;
  readonly cuts: number;
  readonly corruptedChunks: number;
  readonly retransmits: number;
  readonly streams: number;
  readonly events: number;
  readonly virtualMs: number;
}

/** Deterministic crypto for the simulation: real HMAC and AES-256-GCM (deterministic per key and nonce), nonces from the seed. */
export function simCrypto(prng: Prng): LinkConfig['crypto'] {
  return {
    hmacSha256: (key, data) => new Uint8Array(createHmac('sha256', key).update(data).digest()),
    randomBytes: (n) => {
      const b = new Uint8Array(n);
      prng.fill(b);
      return b;
    },
    aeadSeal: aes256GcmSeal,
    aeadOpen: aes256GcmOpen,
  };
}

interface Sent { readonly length: number; readonly crc: number }

interface Side {
  readonly name: string;
  host: SimLinkHost;
  /** What this side sent in the current session, in order. */
  sent: Sent[];
  /** What this side had delivered from the other in the current session. */
  delivered: number;
  /** Messages waiting for window space (the app's own queue). */
  pending: Uint8Array[];
  sentTotal: number;
}

const SECRET = new TextEncoder().encode('a shared secret of the two arrays');

export async function runLinkSeed(seed: number): Promise<LinkSeedResult> {
  const root = new Prng(seed);
  const netPrng = root.fork();
  const workPrng = root.fork();
  const faultPrng = root.fork();
  const cryptoPrng = root.fork();
  const jitterPrng = root.fork();
  const scheduler = new Scheduler();

  // The two sides may be configured with different packet sizes and windows: they must interoperate.
  const packetChoices = [512, 4096, 16 * 1024, 64 * 1024];
  const packetBytes = { alpha: root.pick(packetChoices), beta: root.chance(0.5) ? root.pick(packetChoices) : undefined };
  const maxMessageBytes = root.pick([2048, 64 * 1024, 300 * 1024]);
  const windowChoice = root.pick([64 * 1024, 256 * 1024, 1024 * 1024]);
  const windowFor = (packet: number): number => Math.max(64 * 1024, 2 * (packet + 24), windowChoice);
  const streams = root.pick([1, 1, 2, 3]);
  const faults: SimNetworkFaults = {
    minDelayMs: 0,
    maxDelayMs: root.int(1, 20),
    maxChunkBytes: root.pick([100, 1500, 16 * 1024, 64 * 1024]),
    corruptByteProbability: root.pick([0, 1e-6, 5e-6]),
    connectDelayMs: root.int(0, 5),
  };
  const safetyMs = 3000;
  const livenessBoundMs = 20_000;
  const messagesPerSide = root.int(15, 60);
  const willRestart = root.chance(0.2);

  const net = new SimNetwork(scheduler, netPrng, faults);
  let failure: string | undefined;
  let resets = 0;
  let restarts = 0;
  const fail = (what: string): void => { failure ??= `seed ${seed}: ${what} at ${scheduler.nowMs} ms`; };

  const config = (arrayName: 'alpha' | 'beta'): LinkConfig => {
    const maxPacketBytes = packetBytes[arrayName] ?? packetBytes.alpha;
    return {
      arrayName, crypto: simCrypto(cryptoPrng), random: () => jitterPrng.next(), streams,
      heartbeatIntervalMs: 50, deadAfterMs: 250, handshakeTimeoutMs: 500, backoffInitialMs: 10, backoffMaxMs: 400,
      windowBytes: windowFor(maxPacketBytes), maxPacketBytes, maxMessageBytes,
    };
  };
  const sides: Side[] = [];
  const other = (side: Side): Side => sides[sides[0] === side ? 1 : 0]!;
  const sideOf = (host: SimLinkHost): Side => sides.find((s) => s.host === host)!;

  const trySend = (side: Side): void => {
    const peer = other(side).name;
    while (side.pending.length > 0 && side.host.endpoint.canSend(peer, side.pending[0]!.length)) {
      const message = side.pending.shift()!;
      side.host.endpoint.send(peer, message);
      side.sent.push({ length: message.length, crc: crc32c(message) });
      side.sentTotal++;
    }
    side.host.drain();
  };

  const onAction = (host: SimLinkHost, action: LinkAction): void => {
    const side = sideOf(host);
    switch (action.kind) {
      case 'deliver': {
        const expected = other(side).sent[side.delivered];
        if (!expected) return fail(`${side.name} delivered message #${side.delivered} that ${other(side).name} never sent`);
        if (expected.length !== action.message.length || expected.crc !== crc32c(action.message)) {
          return fail(`${side.name} delivered message #${side.delivered} with the wrong content`);
        }
        side.delivered++;
        return;
      }
      case 'session-reset':
        resets++;
        side.sent = [];
        side.delivered = 0;
        return;
      case 'send-space':
        scheduler.at(0, () => trySend(side));
        return;
      default:
        return;
    }
  };

  const makeHost = (name: 'alpha' | 'beta', peerName: string): SimLinkHost => new SimLinkHost(net, name, (nowMs) => {
    const endpoint = new LinkEndpoint(config(name), nowMs);
    endpoint.addPeer({ name: peerName, address: peerName, secret: SECRET }, nowMs);
    return endpoint;
  }, { onAction });
  sides.push({ name: 'alpha', host: makeHost('alpha', 'beta'), sent: [], delivered: 0, pending: [], sentTotal: 0 });
  sides.push({ name: 'beta', host: makeHost('beta', 'alpha'), sent: [], delivered: 0, pending: [], sentTotal: 0 });
  for (const side of sides) side.host.drain();

  // The workload: random sizes, mostly small, some spanning many packets.
  for (const side of sides) {
    for (let i = 0; i < messagesPerSide; i++) {
      const roll = workPrng.next();
      const length = roll < 0.1 ? 0 : roll < 0.7 ? workPrng.int(1, 300) : roll < 0.9 ? workPrng.int(1, Math.min(4096, maxMessageBytes)) : workPrng.int(1, maxMessageBytes);
      const at = workPrng.int(0, safetyMs);
      scheduler.at(at, () => {
        const message = new Uint8Array(length);
        workPrng.fill(message);
        side.pending.push(message);
        trySend(side);
      });
    }
  }
  // Faults during the safety phase.
  const faultCount = faultPrng.int(0, 12);
  for (let i = 0; i < faultCount; i++) {
    scheduler.at(faultPrng.int(0, safetyMs), () => {
      const roll = faultPrng.next();
      if (roll < 0.5) net.cutRandom(faultPrng.chance(0.6));
      else {
        net.partition('alpha', 'beta');
        scheduler.at(faultPrng.int(20, 600), () => net.heal('alpha', 'beta'));
      }
    });
  }
  if (willRestart) {
    scheduler.at(faultPrng.int(0, safetyMs), () => {
      const side = faultPrng.pick(sides);
      restarts++;
      side.host.restart();
      side.sent = [];
      side.delivered = 0;
      side.pending = [];
      side.host.drain();
    });
  }
  scheduler.at(safetyMs, () => {
    net.faults = { ...faults, corruptByteProbability: 0 };
    net.healAll();
  });

  const converged = (): boolean => scheduler.nowMs > safetyMs && sides.every((s) =>
    s.pending.length === 0 && other(s).delivered === s.sent.length && s.host.endpoint.state(other(s).name) === 'up');
  const deadline = safetyMs + livenessBoundMs;
  await scheduler.run(() => failure !== undefined || converged() || scheduler.nowMs > deadline, 3_000_000);
  if (!failure && !converged()) {
    const detail = sides.map((s) => {
      const st = s.host.endpoint.stats(other(s).name);
      return `${s.name}: sent ${s.sent.length} pending ${s.pending.length}, peer delivered ${other(s).delivered}, state ${st?.state}, unacked ${st?.unackedBytes}, error ${st?.lastError}`;
    }).join('; ');
    fail(`did not converge within ${livenessBoundMs} ms after healing (${detail})`);
  }
  let retransmits = 0;
  for (const s of sides) retransmits += s.host.endpoint.stats(other(s).name)?.retransmittedPackets ?? 0;
  return {
    seed, ok: failure === undefined, failure,
    sent: sides.reduce((n, s) => n + s.sentTotal, 0),
    delivered: sides.reduce((n, s) => n + s.delivered, 0),
    resets, restarts, cuts: net.stats.cuts, corruptedChunks: net.stats.corruptedChunks, retransmits, streams,
    events: scheduler.events, virtualMs: scheduler.nowMs,
  };
}
