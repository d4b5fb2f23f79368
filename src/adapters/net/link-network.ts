// The replication link over TCP: drives one core LinkEndpoint (one session per peer) with real
// sockets and timers. This is the only code that touches node:net for the link. Writes go out as
// header + payload under cork/uncork (one writev); write() returning false marks the connection
// unwritable in the core until 'drain', so packets flow to the other streams or wait — the only
// buffering is the core's bounded send window.
import { connect, createServer, type Server, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { LinkEndpoint } from '../../core/link/endpoint.js';
import type { ConnId, LinkAction, PeerStats } from '../../core/link/types.js';
import { ErrorCode, TidemarkError, invalidArgument, notFound } from '../../core/errors.js';
import { assertNever } from '../../core/lib/assert.js';
import { nodeLinkCrypto } from './node-crypto.js';
import { isTunnelMessage, relayOf } from '../../core/link/tunnel-codec.js';
import { LinkTunnels, type TunnelSocket } from './link-tunnels.js';

/** What the link runs over: a TCP socket, or a tunnel through a relay array that behaves like one. */
type LinkSocket = Socket | TunnelSocket;

export interface LinkPeerConfig { readonly name: string; readonly address: string /* host:port */; readonly secret: Uint8Array }
export interface LinkNetworkOptions {
  readonly arrayName: string;
  readonly listen?: { host: string; port: number };
  readonly streams?: number;
  readonly heartbeatIntervalMs?: number;
  readonly deadAfterMs?: number;
  /** The peer protocol version announced in the HELLO (default: this build's; tests pose as other versions). */
  readonly protocolVersion?: number;
  readonly log?: (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;
  /**
   * Carry relay tunnels (peers added with a `relay:R` address, and relaying for peers): messages
   * whose first byte is TUNNEL_MESSAGE_TAG are then the link's own and never reach onMessage, so
   * the application's messages must not start with it (the peer protocol's start with 0 or 1).
   */
  readonly carryTunnels?: boolean;
  /** Called whenever a link connection receives bytes (busy polling, see busy-poll.ts). */
  readonly onInput?: (() => void) | undefined;
}
export type LinkPeerState = 'connecting' | 'up' | 'down' | 'auth-failed';
export interface LinkPeerStats {
  readonly name: string;
  readonly address: string;
  readonly state: LinkPeerState;
  /** Wall-clock ms (epoch) of the last state change. */
  readonly sinceMs: number;
  readonly bytesSent: number;
  readonly bytesReceived: number;
  readonly messagesSent: number;
  readonly messagesReceived: number;
  readonly retransmittedPackets: number;
  readonly lastError?: string;
  // Beyond the agreed minimum:
  readonly packetsSent: number;
  readonly packetsReceived: number;
  /** Authenticated TCP connections currently open (up to `streams`). */
  readonly connections: number;
  /** Bytes accepted by send() and not yet acknowledged by the peer. */
  readonly unackedBytes: number;
  /** Identifies the session (both sides' incarnations); changes when either side restarts. */
  readonly sessionId?: string;
}

/** A socket closed by the core gets this long to flush before it is destroyed. */
const CLOSE_GRACE_MS = 2000;
/** Dials give up after this long (the core then backs off and retries). */
const CONNECT_TIMEOUT_MS = 10_000;
const SOCKET_HIGH_WATER_BYTES = 1024 * 1024;

/** Monotonic wall-clock milliseconds: the core's timers must not jump with clock adjustments. */
const nowMs = (): number => performance.timeOrigin + performance.now();

interface Waiting {
  readonly message: Uint8Array;
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
}

export function parseAddress(address: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:\s]+)):(\d{1,5})$/.exec(address);
  const port = m ? Number(m[3]) : NaN;
  if (!m || !(port > 0 && port < 65536)) throw invalidArgument(`link address ${JSON.stringify(address)} is not host:port`);
  return { host: m[1] ?? m[2]!, port };
}

export class LinkNetwork {
  private readonly endpoint: LinkEndpoint;
  private readonly sockets = new Map<ConnId, LinkSocket>();
  /** Sockets the core closed, flushing before they end; close() destroys them too. */
  private readonly closing = new Set<LinkSocket>();
  /** Connections to peers reached through a relay, and the tunnels this array relays for others. */
  readonly tunnels: LinkTunnels;
  /** Sends waiting for window space, per peer, in order (the app's backpressure). */
  private readonly waiting = new Map<string, Waiting[]>();
  private readonly messageHandlers: Array<(peer: string, message: Uint8Array) => void> = [];
  private readonly upHandlers: Array<(peer: string) => void> = [];
  private readonly downHandlers: Array<(peer: string, reason: string) => void> = [];
  private readonly resetHandlers: Array<(peer: string) => void> = [];
  private timer: NodeJS.Timeout | undefined;
  private timerAtMs = Number.POSITIVE_INFINITY;
  private pumping = false;
  private pumpAgain = false;
  private readonly corked = new Set<LinkSocket>();
  private closed = false;
  private boundAddress: { host: string; port: number } | undefined;

  private constructor(private readonly options: LinkNetworkOptions, private readonly server: Server | undefined) {
    this.endpoint = new LinkEndpoint({
      arrayName: options.arrayName,
      crypto: nodeLinkCrypto,
      random: Math.random,
      ...(options.streams !== undefined ? { streams: options.streams } : {}),
      ...(options.heartbeatIntervalMs !== undefined ? { heartbeatIntervalMs: options.heartbeatIntervalMs } : {}),
      ...(options.deadAfterMs !== undefined ? { deadAfterMs: options.deadAfterMs } : {}),
      ...(options.protocolVersion !== undefined ? { protocolVersion: options.protocolVersion } : {}),
    }, nowMs());
    this.tunnels = new LinkTunnels({
      send: (peer, message) => this.send(peer, message),
      isUp: (peer) => this.isUp(peer),
      isDirectPeer: (name) => this.endpoint.hasPeer(name) && relayOf(this.endpoint.stats(name)!.address) === undefined,
      accept: (socket) => this.accepted(socket),
      log: (level, msg, fields) => this.log(level, msg, fields),
    });
  }

  static async start(options: LinkNetworkOptions): Promise<LinkNetwork> {
    let server: Server | undefined;
    if (options.listen) server = createServer({ highWaterMark: SOCKET_HIGH_WATER_BYTES, noDelay: true });
    const network = new LinkNetwork(options, server);
    if (server && options.listen) {
      const listen = options.listen;
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(listen.port, listen.host, () => {
          server.off('error', reject);
          resolve();
        });
      });
      const bound = server.address();
      if (bound && typeof bound === 'object') network.boundAddress = { host: bound.address, port: bound.port };
      server.on('connection', (socket) => network.accepted(socket));
      server.on('error', (error) => network.log('error', 'link listener error', { error: error.message }));
    }
    return network;
  }

  get address(): { host: string; port: number } | undefined {
    return this.boundAddress;
  }

  addPeer(peer: LinkPeerConfig): void {
    this.assertOpen();
    const relay = relayOf(peer.address);
    if (relay === undefined) parseAddress(peer.address);
    else if (this.options.carryTunnels !== true) throw invalidArgument('this link network does not carry relay tunnels');
    else if (!this.endpoint.hasPeer(relay) || relayOf(this.endpoint.stats(relay)!.address) !== undefined) {
      throw invalidArgument(`the relay ${relay} must be a peer reached directly`);
    }
    this.endpoint.addPeer(peer, nowMs());
    // A relayed peer's tunnels arrive over the link to the relay: no listener needed for them.
    if (!this.server && relay === undefined && !(this.options.arrayName < peer.name)) {
      this.log('warn', 'this array does not listen, but peer dials it (the lower name dials): the link cannot come up', { peer: peer.name });
    }
    this.pump();
  }

  removePeer(name: string): void {
    this.assertOpen();
    this.endpoint.removePeer(name, nowMs());
    this.rejectWaiting(name, new TidemarkError(ErrorCode.LinkDown, `peer ${name} was removed`, { peer: name }));
    this.pump();
  }

  peers(): LinkPeerStats[] {
    return this.endpoint.peerNames().map((name) => this.peer(name)!);
  }

  peer(name: string): LinkPeerStats | undefined {
    const s = this.endpoint.stats(name);
    return s ? toPublicStats(s) : undefined;
  }

  isUp(name: string): boolean {
    return this.endpoint.state(name) === 'up';
  }

  send(peer: string, message: Uint8Array): Promise<void> {
    if (this.closed) return Promise.reject(new TidemarkError(ErrorCode.LinkDown, 'the link network is closed', { peer }));
    if (!this.endpoint.hasPeer(peer)) return Promise.reject(notFound(`no link peer named ${peer}`, { peer }));
    const queue = this.waiting.get(peer) ?? [];
    try {
      // Order matters: a message may enter the window only when nobody is waiting before it.
      if (queue.length === 0 && this.endpoint.canSend(peer, message.length)) {
        this.endpoint.send(peer, message);
        this.pump();
        return Promise.resolve();
      }
    } catch (error) {
      return Promise.reject(error);
    }
    return new Promise((resolve, reject) => {
      queue.push({ message, resolve, reject });
      this.waiting.set(peer, queue);
    });
  }

  onMessage(handler: (peer: string, message: Uint8Array) => void): void { this.messageHandlers.push(handler); }
  onPeerUp(handler: (peer: string) => void): void { this.upHandlers.push(handler); }
  onPeerDown(handler: (peer: string, reason: string) => void): void { this.downHandlers.push(handler); }
  onSessionReset(handler: (peer: string) => void): void { this.resetHandlers.push(handler); }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    for (const name of this.waiting.keys()) {
      this.rejectWaiting(name, new TidemarkError(ErrorCode.LinkDown, 'the link network is closed', { peer: name }));
    }
    const closing: Promise<void>[] = [];
    for (const socket of [...this.sockets.values(), ...this.closing]) {
      if (!socket.closed) closing.push(new Promise((resolve) => { socket.once('close', () => resolve()); }));
      socket.destroy();
    }
    this.sockets.clear();
    this.closing.clear();
    if (this.server) {
      const server = this.server;
      closing.push(new Promise((resolve) => server.close(() => resolve())));
    }
    await Promise.all(closing);
  }

  // ---- internals ----

  private assertOpen(): void {
    if (this.closed) throw new TidemarkError(ErrorCode.LinkDown, 'the link network is closed');
  }

  private log(level: 'info' | 'warn' | 'error', msg: string, fields: Record<string, unknown>): void {
    this.options.log?.(level, msg, fields);
  }

  private rejectWaiting(peer: string, error: TidemarkError): void {
    const queue = this.waiting.get(peer) ?? [];
    this.waiting.delete(peer);
    for (const w of queue) w.reject(error);
  }

  private accepted(socket: LinkSocket): void {
    if (this.closed) {
      socket.destroy();
      return;
    }
    const id = this.endpoint.accept(nowMs(), socket.remoteAddress ?? '');
    if (id === undefined) {
      this.log('warn', 'link connection refused: too many unauthenticated connections (in all, or from this address)', { remote: socket.remoteAddress });
      socket.destroy();
      return;
    }
    this.attach(id, socket);
    this.pump();
  }

  private attach(id: ConnId, socket: LinkSocket): void {
    this.sockets.set(id, socket);
    socket.setNoDelay(true);
    let lastError: string | undefined;
    socket.on('data', (chunk: Buffer) => {
      this.options.onInput?.();
      this.handle({ kind: 'data', connId: id, bytes: chunk });
    });
    socket.on('drain', () => this.handle({ kind: 'writable', connId: id, writable: true }));
    socket.on('error', (error) => { lastError = error.message; });
    socket.on('close', () => {
      if (this.sockets.get(id) !== socket) return;
      this.sockets.delete(id);
      this.handle({ kind: 'closed', connId: id, reason: lastError ?? 'connection closed' });
    });
  }

  private handle(event: Parameters<LinkEndpoint['handle']>[0]): void {
    if (this.closed) return;
    this.endpoint.handle(event, nowMs());
    this.pump();
  }

  /** Performs the core's actions; re-entrant calls (from app handlers) just ask for another round. */
  private pump(): void {
    if (this.closed) return;
    if (this.pumping) {
      this.pumpAgain = true;
      return;
    }
    this.pumping = true;
    try {
      do {
        this.pumpAgain = false;
        for (let action = this.endpoint.poll(); action && !this.closed; action = this.endpoint.poll()) this.perform(action);
      } while (this.pumpAgain && !this.closed);
    } finally {
      this.pumping = false;
      for (const socket of this.corked) socket.uncork();
      this.corked.clear();
    }
    this.armTimer();
  }

  private perform(action: LinkAction): void {
    switch (action.kind) {
      case 'dial': return this.dial(action.connId, action.address, action.peer);
      case 'send': {
        const socket = this.sockets.get(action.connId);
        if (!socket || socket.destroyed) return;
        // Corked until the pump ends: every frame of one pump leaves in one writev.
        if (!this.corked.has(socket)) {
          socket.cork();
          this.corked.add(socket);
        }
        let ok = socket.write(action.frame.header);
        if (action.frame.payload.length > 0) ok = socket.write(action.frame.payload);
        if (!ok) this.endpoint.handle({ kind: 'writable', connId: action.connId, writable: false }, nowMs());
        return;
      }
      case 'close': {
        const socket = this.sockets.get(action.connId);
        this.sockets.delete(action.connId);
        if (!socket) return;
        this.closing.add(socket);
        socket.once('close', () => this.closing.delete(socket));
        socket.end();
        setTimeout(() => socket.destroy(), CLOSE_GRACE_MS).unref();
        return;
      }
      case 'deliver':
        // Tunnel messages are the link's own traffic (relayed connections), never the application's.
        if (this.options.carryTunnels === true && isTunnelMessage(action.message)) return this.tunnels.receive(action.peer, action.message);
        for (const h of this.messageHandlers) h(action.peer, action.message);
        return;
      case 'peer-up':
        for (const h of this.upHandlers) h(action.peer);
        return;
      case 'peer-down':
        this.tunnels.neighbourDown(action.peer, action.reason);
        for (const h of this.downHandlers) h(action.peer, action.reason);
        return;
      case 'session-reset':
        // Sends still waiting for window space belong to the session that ended, like those in the
        // window the endpoint just dropped: they must not reach the restarted peer in its new session
        // (a request its sender already counts as failed, a replicated write overtaken by a resync).
        this.rejectWaiting(action.peer, new TidemarkError(ErrorCode.LinkDown, `link session with ${action.peer} was reset`, { peer: action.peer }));
        this.tunnels.neighbourDown(action.peer, 'session reset');
        for (const h of this.resetHandlers) h(action.peer);
        return;
      case 'send-space':
        return this.flushWaiting(action.peer);
      case 'log':
        return this.log(action.level, action.msg, { ...action.fields });
      default:
        return assertNever(action, 'link action');
    }
  }

  private flushWaiting(peer: string): void {
    const queue = this.waiting.get(peer);
    while (queue && queue.length > 0 && this.endpoint.hasPeer(peer) && this.endpoint.canSend(peer, queue[0]!.message.length)) {
      const w = queue.shift()!;
      this.endpoint.send(peer, w.message);
      w.resolve();
    }
    if (queue?.length === 0) this.waiting.delete(peer);
  }

  private dial(id: ConnId, address: string, peer: string): void {
    const relay = relayOf(address);
    if (relay !== undefined) {
      // The endpoint's handshake timeout bounds a tunnel that never opens.
      const tunnel = this.tunnels.open(relay, peer);
      tunnel.once('connect', () => this.handle({ kind: 'connected', connId: id }));
      this.attach(id, tunnel);
      return;
    }
    const { host, port } = parseAddress(address);
    const socket = connect({ host, port, noDelay: true });
    socket.setTimeout(CONNECT_TIMEOUT_MS, () => socket.destroy(new Error(`connect to ${address} timed out`)));
    socket.once('connect', () => {
      socket.setTimeout(0);
      this.handle({ kind: 'connected', connId: id });
    });
    this.attach(id, socket);
  }

  private armTimer(): void {
    const deadline = this.endpoint.nextDeadlineMs();
    if (deadline === undefined || this.closed) return;
    if (this.timer && this.timerAtMs <= deadline) return;
    if (this.timer) clearTimeout(this.timer);
    this.timerAtMs = deadline;
    // +1: never fire a hair early and spin without the deadline having passed.
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.timerAtMs = Number.POSITIVE_INFINITY;
      this.handle({ kind: 'tick' });
    }, Math.max(0, deadline - nowMs()) + 1);
    this.timer.unref();
  }
}

function toPublicStats(s: PeerStats): LinkPeerStats {
  return {
    name: s.name, address: s.address, state: s.state, sinceMs: Math.round(s.sinceMs),
    bytesSent: s.bytesSent, bytesReceived: s.bytesReceived, messagesSent: s.messagesSent, messagesReceived: s.messagesReceived,
    retransmittedPackets: s.retransmittedPackets,
    ...(s.lastError !== undefined ? { lastError: s.lastError } : {}),
    packetsSent: s.packetsSent, packetsReceived: s.packetsReceived, connections: s.connections, unackedBytes: s.unackedBytes,
    ...(s.sessionId !== undefined ? { sessionId: s.sessionId } : {}),
  };
}
