// How the replication layer reaches peer arrays: authenticated, in-order, exactly-once delivery of
// opaque messages per peer while a link session lasts. The daemon wires the TCP link network; tests
// and the simulator wire in-memory transports.

export interface PeerTransport {
  /**
   * Queues a message (resolves once queued within the send window); rejects when the peer is
   * unknown. The transport keeps `message` itself until it is delivered: the caller must not change
   * it after the call (it is not copied: a sync pair forwards every write this way).
   */
  send(peer: string, message: Uint8Array): Promise<void>;
  isUp(peer: string): boolean;
  /** Called synchronously in delivery order. */
  onMessage(handler: (peer: string, message: Uint8Array) => void): void;
  onPeerUp(handler: (peer: string) => void): void;
  onPeerDown(handler: (peer: string, reason: string) => void): void;
  /** The peer's session ended for good (it restarted): messages not yet delivered are gone. */
  onSessionReset(handler: (peer: string) => void): void;
}

/** The transport plus the peer table it serves (the daemon's link network). */
export interface PeerLinks extends PeerTransport {
  addPeer(peer: { readonly name: string; readonly address: string; readonly secret: Uint8Array }): void;
  removePeer(name: string): void;
  /** connecting / up / down / auth-failed, or 'unknown' for a peer the links do not have. */
  peerState(name: string): string;
  peerCounters(name: string): { bytesSent: number; bytesReceived: number; retransmittedPackets: number };
  /** Why the link last failed or was refused (kept after it recovers), or null. */
  peerLastError(name: string): string | null;
}

/** Links for an array started without a link listener or peers: every peer is down. */
export const NO_LINKS: PeerLinks = {
  send: (peer) => Promise.reject(new Error(`no link to ${peer}: this array has no replication link`)),
  isUp: () => false,
  onMessage: () => undefined,
  onPeerUp: () => undefined,
  onPeerDown: () => undefined,
  onSessionReset: () => undefined,
  addPeer: () => undefined,
  removePeer: () => undefined,
  peerState: () => 'down',
  peerCounters: () => ({ bytesSent: 0, bytesReceived: 0, retransmittedPackets: 0 }),
  peerLastError: () => null,
};
