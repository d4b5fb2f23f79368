// The link network as the replication layer sees it (a PeerLinks port).
import type { LinkNetwork } from '../../adapters/net/link-network.js';
import type { PeerLinks } from '../../ports/peer-transport.js';

export function linksOver(network: LinkNetwork): PeerLinks {
  return {
    send: (peer, message) => network.send(peer, message),
    isUp: (peer) => network.isUp(peer),
    onMessage: (handler) => network.onMessage(handler),
    onPeerUp: (handler) => network.onPeerUp(handler),
    onPeerDown: (handler) => network.onPeerDown(handler),
    onSessionReset: (handler) => network.onSessionReset(handler),
    addPeer: (peer) => network.addPeer(peer),
    removePeer: (name) => network.removePeer(name),
    peerState: (name) => network.peer(name)?.state ?? 'unknown',
    peerCounters: (name) => {
      const p = network.peer(name);
      return { bytesSent: p?.bytesSent ?? 0, bytesReceived: p?.bytesReceived ?? 0, retransmittedPackets: p?.retransmittedPackets ?? 0 };
    },
    peerLastError: (name) => network.peer(name)?.lastError ?? null,
  };
}
