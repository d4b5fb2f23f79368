// The replication link over TCP: drives the pure link endpoint (src/core/link) with real sockets,
// timers and node:crypto. Backpressure is explicit: a socket whose write() returned false gets no
// more frames until 'drain', and app sends wait for room in the peer's send window.
import { createHmac, randomBytes } from 'node:crypto';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { LinkEndpoint } from '../../core/link/endpoint.js';
import type { ConnId, LinkAction, PeerState } from '../../core/link/types.js';
import { ErrorCode, TidemarkError } from '../../core/errors.js';
import type { LinkCrypto } from '../../ports/crypto.js';

export interface LinkPeerConfig {
  readonly name: string;
  /** host:port of the peer's link listener. */
  readonly address: string;
  readonly secret: Uint8Array;
}

export interface LinkNetworkOptions {
  readonly arrayName: string;
  readonly listen?: { host: string; port: number };
  readonly streams?: number;
  readonly heartbeatIntervalMs?: number;
  readonly deadAfterMs?: number;
  readonly log?: (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;
}

export type LinkPeerState = PeerState;

export interface LinkPeerStats {
  readonly name: string;
  readonly address: string;
  readonly state: LinkPeerState;
  readonly sinceMs: number;
  readonly bytesSent: number;
  readonly bytesReceived: number;
  readonly messagesSent: number;
  readonly messagesReceived: number;
  readonly retransmittedPackets: number;
  readonly lastError?: string;
}

const nodeCrypto: LinkCrypto = {
  hmacSha256: (key, data) => new Uint8Array(createHmac('sha256', key).update(data).digest()),
  randomBytes: (n) => new Uint8Array(randomBytes(n)),
};

/** A socket told to close gets this long to flush before it is destroyed. */
const CLOSE_GRACE_MS = 2000;

function splitAddress(address: string): { host: string; port: number } {
  const m = /^\[?([^\]]+)\]?:(\d+)$/.exec(address);
  if (!m) throw new TidemarkError(ErrorCode.InvalidArgument, `link address ${JSON.stringify(address)} is not HOST:PORT`);
  return { host: m[1]!, port: Number(m[2]) };
}

export class LinkNetwork {
  private readonly endpoint: LinkEndpoint;
  private readonly sockets = new Map<ConnId, Socket>();
  private readonly messageHandlers: Array<(peer: string, message: Uint8Array) => void> = [];
  private readonly upHandlers: Array<(peer: string) => void> = [];
  private readonly downHandlers: Array<(peer: string, reason: string) => void> = [];
  private readonly resetHandlers: Array<(peer: string) => void> = [];
  private readonly spaceWaiters = new Map<string, Array<() => void>>();
  private timer: ReturnType<typeof setTimeout> | undefined;
  private pumping = false;
  private readonly upPeers = new Set<string>();
  private closed = false;

  private constructor(private readonly options: LinkNetworkOptions, private readonly server: Server | undefined) {
    this.endpoint = new LinkEndpoint({
      arrayName: options.arrayName,
      crypto: nodeCrypto,
      random: Math.random,
      ...(options.streams !== undefined ? { streams: options.streams } : {}),
      ...(options.heartbeatIntervalMs !== undefined ? { heartbeatIntervalMs: options.heartbeatIntervalMs } : {}),
      ...(options.deadAfterMs !== undefined ? { deadAfterMs: options.deadAfterMs } : {}),
    }, Date.now());
  }

  static async start(options: LinkNetworkOptions): Promise<LinkNetwork> {
    let server: Server | undefined;
    if (options.listen) {
      server = createServer({ noDelay: true });
      const listening = server;
      await new Promise<void>((resolve, reject) => {
        listening.once('error', reject);
        listening.listen(options.listen!.port, options.listen!.host, () => {
          listening.off('error', reject);
          resolve();
        });
      });
    }
    const network = new LinkNetwork(options, server);
    server?.on('connection', (socket) => network.accepted(socket));
    return network;
  }

  get address(): { host: string; port: number } | undefined {
    const a = this.server?.address();
    return a && typeof a === 'object' ? { host: a.address, port: a.port } : undefined;
  }

  addPeer(peer: LinkPeerConfig): void {
    splitAddress(peer.address);
    this.endpoint.addPeer({ name: peer.name, address: peer.address, secret: peer.secret }, Date.now());
    this.pump();
  }

  removePeer(name: string): void {
    if (!this.endpoint.hasPeer(name)) return;
    this.endpoint.removePeer(name, Date.now());
    this.upPeers.delete(name);
    this.pump();
  }

  peers(): LinkPeerStats[] {
    return this.endpoint.peerNames().sort().map((n) => this.peer(n)!);
  }

  peer(name: string): LinkPeerStats | undefined {
    const s = this.endpoint.stats(name);
    if (!s) return undefined;
    return {
      name: s.name, address: s.address, state: s.state, sinceMs: s.sinceMs, bytesSent: s.bytesSent, bytesReceived: s.bytesReceived,
      messagesSent: s.messagesSent, messagesReceived: s.messagesReceived, retransmittedPackets: s.retransmittedPackets,
      ...(s.lastError ? { lastError: s.lastError } : {}),
    };
  }

  /** Called for every replicated write: answered from the peer-up/peer-down actions, not by building stats. */
  isUp(name: string): boolean {
    return this.upPeers.has(name);
  }

  async send(peer: string, message: Uint8Array): Promise<void> {
    if (this.closed) throw new TidemarkError(ErrorCode.ShuttingDown, 'link network is closed');
    if (!this.endpoint.hasPeer(peer)) throw new TidemarkError(ErrorCode.NotFound, `no peer named ${peer}`, { peer });
    while (!this.endpoint.canSend(peer, message.length)) {
      await new Promise<void>((resolve) => {
        const waiting = this.spaceWaiters.get(peer) ?? [];
        waiting.push(resolve);
        this.spaceWaiters.set(peer, waiting);
      });
      if (this.closed) throw new TidemarkError(ErrorCode.ShuttingDown, 'link network is closed');
      if (!this.endpoint.hasPeer(peer)) throw new TidemarkError(ErrorCode.LinkDown, `peer ${peer} was removed`, { peer });
    }
    this.endpoint.send(peer, message);
    this.pump();
  }

  onMessage(handler: (peer: string, message: Uint8Array) => void): void {
    this.messageHandlers.push(handler);
  }

  onPeerUp(handler: (peer: string) => void): void {
    this.upHandlers.push(handler);
  }

  onPeerDown(handler: (peer: string, reason: string) => void): void {
    this.downHandlers.push(handler);
  }

  onSessionReset(handler: (peer: string) => void): void {
    this.resetHandlers.push(handler);
  }

  private accepted(socket: Socket): void {
    if (this.closed) {
      socket.destroy();
      return;
    }
    const connId = this.endpoint.accept(Date.now());
    if (connId === undefined) {
      socket.destroy();
      return;
    }
    this.attach(connId, socket);
    this.pump();
  }

  private attach(connId: ConnId, socket: Socket): void {
    this.sockets.set(connId, socket);
    socket.setNoDelay(true);
    socket.on('data', (bytes: Buffer) => {
      this.endpoint.handle({ kind: 'data', connId, bytes }, Date.now());
      this.pump();
    });
    socket.on('drain', () => {
      this.endpoint.handle({ kind: 'writable', connId, writable: true }, Date.now());
      this.pump();
    });
    socket.on('error', () => undefined); // 'close' follows and carries the end of the connection
    socket.on('close', () => {
      if (this.sockets.get(connId) !== socket) return;
      this.sockets.delete(connId);
      if (this.closed) return;
      this.endpoint.handle({ kind: 'closed', connId, reason: 'connection closed' }, Date.now());
      this.pump();
    });
  }

  /** Performs every action the endpoint wants, then arms the timer for its next deadline. */
  private pump(): void {
    if (this.pumping || this.closed) return;
    this.pumping = true;
    try {
      for (let action = this.endpoint.poll(); action; action = this.endpoint.poll()) this.perform(action);
    } finally {
      this.pumping = false;
    }
    this.arm();
  }

  private perform(action: LinkAction): void {
    switch (action.kind) {
      case 'dial': {
        const { host, port } = splitAddress(action.address);
        const socket = connect({ host, port, noDelay: true });
        this.attach(action.connId, socket);
        socket.once('connect', () => {
          this.endpoint.handle({ kind: 'connected', connId: action.connId }, Date.now());
          this.pump();
        });
        return;
      }
      case 'send': {
        const socket = this.sockets.get(action.connId);
        if (!socket || socket.destroyed) return;
        socket.cork();
        socket.write(action.frame.header);
        const ok = socket.write(action.frame.payload);
        socket.uncork();
        if (!ok) this.endpoint.handle({ kind: 'writable', connId: action.connId, writable: false }, Date.now());
        return;
      }
      case 'close': {
        const socket = this.sockets.get(action.connId);
        if (!socket) return;
        socket.end();
        setTimeout(() => socket.destroy(), CLOSE_GRACE_MS).unref();
        return;
      }
      case 'deliver':
        for (const h of this.messageHandlers) h(action.peer, action.message);
        return;
      case 'peer-up':
        this.upPeers.add(action.peer);
        this.options.log?.('info', 'link up', { peer: action.peer });
        for (const h of this.upHandlers) h(action.peer);
        return;
      case 'peer-down':
        this.upPeers.delete(action.peer);
        this.options.log?.('warn', 'link down', { peer: action.peer, reason: action.reason });
        for (const h of this.downHandlers) h(action.peer, action.reason);
        return;
      case 'session-reset':
        this.options.log?.('warn', 'link session reset', { peer: action.peer, undeliveredMessages: action.undeliveredMessages });
        for (const h of this.resetHandlers) h(action.peer);
        return;
      case 'send-space': {
        const waiting = this.spaceWaiters.get(action.peer) ?? [];
        this.spaceWaiters.delete(action.peer);
        for (const resolve of waiting) resolve();
        return;
      }
      case 'log':
        this.options.log?.(action.level, action.msg, { ...action.fields });
        return;
    }
  }

  private arm(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const deadline = this.endpoint.nextDeadlineMs();
    if (deadline === undefined || this.closed) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.endpoint.handle({ kind: 'tick' }, Date.now());
      this.pump();
    }, Math.max(0, deadline - Date.now()));
    this.timer.unref();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    for (const waiting of this.spaceWaiters.values()) for (const resolve of waiting) resolve();
    this.spaceWaiters.clear();
    for (const socket of this.sockets.values()) socket.destroy();
    this.sockets.clear();
    if (this.server) await new Promise<void>((resolve) => this.server!.close(() => resolve()));
  }
}
