// Shared types of the link core: configuration, the events a driver feeds in, the actions it
// gets back, and the stats it can read.
import type { EncodedFrame } from './frame.js';

/** Same shape as src/ports/crypto.ts (the core may import only src/core). */
export interface LinkCrypto {
  hmacSha256(key: Uint8Array, data: Uint8Array): Uint8Array;
  randomBytes(n: number): Uint8Array;
  aeadSeal(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, plaintext: Uint8Array): Uint8Array;
  aeadOpen(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, sealed: Uint8Array): Uint8Array | undefined;
}

export type ConnId = number;

export interface LinkConfig {
  readonly arrayName: string;
  readonly crypto: LinkCrypto;
  /** Uniform in [0, 1): reconnect jitter. The daemon passes Math.random, the simulator a seeded Prng. */
  readonly random: () => number;
  /** Parallel TCP connections per peer (>= 1). */
  readonly streams?: number;
  readonly heartbeatIntervalMs?: number;
  /** A connection that received nothing for this long is closed. */
  readonly deadAfterMs?: number;
  /** Bytes accepted from the app and not yet acknowledged by the peer; also the receive window we announce. */
  readonly windowBytes?: number;
  readonly maxPacketBytes?: number;
  readonly maxMessageBytes?: number;
  readonly backoffInitialMs?: number;
  readonly backoffMaxMs?: number;
  /** A connection that has not authenticated within this long is closed. */
  readonly handshakeTimeoutMs?: number;
  /**
   * How long an acknowledgement may wait to cover more packets. Request/response traffic would
   * otherwise send a separate ACK frame (a syscall each way) for every message.
   */
  readonly ackDelayMs?: number;
  /** Accepted connections that have not yet authenticated, bounding what an attacker can hold open. */
  readonly maxPendingInbound?: number;
  /** Of those, how many may come from one source address. */
  readonly maxPendingInboundPerSource?: number;
  /** The peer protocol version announced in the HELLO (default PEER_PROTOCOL_VERSION; tests pose as other versions). */
  readonly protocolVersion?: number;
}

export const LINK_DEFAULTS = {
  streams: 1,
  heartbeatIntervalMs: 1000,
  deadAfterMs: 5000,
  windowBytes: 16 * 1024 * 1024,
  maxPacketBytes: 256 * 1024,
  maxMessageBytes: 4 * 1024 * 1024,
  backoffInitialMs: 100,
  backoffMaxMs: 10_000,
  handshakeTimeoutMs: 10_000,
  ackDelayMs: 5,
  maxPendingInbound: 64,
  maxPendingInboundPerSource: 8,
} as const;

export const MAX_STREAMS = 16;

export interface PeerConfig {
  readonly name: string;
  readonly address: string;
  readonly secret: Uint8Array;
}

export type LinkEvent =
  /** A dial requested by a `dial` action connected. */
  | { readonly kind: 'connected'; readonly connId: ConnId }
  | { readonly kind: 'data'; readonly connId: ConnId; readonly bytes: Uint8Array }
  /** The connection (or the dial) ended for any reason; no more events for this connId. */
  | { readonly kind: 'closed'; readonly connId: ConnId; readonly reason: string }
  /** Socket backpressure: false after write() returned false, true on drain. */
  | { readonly kind: 'writable'; readonly connId: ConnId; readonly writable: boolean }
  /** Time passed; the driver calls this at nextDeadlineMs() (sooner is harmless). */
  | { readonly kind: 'tick' };

export type LinkAction =
  | { readonly kind: 'dial'; readonly connId: ConnId; readonly peer: string; readonly address: string }
  | { readonly kind: 'send'; readonly connId: ConnId; readonly frame: EncodedFrame }
  /** Close the connection (after flushing what was sent); the driver reports `closed` afterwards. */
  | { readonly kind: 'close'; readonly connId: ConnId; readonly reason: string }
  | { readonly kind: 'deliver'; readonly peer: string; readonly message: Uint8Array }
  | { readonly kind: 'peer-up'; readonly peer: string }
  | { readonly kind: 'peer-down'; readonly peer: string; readonly reason: string }
  /** The peer's incarnation changed: everything not acknowledged (`undeliveredMessages`) is gone. */
  | { readonly kind: 'session-reset'; readonly peer: string; readonly undeliveredMessages: number }
  /** The send window of `peer` has room again after canSend() said no. */
  | { readonly kind: 'send-space'; readonly peer: string }
  | { readonly kind: 'log'; readonly level: 'info' | 'warn' | 'error'; readonly msg: string; readonly fields: Readonly<Record<string, unknown>> };

export type PeerState = 'connecting' | 'up' | 'down' | 'auth-failed';

export interface PeerStats {
  readonly name: string;
  readonly address: string;
  readonly state: PeerState;
  readonly sinceMs: number;
  readonly sessionId: string | undefined;
  readonly connections: number;
  readonly bytesSent: number;
  readonly bytesReceived: number;
  readonly packetsSent: number;
  readonly packetsReceived: number;
  readonly messagesSent: number;
  readonly messagesReceived: number;
  readonly retransmittedPackets: number;
  /** Bytes accepted from the app and not yet acknowledged. */
  readonly unackedBytes: number;
  readonly lastError: string | undefined;
}
