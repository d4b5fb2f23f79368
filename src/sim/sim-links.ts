// Peer links in simulated time: per direction, messages arrive in order after a seeded delay. A
// partition holds messages (the real link retransmits them after it reconnects, within a session)
// and tells both sides the peer is down; a crashed array's messages, and those in flight to it, are
// lost and its peers see the session reset. Deterministic under the scheduler.
import { Prng } from '../core/lib/prng.js';
import type { PeerLinks } from '../ports/peer-transport.js';
import { Scheduler } from './scheduler.js';

interface Endpoint {
  readonly name: string;
  readonly incarnation: number;
  readonly peers: Set<string>;
  readonly message: Array<(peer: string, message: Uint8Array) => void>;
  readonly up: Array<(peer: string) => void>;
  readonly down: Array<(peer: string, reason: string) => void>;
  readonly reset: Array<(peer: string) => void>;
}

interface InTransit {
  readonly message: Uint8Array;
  readonly readyAtMs: number;
  readonly fromIncarnation: number;
  readonly toIncarnation: number;
}

const pairKey = (a: string, b: string): string => (a < b ? `${a}|${b}` : `${b}|${a}`);

export class SimLinks {
  private readonly endpoints = new Map<string, Endpoint>();
  private readonly cut = new Set<string>();
  /** Direction "from>to" → messages in order. */
  private readonly queues = new Map<string, InTransit[]>();
  private readonly pumping = new Set<string>();
  private incarnations = 0;
  messagesDelivered = 0;

  constructor(private readonly scheduler: Scheduler, private readonly prng: Prng, private readonly maxDelayMs = 2) {}

  private linked(a: string, b: string): boolean {
    const ea = this.endpoints.get(a);
    const eb = this.endpoints.get(b);
    return !!ea && !!eb && ea.peers.has(b) && eb.peers.has(a) && !this.cut.has(pairKey(a, b));
  }

  isPartitioned(a: string, b: string): boolean {
    return this.cut.has(pairKey(a, b));
  }

  endpoint(name: string): PeerLinks {
    const e: Endpoint = { name, incarnation: ++this.incarnations, peers: new Set(), message: [], up: [], down: [], reset: [] };
    this.endpoints.set(name, e);
    const alive = (): boolean => this.endpoints.get(name) === e;
    return {
      send: async (peer, message) => {
        if (!alive() || !this.linked(name, peer)) throw new Error(`sim link ${name}→${peer} is down`);
        const to = this.endpoints.get(peer)!;
        const direction = `${name}>${peer}`;
        const queue = this.queues.get(direction) ?? [];
        this.queues.set(direction, queue);
        // The message itself, as the real link keeps it (PeerTransport.send): a sender that changed
        // it after sending would change what the peer receives here too, and the oracles would see it.
        queue.push({
          message, readyAtMs: this.scheduler.nowMs + this.prng.next() * this.maxDelayMs,
          fromIncarnation: e.incarnation, toIncarnation: to.incarnation,
        });
        this.pump(name, peer);
      },
      isUp: (peer) => alive() && this.linked(name, peer),
      onMessage: (h) => { e.message.push(h); },
      onPeerUp: (h) => { e.up.push(h); },
      onPeerDown: (h) => { e.down.push(h); },
      onSessionReset: (h) => { e.reset.push(h); },
      addPeer: (peer) => {
        e.peers.add(peer.name);
        if (this.linked(name, peer.name)) this.announce(name, peer.name, true);
      },
      removePeer: (peer) => { e.peers.delete(peer); },
      peerState: (peer) => (alive() && this.linked(name, peer) ? 'up' : 'down'),
      peerCounters: () => ({ bytesSent: 0, bytesReceived: 0, retransmittedPackets: 0 }),
      peerLastError: () => null,
    };
  }

  private pump(from: string, to: string): void {
    const direction = `${from}>${to}`;
    if (this.pumping.has(direction)) return;
    const queue = this.queues.get(direction);
    const head = queue?.[0];
    if (!head || this.cut.has(pairKey(from, to))) return;
    this.pumping.add(direction);
    this.scheduler.at(Math.max(0, head.readyAtMs - this.scheduler.nowMs), () => {
      this.pumping.delete(direction);
      if (this.cut.has(pairKey(from, to))) return; // held until heal
      const next = queue!.shift()!;
      const sender = this.endpoints.get(from);
      const receiver = this.endpoints.get(to);
      // Lost with the session: either side restarted since it was sent.
      if (sender?.incarnation === next.fromIncarnation && receiver?.incarnation === next.toIncarnation) {
        this.messagesDelivered++;
        for (const h of receiver.message) h(from, next.message);
      }
      this.pump(from, to);
    });
  }

  /** The array stopped (crash): its sessions end; what it had in flight is lost. */
  drop(name: string): void {
    const e = this.endpoints.get(name);
    if (!e) return;
    this.endpoints.delete(name);
    for (const direction of [...this.queues.keys()]) {
      if (direction.startsWith(`${name}>`) || direction.endsWith(`>${name}`)) this.queues.set(direction, []);
    }
    for (const p of e.peers) {
      const ep = this.endpoints.get(p);
      if (!ep) continue;
      this.scheduler.at(0, () => {
        for (const h of ep.down) h(name, 'peer stopped');
        for (const h of ep.reset) h(name);
      });
    }
  }

  partition(a: string, b: string): void {
    if (this.cut.has(pairKey(a, b))) return;
    this.cut.add(pairKey(a, b));
    this.announce(a, b, false);
  }

  heal(a: string, b: string): void {
    if (!this.cut.delete(pairKey(a, b))) return;
    this.pump(a, b);
    this.pump(b, a);
    if (this.linked(a, b)) this.announce(a, b, true);
  }

  private announce(a: string, b: string, up: boolean): void {
    this.scheduler.at(0, () => {
      for (const [from, to] of [[a, b], [b, a]] as const) {
        const ep = this.endpoints.get(from);
        if (!ep) continue;
        if (up) {
          if (this.linked(from, to)) for (const h of ep.up) h(to);
        } else {
          for (const h of ep.down) h(to, 'partitioned');
        }
      }
    });
  }
}

/**
 * Links between arrays in one process for tests that run in real time: the same simulated links,
 * driven by a scheduler that fires each event as soon as it is due (delivery in order, on a later
 * turn of the event loop).
 */
export function inProcessLinks(): SimLinks {
  const scheduler = new Scheduler();
  scheduler.autoRun();
  return new SimLinks(scheduler, new Prng(1), 0);
}
