// One array's side of all its replication links, as a sans-I/O state machine. The driver (the TCP
// adapter or the simulator) feeds events with handle(event, nowMs), performs the actions poll()
// returns, and calls handle({kind:'tick'}) at nextDeadlineMs().
//
// Who dials: both arrays know each other's address; the array whose name sorts lower (plain
// string comparison) dials, the other only accepts, so two arrays never race to build two
// sessions. An inbound connection from a name that should be accepting is refused.
//
// Connection phases: dialing → hello → auth → resume → open. Before `open` only handshake frames
// are accepted (HELLO, AUTH, ERROR; RESUME as the first frame after authentication). Any protocol
// violation closes that connection (sticky for the connection); the session survives and the link
// reconnects with exponential backoff and jitter.
import { assert, assertNever } from '../lib/assert.js';
import { invalidArgument, notFound } from '../errors.js';
import {
  encodeFrame, FRAME_HEADER_BYTES, FrameDecoder, frameBytes, FrameType, LINK_PROTOCOL_VERSION, MAX_FRAME_PAYLOAD_BYTES, type Frame,
} from './frame.js';
import {
  computeProof, constantTimeEqual, decodeError, decodeHello, encodeError, encodeHello, INCARNATION_BYTES, isValidArrayName,
  LinkErrorCode, NONCE_BYTES, PROOF_BYTES, type Hello, type Role,
} from './handshake.js';
import { deriveLinkKeys, FrameOpener, FrameSealer } from './cipher.js';
import { messageCostBytes, ReceiveSide, SendSide } from './session.js';
import { PEER_PROTOCOL_VERSION } from '../replication/peer-protocol.js';
import {
  LINK_DEFAULTS, MAX_STREAMS, type ConnId, type LinkAction, type LinkConfig, type LinkEvent, type PeerConfig, type PeerState,
  type PeerStats,
} from './types.js';

type Phase = 'dialing' | 'hello' | 'auth' | 'resume' | 'open';

interface Conn {
  readonly id: ConnId;
  readonly role: Role;
  /** Known from the start when dialing; after the peer's HELLO when accepting. */
  peer: Peer | undefined;
  phase: Phase;
  readonly decoder: FrameDecoder;
  ownHello: Hello;
  peerHello: Hello | undefined;
  readonly openedMs: number;
  /** An acceptor's remote address as the driver gave it ('' when unknown). */
  readonly source?: string;
  lastReceivedMs: number;
  lastSentMs: number;
  writable: boolean;
  /** This connection ended in an authentication failure (the peer state says so until a later attempt). */
  authFailed: boolean;
  /** Seals what we send once both proofs verified (cipher.ts); undefined during the handshake. */
  sealer: FrameSealer | undefined;
}

interface Counters {
  bytesSent: number;
  bytesReceived: number;
  packetsSent: number;
  packetsReceived: number;
  messagesSent: number;
  messagesReceived: number;
  retransmittedPackets: number;
}

interface Peer {
  readonly config: PeerConfig;
  readonly dials: boolean;
  state: PeerState;
  sinceMs: number;
  lastError: string | undefined;
  readonly conns: Set<Conn>;
  /** Our incarnation for this session: fresh per added peer, so re-adding a peer starts over on both sides. */
  readonly incarnation: Uint8Array;
  /** The peer's incarnation this session belongs to; undefined until the first authentication. */
  peerIncarnation: Uint8Array | undefined;
  peerWindowBytes: number;
  send: SendSide;
  receive: ReceiveSide;
  /** The receive position last acknowledged to the peer. */
  ackedToPeer: number;
  /** A delayed acknowledgement is owed by then. */
  ackDueMs: number | undefined;
  /** Frame bytes received since the last acknowledgement (an ACK goes at once past half our window). */
  unackedReceivedBytes: number;
  /** canSend() said no: tell the app when the window opens. */
  blocked: boolean;
  failures: number;
  nextDialMs: number;
  rotation: number;
  readonly counters: Counters;
}

const hex = (b: Uint8Array): string => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
const sameBytes = (a: Uint8Array, b: Uint8Array): boolean => a.length === b.length && a.every((x, i) => x === b[i]);
/** Unacknowledged packets after which an ACK goes out at once instead of after ackDelayMs. */
const ACK_EVERY_PACKETS = 16;

export class LinkEndpoint {
  private readonly cfg: Required<Omit<LinkConfig, 'crypto' | 'random' | 'arrayName'>>;
  private readonly peers = new Map<string, Peer>();
  private readonly conns = new Map<ConnId, Conn>();
  private readonly actions: LinkAction[] = [];
  private nowMs: number;
  private nextConnId = 1;
  private pumpRotation = 0;

  constructor(private readonly config: LinkConfig, nowMs: number) {
    this.nowMs = nowMs;
    this.cfg = {
      streams: config.streams ?? LINK_DEFAULTS.streams,
      heartbeatIntervalMs: config.heartbeatIntervalMs ?? LINK_DEFAULTS.heartbeatIntervalMs,
      deadAfterMs: config.deadAfterMs ?? LINK_DEFAULTS.deadAfterMs,
      windowBytes: config.windowBytes ?? LINK_DEFAULTS.windowBytes,
      maxPacketBytes: config.maxPacketBytes ?? LINK_DEFAULTS.maxPacketBytes,
      maxMessageBytes: config.maxMessageBytes ?? LINK_DEFAULTS.maxMessageBytes,
      backoffInitialMs: config.backoffInitialMs ?? LINK_DEFAULTS.backoffInitialMs,
      backoffMaxMs: config.backoffMaxMs ?? LINK_DEFAULTS.backoffMaxMs,
      handshakeTimeoutMs: config.handshakeTimeoutMs ?? LINK_DEFAULTS.handshakeTimeoutMs,
      maxPendingInbound: config.maxPendingInbound ?? LINK_DEFAULTS.maxPendingInbound,
      maxPendingInboundPerSource: config.maxPendingInboundPerSource ?? LINK_DEFAULTS.maxPendingInboundPerSource,
      ackDelayMs: config.ackDelayMs ?? LINK_DEFAULTS.ackDelayMs,
      protocolVersion: config.protocolVersion ?? PEER_PROTOCOL_VERSION,
    };
    const c = this.cfg;
    if (!isValidArrayName(config.arrayName)) throw invalidArgument(`invalid array name ${JSON.stringify(config.arrayName)}`);
    if (!Number.isInteger(c.streams) || c.streams < 1 || c.streams > MAX_STREAMS) throw invalidArgument(`streams must be 1..${MAX_STREAMS}`);
    if (!(c.heartbeatIntervalMs > 0 && c.deadAfterMs > c.heartbeatIntervalMs)) throw invalidArgument('deadAfterMs must exceed heartbeatIntervalMs > 0');
    if (!(c.maxPacketBytes >= 1 && c.maxPacketBytes <= MAX_FRAME_PAYLOAD_BYTES)) throw invalidArgument(`maxPacketBytes must be 1..${MAX_FRAME_PAYLOAD_BYTES}`);
    if (!(c.windowBytes >= 64 * 1024 && c.windowBytes <= 0xffffffff && c.windowBytes >= 2 * (c.maxPacketBytes + 24))) {
      throw invalidArgument('windowBytes must be >= 64 KiB, >= two packets and fit 32 bits');
    }
    if (!(c.maxMessageBytes >= 0 && c.backoffInitialMs > 0 && c.backoffMaxMs >= c.backoffInitialMs)) throw invalidArgument('bad link limits');
  }

  get arrayName(): string {
    return this.config.arrayName;
  }

  // ---- app-facing ----

  addPeer(peer: PeerConfig, nowMs: number): void {
    this.advance(nowMs);
    if (!isValidArrayName(peer.name)) throw invalidArgument(`invalid peer name ${JSON.stringify(peer.name)}`);
    if (peer.name === this.config.arrayName) throw invalidArgument('a peer must have a name different from this array');
    if (this.peers.has(peer.name)) throw invalidArgument(`peer ${peer.name} already exists`);
    if (peer.secret.length < 16) throw invalidArgument('a link secret must be at least 16 bytes');
    const incarnation = this.config.crypto.randomBytes(INCARNATION_BYTES);
    assert(incarnation.length === INCARNATION_BYTES, 'randomBytes length');
    this.peers.set(peer.name, {
      config: { name: peer.name, address: peer.address, secret: peer.secret.slice() },
      dials: this.config.arrayName < peer.name,
      state: 'connecting',
      sinceMs: nowMs,
      lastError: undefined,
      conns: new Set(),
      incarnation,
      peerIncarnation: undefined,
      peerWindowBytes: this.cfg.windowBytes,
      send: this.newSendSide(),
      receive: this.newReceiveSide(),
      ackedToPeer: 0,
      ackDueMs: undefined,
      unackedReceivedBytes: 0,
      blocked: false,
      failures: 0,
      nextDialMs: nowMs,
      rotation: 0,
      counters: { bytesSent: 0, bytesReceived: 0, packetsSent: 0, packetsReceived: 0, messagesSent: 0, messagesReceived: 0, retransmittedPackets: 0 },
    });
    this.maybeDial(this.peers.get(peer.name)!);
  }

  removePeer(name: string, nowMs: number): void {
    this.advance(nowMs);
    const peer = this.peers.get(name);
    if (!peer) throw notFound(`no peer named ${name}`);
    for (const conn of [...peer.conns]) this.closeConn(conn, 'peer removed', true);
    this.peers.delete(name);
  }

  hasPeer(name: string): boolean {
    return this.peers.has(name);
  }

  peerNames(): string[] {
    return [...this.peers.keys()];
  }

  /** Whether a message of `length` bytes fits the peer's send window now; if not, a `send-space` action follows later. */
  canSend(name: string, length: number): boolean {
    const peer = this.requirePeer(name);
    if (length > this.cfg.maxMessageBytes) throw invalidArgument(`message of ${length} bytes exceeds ${this.cfg.maxMessageBytes}`);
    const ok = peer.send.canAccept(length);
    if (!ok) peer.blocked = true;
    return ok;
  }

  /**
   * Queues a message for in-order, exactly-once delivery in this session. Check canSend first.
   * The endpoint keeps `message` itself, not a copy, until the peer acknowledges it: the caller
   * hands it over and never changes it afterwards (every sender encodes a fresh message).
   */
  send(name: string, message: Uint8Array): void {
    const peer = this.requirePeer(name);
    if (message.length > this.cfg.maxMessageBytes) throw invalidArgument(`message of ${message.length} bytes exceeds ${this.cfg.maxMessageBytes}`);
    assert(peer.send.canAccept(message.length), 'send() without room in the window: check canSend()');
    peer.send.accept(message);
    peer.counters.messagesSent++;
  }

  /** The peer's state alone (cheap; stats() builds the whole record). */
  state(name: string): PeerState | undefined {
    return this.peers.get(name)?.state;
  }

  stats(name: string): PeerStats | undefined {
    const peer = this.peers.get(name);
    if (!peer) return undefined;
    return {
      name: peer.config.name,
      address: peer.config.address,
      state: peer.state,
      sinceMs: peer.sinceMs,
      sessionId: this.sessionId(peer),
      connections: [...peer.conns].filter((c) => c.phase === 'open').length,
      ...peer.counters,
      unackedBytes: peer.send.unackedBytes,
      lastError: peer.lastError,
    };
  }

  // ---- driver-facing ----

  /**
   * The transport accepted an inbound connection from `source` (its remote address): returns its
   * connId, or undefined when too many unauthenticated connections are pending, in all or from
   * that source (the driver closes the socket at once). The per-source bound keeps one host from
   * taking every pending slot and so locking the real peers out until its handshakes time out.
   */
  accept(nowMs: number, source = ''): ConnId | undefined {
    this.advance(nowMs);
    let pending = 0;
    let fromSource = 0;
    for (const c of this.conns.values()) {
      if (c.role !== 'acceptor' || c.phase === 'open') continue;
      pending++;
      if (c.source === source) fromSource++;
    }
    if (pending >= this.cfg.maxPendingInbound || fromSource >= this.cfg.maxPendingInboundPerSource) return undefined;
    const id = this.nextConnId++;
    this.conns.set(id, { ...this.newConn(id, 'acceptor', undefined), source });
    return id;
  }

  handle(event: LinkEvent, nowMs: number): void {
    this.advance(nowMs);
    switch (event.kind) {
      case 'connected': {
        const conn = this.conns.get(event.connId);
        if (!conn || conn.phase !== 'dialing') return;
        conn.phase = 'hello';
        conn.lastReceivedMs = this.nowMs;
        this.sendFrame(conn, FrameType.Hello, 0, 0, encodeHello(conn.ownHello));
        return;
      }
      case 'data': return this.onData(event.connId, event.bytes);
      case 'closed': {
        const conn = this.conns.get(event.connId);
        if (conn) this.closeConn(conn, event.reason, false);
        return;
      }
      case 'writable': {
        const conn = this.conns.get(event.connId);
        if (conn) conn.writable = event.writable;
        return;
      }
      case 'tick': return this.onTick();
      default: return assertNever(event, 'link event');
    }
  }

  /** The next action; sends of queued packets are produced lazily, so `writable: false` takes effect at once. */
  poll(): LinkAction | undefined {
    if (this.actions.length === 0) this.pumpOne();
    return this.actions.shift();
  }

  /** When the endpoint next needs a tick (heartbeats, dead peers, handshake timeouts, redials). */
  nextDeadlineMs(): number | undefined {
    let next = Number.POSITIVE_INFINITY;
    for (const conn of this.conns.values()) {
      if (conn.phase !== 'open') next = Math.min(next, conn.openedMs + this.cfg.handshakeTimeoutMs);
      if (conn.phase === 'dialing') continue;
      next = Math.min(next, conn.lastReceivedMs + this.cfg.deadAfterMs);
      if (conn.phase === 'open') next = Math.min(next, conn.lastSentMs + this.cfg.heartbeatIntervalMs);
    }
    for (const peer of this.peers.values()) {
      if (this.wantsDial(peer)) next = Math.min(next, peer.nextDialMs);
      if (peer.ackDueMs !== undefined) next = Math.min(next, peer.ackDueMs);
    }
    return Number.isFinite(next) ? next : undefined;
  }

  // ---- internals ----

  private advance(nowMs: number): void {
    assert(Number.isFinite(nowMs), 'nowMs');
    // Time never goes backwards for the machine even if a driver's clock does.
    if (nowMs > this.nowMs) this.nowMs = nowMs;
  }

  private emit(action: LinkAction): void {
    this.actions.push(action);
  }

  private log(level: 'info' | 'warn' | 'error', msg: string, fields: Record<string, unknown>): void {
    this.emit({ kind: 'log', level, msg, fields });
  }

  private requirePeer(name: string): Peer {
    const peer = this.peers.get(name);
    if (!peer) throw notFound(`no peer named ${name}`);
    return peer;
  }

  private newSendSide(): SendSide {
    return new SendSide({ windowBytes: this.cfg.windowBytes, maxPacketBytes: this.cfg.maxPacketBytes, maxMessageBytes: this.cfg.maxMessageBytes });
  }

  private newReceiveSide(): ReceiveSide {
    return new ReceiveSide({ windowBytes: this.cfg.windowBytes, maxMessageBytes: this.cfg.maxMessageBytes });
  }

  private newConn(id: ConnId, role: Role, peer: Peer | undefined): Conn {
    const nonce = this.config.crypto.randomBytes(NONCE_BYTES);
    assert(nonce.length === NONCE_BYTES, 'randomBytes length');
    return {
      id, role, peer, phase: role === 'dialer' ? 'dialing' : 'hello',
      // The protocol's cap, not our own packet size: peers may be configured differently.
      decoder: new FrameDecoder(MAX_FRAME_PAYLOAD_BYTES),
      // The acceptor's HELLO names its incarnation for that peer, so it is filled in once the peer is known.
      ownHello: { windowBytes: this.cfg.windowBytes, nonce, incarnation: peer?.incarnation ?? new Uint8Array(INCARNATION_BYTES), name: this.config.arrayName,
        protocolVersion: this.cfg.protocolVersion },
      peerHello: undefined,
      openedMs: this.nowMs,
      lastReceivedMs: this.nowMs,
      lastSentMs: this.nowMs,
      writable: true,
      authFailed: false,
      sealer: undefined,
    };
  }

  private sessionId(peer: Peer): string | undefined {
    if (!peer.peerIncarnation) return undefined;
    const [d, a] = peer.dials ? [peer.incarnation, peer.peerIncarnation] : [peer.peerIncarnation, peer.incarnation];
    return `${hex(d)}-${hex(a)}`;
  }

  /** Sends a frame: sealed once the connection has keys, clear (CRC) during the handshake. */
  private sendFrame(conn: Conn, type: FrameType, flags: number, seq: number, payload: Uint8Array): void {
    const frame = conn.sealer ? conn.sealer.seal(type, flags, seq, payload) : encodeFrame(type, flags, seq, payload);
    conn.lastSentMs = this.nowMs;
    if (conn.peer) conn.peer.counters.bytesSent += frameBytes(frame);
    this.emit({ kind: 'send', connId: conn.id, frame });
  }

  private setState(peer: Peer, state: PeerState): void {
    if (peer.state === state) return;
    peer.state = state;
    peer.sinceMs = this.nowMs;
  }

  private wantsDial(peer: Peer): boolean {
    if (!peer.dials) return false;
    let open = 0;
    for (const c of peer.conns) {
      if (c.phase !== 'open') return false; // one handshake at a time
      open++;
    }
    return open < this.cfg.streams;
  }

  private onTick(): void {
    const now = this.nowMs;
    for (const conn of [...this.conns.values()]) {
      if (conn.phase !== 'open' && now - conn.openedMs >= this.cfg.handshakeTimeoutMs) {
        this.closeConn(conn, conn.phase === 'dialing' ? `connecting to ${conn.peer?.config.address} timed out` : 'handshake timed out', true);
      } else if (conn.phase === 'dialing') {
        continue;
      } else if (now - conn.lastReceivedMs >= this.cfg.deadAfterMs) {
        this.closeConn(conn, `nothing received for ${now - conn.lastReceivedMs} ms`, true);
      } else if (conn.phase === 'open' && now - conn.lastSentMs >= this.cfg.heartbeatIntervalMs) {
        this.sendFrame(conn, FrameType.Heartbeat, 0, 0, new Uint8Array(0));
      }
    }
    for (const peer of this.peers.values()) {
      this.maybeDial(peer);
      if (peer.ackDueMs !== undefined && now >= peer.ackDueMs) {
        const conn = this.freshestOpenConn(peer);
        if (conn) this.sendAck(conn, peer);
        else peer.ackDueMs = undefined;
      }
    }
  }

  /** The open connection the peer was last heard on: the likeliest to be alive. */
  private freshestOpenConn(peer: Peer): Conn | undefined {
    let best: Conn | undefined;
    for (const c of peer.conns) if (c.phase === 'open' && (best === undefined || c.lastReceivedMs > best.lastReceivedMs)) best = c;
    return best;
  }

  private maybeDial(peer: Peer): void {
    if (!this.wantsDial(peer) || this.nowMs < peer.nextDialMs) return;
    const id = this.nextConnId++;
    const conn = this.newConn(id, 'dialer', peer);
    this.conns.set(id, conn);
    peer.conns.add(conn);
    this.emit({ kind: 'dial', connId: id, peer: peer.config.name, address: peer.config.address });
  }

  private backoffMs(failures: number): number {
    const base = Math.min(this.cfg.backoffMaxMs, this.cfg.backoffInitialMs * 2 ** Math.min(30, Math.max(0, failures - 1)));
    const r = this.config.random();
    assert(r >= 0 && r < 1, 'random() must be in [0, 1)');
    // "Equal jitter": at least half the backoff, so a dead peer is not hammered, spread so that
    // many links restarting together do not dial in lockstep.
    return Math.round(base / 2 + (base / 2) * r);
  }

  /** Ends a connection. `emitClose`: the machine decided (the driver has not reported it closed). */
  private closeConn(conn: Conn, reason: string, emitClose: boolean): void {
    if (!this.conns.delete(conn.id)) return;
    if (emitClose) this.emit({ kind: 'close', connId: conn.id, reason });
    const peer = conn.peer;
    if (!peer || !peer.conns.delete(conn)) return;
    peer.send.connectionLost(conn.id);
    if (conn.phase === 'open' || conn.phase === 'resume') {
      this.log('warn', 'link connection lost', { peer: peer.config.name, connId: conn.id, reason });
    }
    if (!conn.authFailed) peer.lastError = reason;
    const survivor = this.freshestOpenConn(peer);
    const stillOpen = survivor !== undefined;
    // An acknowledgement sent on the lost connection may never arrive, and a window-blocked peer
    // sends nothing that would make us acknowledge again (link seed 3124): say it once more on a
    // connection that is still open (acknowledgements are cumulative, a repeat is harmless).
    if (survivor && conn.phase === 'open' && peer.ackedToPeer > 0) this.sendFrame(survivor, FrameType.Ack, 0, peer.ackedToPeer, new Uint8Array(0));
    if (!stillOpen && peer.state === 'up') {
      this.setState(peer, 'down');
      this.emit({ kind: 'peer-down', peer: peer.config.name, reason });
    } else if (!stillOpen && (peer.state === 'connecting' || (peer.state === 'auth-failed' && !conn.authFailed))) {
      // A later attempt that failed otherwise (refused, timed out) is no longer an auth failure.
      this.setState(peer, 'down');
    }
    if (peer.dials) {
      peer.failures++;
      peer.nextDialMs = this.nowMs + this.backoffMs(peer.failures);
    }
  }

  /** A protocol violation: tell the peer why (best effort) and close. */
  private violation(conn: Conn, code: LinkErrorCode, reason: string): void {
    this.sendFrame(conn, FrameType.Error, 0, 0, encodeError(code, reason));
    this.log('warn', 'link protocol error', { peer: conn.peer?.config.name, connId: conn.id, reason });
    this.closeConn(conn, reason, true);
  }

  private onData(connId: ConnId, bytes: Uint8Array): void {
    const conn = this.conns.get(connId);
    if (!conn || conn.phase === 'dialing') return;
    if (conn.peer) conn.peer.counters.bytesReceived += bytes.length;
    conn.decoder.push(bytes);
    for (;;) {
      if (!this.conns.has(connId)) return; // closed while handling a frame
      const result = conn.decoder.next();
      switch (result.kind) {
        case 'need-more':
          this.maybeAck(conn);
          return;
        case 'version-mismatch':
          this.sendFrame(conn, FrameType.Error, 0, 0,
            encodeError(LinkErrorCode.VersionMismatch, `protocol version mismatch: this array speaks v${LINK_PROTOCOL_VERSION}, peer sent v${result.peerVersion}`));
          if (conn.peer) {
            conn.peer.lastError = `protocol version mismatch: peer speaks v${result.peerVersion}, we speak v${LINK_PROTOCOL_VERSION}`;
          }
          this.log('error', 'link protocol version mismatch', { connId, peerVersion: result.peerVersion, ownVersion: LINK_PROTOCOL_VERSION });
          this.closeConn(conn, `protocol version mismatch: peer speaks v${result.peerVersion}, we speak v${LINK_PROTOCOL_VERSION}`, true);
          return;
        case 'error':
          this.violation(conn, LinkErrorCode.Protocol, result.reason);
          return;
        case 'frame':
          // Liveness counts whole frames, not bytes: a corrupted length must not keep a connection
          // "alive" while the decoder waits for a payload that will never make sense.
          conn.lastReceivedMs = this.nowMs;
          this.onFrame(conn, result.frame);
          break;
        default:
          assertNever(result, 'decode result');
      }
    }
  }

  private onFrame(conn: Conn, frame: Frame): void {
    if (frame.type === FrameType.Error) {
      const { code, message } = decodeError(frame.payload);
      const reason = `peer closed the link: ${message}`;
      if (code === LinkErrorCode.VersionMismatch) this.log('error', 'link refused by the peer', { peer: conn.peer?.config.name, connId: conn.id, reason: message });
      if (conn.peer && code === LinkErrorCode.AuthFailed) this.authFailed(conn, conn.peer, reason);
      else if (conn.peer) conn.peer.lastError = reason;
      this.closeConn(conn, reason, true);
      return;
    }
    switch (conn.phase) {
      case 'dialing': return assert(false, 'frames before connected');
      case 'hello': return this.onHello(conn, frame);
      case 'auth': return this.onAuth(conn, frame);
      case 'resume': return this.onResume(conn, frame);
      case 'open': return this.onOpenFrame(conn, frame);
      default: return assertNever(conn.phase, 'phase');
    }
  }

  private onHello(conn: Conn, frame: Frame): void {
    if (frame.type !== FrameType.Hello) return this.violation(conn, LinkErrorCode.Protocol, `frame type ${frame.type} before authentication`);
    const parsed = decodeHello(frame.payload);
    if (!parsed.ok) return this.violation(conn, LinkErrorCode.Protocol, parsed.reason);
    const hello = parsed.value;
    if (conn.role === 'dialer') {
      const peer = conn.peer!;
      if (hello.name !== peer.config.name) {
        return this.violation(conn, LinkErrorCode.UnknownPeer, `dialled ${peer.config.name} at ${peer.config.address} but ${hello.name} answered`);
      }
      if (hello.protocolVersion !== this.cfg.protocolVersion) return this.versionRefused(conn, hello);
      conn.peerHello = hello;
      conn.phase = 'auth';
      const proof = computeProof(this.config.crypto, peer.config.secret, 'dialer', { dialer: conn.ownHello, acceptor: hello });
      this.sendFrame(conn, FrameType.Auth, 0, 0, proof);
      return;
    }
    const peer = this.peers.get(hello.name);
    if (!peer) {
      this.log('warn', 'link connection from an unknown array refused', { connId: conn.id, name: hello.name });
      return this.violation(conn, LinkErrorCode.UnknownPeer, `array ${hello.name} is not a configured peer of ${this.config.arrayName}`);
    }
    if (peer.dials) {
      return this.violation(conn, LinkErrorCode.WrongDialer, `${this.config.arrayName} dials ${hello.name} (the lower name dials), not the other way round`);
    }
    conn.peer = peer;
    peer.conns.add(conn);
    // Refused before this side says anything of itself: the ERROR carries both versions.
    if (hello.protocolVersion !== this.cfg.protocolVersion) return this.versionRefused(conn, hello);
    conn.peerHello = hello;
    conn.ownHello = { ...conn.ownHello, incarnation: peer.incarnation };
    conn.phase = 'auth';
    this.sendFrame(conn, FrameType.Hello, 0, 0, encodeHello(conn.ownHello));
  }

  /**
   * The peer speaks another version of the messages between arrays: nothing it would send could be
   * trusted to mean what this array reads. Both sides show why in the peer's last error.
   */
  private versionRefused(conn: Conn, hello: Hello): void {
    const own = this.cfg.protocolVersion;
    const reason = `peer protocol version mismatch: ${hello.name} speaks v${hello.protocolVersion}, ${this.config.arrayName} speaks v${own}` +
      (hello.protocolVersion < own ? ` (upgrade ${hello.name})` : ` (upgrade ${this.config.arrayName})`);
    this.log('error', 'link refused: peer protocol version mismatch', { peer: hello.name, connId: conn.id, peerVersion: hello.protocolVersion, ownVersion: own, reason });
    this.sendFrame(conn, FrameType.Error, 0, 0, encodeError(LinkErrorCode.VersionMismatch, reason));
    this.closeConn(conn, reason, true);
  }

  private onAuth(conn: Conn, frame: Frame): void {
    if (frame.type !== FrameType.Auth) return this.violation(conn, LinkErrorCode.Protocol, `frame type ${frame.type} before authentication`);
    const peer = conn.peer!;
    const peerHello = conn.peerHello!;
    if (frame.payload.length !== PROOF_BYTES) return this.violation(conn, LinkErrorCode.Protocol, 'AUTH proof has the wrong length');
    const input = conn.role === 'dialer' ? { dialer: conn.ownHello, acceptor: peerHello } : { dialer: peerHello, acceptor: conn.ownHello };
    const peerRole: Role = conn.role === 'dialer' ? 'acceptor' : 'dialer';
    const expected = computeProof(this.config.crypto, peer.config.secret, peerRole, input);
    if (!constantTimeEqual(expected, frame.payload)) {
      const reason = `authentication failed: ${peer.config.name} did not prove the shared secret`;
      this.authFailed(conn, peer, reason);
      this.log('error', 'link authentication failed', { peer: peer.config.name, connId: conn.id });
      return this.violation(conn, LinkErrorCode.AuthFailed, 'authentication failed');
    }
    if (conn.role === 'acceptor') {
      // Only now does the acceptor prove itself: it reveals nothing to a dialer that failed.
      this.sendFrame(conn, FrameType.Auth, 0, 0, computeProof(this.config.crypto, peer.config.secret, 'acceptor', input));
    }
    this.startSealing(conn, peer, input);
    this.authenticated(conn, peer, peerHello);
  }

  /**
   * From here on every frame either side sends on this connection is sealed and every frame it
   * receives must be: the acceptor's last clear frame is its AUTH, the dialer's is its AUTH sent
   * before this point; each side's first sealed frame is its RESUME.
   */
  private startSealing(conn: Conn, peer: Peer, hellos: { dialer: Hello; acceptor: Hello }): void {
    const keys = deriveLinkKeys(this.config.crypto, peer.config.secret, hellos);
    const [sendKey, receiveKey] = conn.role === 'dialer' ? [keys.dialerToAcceptor, keys.acceptorToDialer] : [keys.acceptorToDialer, keys.dialerToAcceptor];
    conn.sealer = new FrameSealer(this.config.crypto, sendKey);
    conn.decoder.openWith(new FrameOpener(this.config.crypto, receiveKey));
  }

  private authFailed(conn: Conn, peer: Peer, reason: string): void {
    conn.authFailed = true;
    peer.lastError = reason;
    // An impostor must not make a working link look broken.
    if (![...peer.conns].some((c) => c.phase === 'open')) this.setState(peer, 'auth-failed');
  }

  private authenticated(conn: Conn, peer: Peer, hello: Hello): void {
    const open = [...peer.conns].filter((c) => c !== conn && c.phase !== 'dialing' && c.phase !== 'hello' && c.phase !== 'auth');
    if (open.length >= MAX_STREAMS) {
      // Bounded per peer; the oldest is the likeliest to be a half-dead one the peer gave up on.
      const oldest = open.reduce((a, b) => (a.openedMs <= b.openedMs ? a : b));
      this.closeConn(oldest, 'replaced by a newer connection', true);
    }
    if (peer.peerIncarnation && !sameBytes(peer.peerIncarnation, hello.incarnation)) {
      // The peer restarted (or re-created its side): whatever it had of this session is gone.
      const undelivered = peer.send.unackedMessages;
      this.log('warn', 'link session reset: the peer has a new incarnation', { peer: peer.config.name, undeliveredMessages: undelivered });
      for (const other of [...peer.conns]) {
        // Connections of the old incarnation belong to the old session; new ones mid-handshake may stay.
        if (other !== conn && other.peerHello && !sameBytes(other.peerHello.incarnation, hello.incarnation)) {
          this.closeConn(other, 'session reset', true);
        }
      }
      peer.send = this.newSendSide();
      peer.receive = this.newReceiveSide();
      peer.ackedToPeer = 0;
      peer.ackDueMs = undefined;
      peer.unackedReceivedBytes = 0;
      peer.peerIncarnation = hello.incarnation;
      this.emit({ kind: 'session-reset', peer: peer.config.name, undeliveredMessages: undelivered });
      if (peer.blocked) {
        peer.blocked = false;
        this.emit({ kind: 'send-space', peer: peer.config.name });
      }
    }
    peer.peerIncarnation = hello.incarnation;
    peer.peerWindowBytes = hello.windowBytes;
    conn.phase = 'resume';
    this.sendFrame(conn, FrameType.Resume, 0, peer.receive.receivedThrough, new Uint8Array(0));
    peer.ackedToPeer = Math.max(peer.ackedToPeer, peer.receive.receivedThrough);
    peer.unackedReceivedBytes = 0;
  }

  private onResume(conn: Conn, frame: Frame): void {
    if (frame.type !== FrameType.Resume || frame.payload.length !== 0) {
      return this.violation(conn, LinkErrorCode.Protocol, `expected RESUME, got frame type ${frame.type}`);
    }
    const peer = conn.peer!;
    if (!this.applyAck(conn, peer, frame.seq)) return;
    conn.phase = 'open';
    peer.failures = 0;
    peer.nextDialMs = this.nowMs;
    this.maybeDial(peer); // the next parallel stream, if any
    if (peer.state !== 'up') {
      this.setState(peer, 'up');
      // lastError stays: it is the last error seen, for operators; the state says the link is fine now.
      this.log('info', 'link up', { peer: peer.config.name, sessionId: this.sessionId(peer) });
      this.emit({ kind: 'peer-up', peer: peer.config.name });
    }
  }

  private applyAck(conn: Conn, peer: Peer, seq: number): boolean {
    const result = peer.send.ack(seq);
    if (!result.ok) {
      this.violation(conn, LinkErrorCode.Protocol, result.reason);
      return false;
    }
    if (result.releasedBytes > 0 && peer.blocked) {
      peer.blocked = false;
      this.emit({ kind: 'send-space', peer: peer.config.name });
    }
    return true;
  }

  private onOpenFrame(conn: Conn, frame: Frame): void {
    const peer = conn.peer!;
    switch (frame.type) {
      case FrameType.Data: {
        peer.counters.packetsReceived++;
        peer.unackedReceivedBytes += FRAME_HEADER_BYTES + frame.payload.length;
        const result = peer.receive.receive(frame);
        if (!result.ok) return this.violation(conn, LinkErrorCode.Protocol, result.reason);
        for (const message of result.delivered) {
          peer.counters.messagesReceived++;
          this.emit({ kind: 'deliver', peer: peer.config.name, message });
        }
        return;
      }
      case FrameType.Ack:
        if (frame.payload.length !== 0) return this.violation(conn, LinkErrorCode.Protocol, 'ACK with a payload');
        this.applyAck(conn, peer, frame.seq);
        return;
      case FrameType.Heartbeat:
        if (frame.payload.length !== 0) return this.violation(conn, LinkErrorCode.Protocol, 'HEARTBEAT with a payload');
        return;
      case FrameType.Hello:
      case FrameType.Auth:
      case FrameType.Resume:
        return this.violation(conn, LinkErrorCode.Protocol, `handshake frame type ${frame.type} on an open connection`);
      case FrameType.Error:
        return assert(false, 'ERROR handled before the phase switch');
      default:
        return assertNever(frame.type, 'frame type');
    }
  }

  /**
   * After a batch of received bytes: acknowledge what was consumed. The acknowledgement rides with
   * the next DATA frame to the peer (pumpOne: one write, and no wake-up of the peer for an ACK of its
   * own) — a request's reply, usually — or goes alone after ackDelayMs. It goes at once when many
   * packets or half our window are unacknowledged: the sender's window must keep moving.
   */
  private maybeAck(conn: Conn): void {
    const peer = conn.peer;
    if (!peer || conn.phase !== 'open') return;
    const through = peer.receive.receivedThrough;
    if (through <= peer.ackedToPeer) return;
    if (through - peer.ackedToPeer >= ACK_EVERY_PACKETS || peer.unackedReceivedBytes * 2 >= this.cfg.windowBytes ||
      this.cfg.ackDelayMs === 0) this.sendAck(conn, peer);
    else peer.ackDueMs ??= this.nowMs + this.cfg.ackDelayMs;
  }

  private sendAck(conn: Conn, peer: Peer): void {
    peer.ackDueMs = undefined;
    const through = peer.receive.receivedThrough;
    if (through <= peer.ackedToPeer) return;
    peer.ackedToPeer = through;
    peer.unackedReceivedBytes = 0;
    this.sendFrame(conn, FrameType.Ack, 0, through, new Uint8Array(0));
  }

  /** Puts one queued packet on an open, writable connection, rotating over peers and streams. */
  private pumpOne(): void {
    const peers = [...this.peers.values()];
    for (let i = 0; i < peers.length; i++) {
      const peer = peers[(this.pumpRotation + i) % peers.length]!;
      if (!peer.send.hasWork(peer.peerWindowBytes)) continue;
      const conns = [...peer.conns].filter((c) => c.phase === 'open' && c.writable);
      if (conns.length === 0) continue;
      const conn = conns[peer.rotation++ % conns.length]!;
      const next = peer.send.next(conn.id, peer.peerWindowBytes);
      assert(next !== undefined, 'hasWork() but no packet');
      peer.counters.packetsSent++;
      if (next.retransmit) peer.counters.retransmittedPackets++;
      if (peer.ackDueMs !== undefined) this.sendAck(conn, peer);
      this.sendFrame(conn, FrameType.Data, next.packet.flags, next.packet.seq, next.packet.payload);
      this.pumpRotation = (this.pumpRotation + i + 1) % peers.length;
      return;
    }
  }

  /** For tests: the cost a message has against the window. */
  messageCostBytes(length: number): number {
    return messageCostBytes(length, this.cfg.maxPacketBytes);
  }
}
