// How the replication layer reaches peer arrays: authenticated, in-order, exactly-once delivery of
// opaque messages per peer while a link session lasts. The daemon wires the TCP link network; tests
// and the simulator wire in-memory transports.

export interface PeerTransport {
  /** Queues a message (resolves once queued within the send window); rejects when the peer is unknown. */
  send(peer: string, message: Uint8Array): Promise<void>;
  isUp(peer: string): boolean;
  /** Called synchronously in delivery order. */
  onMessage(handler: (peer: string, message: Uint8Array) => void): void;
  onPeerUp(handler: (peer: string) => void): void;
  onPeerDown(handler: (peer: string, reason: string) => void): void;
  /** The peer's session ended for good (it restarted): messages not yet delivered are gone. */
  onSessionReset(handler: (peer: string) => void): void;
}
