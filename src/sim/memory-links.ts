// Peer links between arrays in one process: in-order delivery on the next turn of the event loop,
// links cut and healed on command. For tests of the replication layer without the TCP link.
import type { PeerLinks } from '../ports/peer-transport.js';

interface Endpoint {
  readonly name: string;
  readonly peers: Set<string>;
  readonly message: Array<(peer: string, message: Uint8Array) => void>;
  readonly up: Array<(peer: string) => void>;
  readonly down: Array<(peer: string, reason: string) => void>;
  readonly reset: Array<(peer: string) => void>;
}

const key = (a: string, b: string): string => (a < b ? `${a}|${b}` : `${b}|${a}`);

export class MemoryLinkHub {
  private readonly endpoints = new Map<string, Endpoint>();
  private readonly cut = new Set<string>();

  private linked(a: string, b: string): boolean {
    const ea = this.endpoints.get(a);
    const eb = this.endpoints.get(b);
    return !!ea && !!eb && ea.peers.has(b) && eb.peers.has(a) && !this.cut.has(key(a, b));
  }

  endpoint(name: string): PeerLinks {
    const e: Endpoint = { name, peers: new Set(), message: [], up: [], down: [], reset: [] };
    this.endpoints.set(name, e);
    return {
      send: async (peer, message) => {
        if (!this.linked(name, peer)) throw new Error(`memory link ${name}→${peer} is down`);
        const copy = message.slice();
        setImmediate(() => {
          if (!this.linked(name, peer)) return;
          for (const h of this.endpoints.get(peer)!.message) h(name, copy);
        });
      },
      isUp: (peer) => this.linked(name, peer),
      onMessage: (h) => { e.message.push(h); },
      onPeerUp: (h) => { e.up.push(h); },
      onPeerDown: (h) => { e.down.push(h); },
      onSessionReset: (h) => { e.reset.push(h); },
      addPeer: (peer) => {
        e.peers.add(peer.name);
        if (this.linked(name, peer.name)) this.announce(name, peer.name, true);
      },
      removePeer: (peer) => { e.peers.delete(peer); },
      peerState: (peer) => (this.linked(name, peer) ? 'up' : 'down'),
      peerCounters: () => ({ bytesSent: 0, bytesReceived: 0, retransmittedPackets: 0 }),
    };
  }

  /** Removes an endpoint (its array stopped or crashed): its peers see the session end. */
  drop(name: string): void {
    const peers = [...(this.endpoints.get(name)?.peers ?? [])];
    this.endpoints.delete(name);
    for (const p of peers) {
      const ep = this.endpoints.get(p);
      if (!ep) continue;
      for (const h of ep.down) h(name, 'peer stopped');
      for (const h of ep.reset) h(name);
    }
  }

  partition(a: string, b: string): void {
    this.cut.add(key(a, b));
    this.announce(a, b, false);
  }

  heal(a: string, b: string): void {
    this.cut.delete(key(a, b));
    if (this.linked(a, b)) this.announce(a, b, true);
  }

  private announce(a: string, b: string, up: boolean): void {
    setImmediate(() => {
      for (const [from, to] of [[a, b], [b, a]] as const) {
        const ep = this.endpoints.get(from);
        if (!ep) continue;
        if (up) for (const h of ep.up) h(to);
        else for (const h of ep.down) h(to, 'partitioned');
      }
    });
  }
}
