// Relay tunnels as a link transport (docs/design/routing-and-relay.md). For the link endpoint a
// tunnel is one more kind of connection: a byte stream it dials (address `relay:R`) or accepts,
// whose bytes are its own handshake and sealed frames. This module carries those bytes inside the
// link sessions with the relay, as tunnel messages (core/link/tunnel-codec.ts), and, on a relay,
// passes them from one neighbour's session to the other's without looking inside.
//
// Bounds: a tunnel's sender may have at most TUNNEL_WINDOW_BYTES unacknowledged by the far end
// (credits granted end to end), so a relay never holds more than that per tunnel and direction
// whatever its two links do; a neighbour that sends beyond it loses the tunnel. A neighbour may
// hold MAX_TUNNELS_PER_NEIGHBOUR tunnels here. When the link to a neighbour goes down or its
// session resets, every tunnel over it closes (and so does the link connection inside, whose
// session then redials through the relay with the usual backoff).
import { Duplex } from 'node:stream';
import {
  decodeTunnelMessage, encodeTunnelMessage, MAX_TUNNEL_DATA_BYTES, MAX_TUNNELS_PER_NEIGHBOUR, relayAddress, TUNNEL_WINDOW_BYTES,
  TunnelKind, type TunnelMessage,
} from '../../core/link/tunnel-codec.js';

export interface TunnelHost {
  /** Queues a link message to a neighbour (resolves when it is in the send window). */
  send(neighbour: string, message: Uint8Array): Promise<void>;
  isUp(neighbour: string): boolean;
  /** A peer this array reaches directly (not itself through a relay): the only kind a tunnel can pass. */
  isDirectPeer(name: string): boolean;
  /** An arriving tunnel, handed to the link endpoint as an inbound connection. */
  accept(socket: TunnelSocket): void;
  log(level: 'info' | 'warn', message: string, fields: Record<string, unknown>): void;
}

/** One tunnel's leg on one neighbour's link: ids are chosen by whoever opened the leg. */
interface Leg {
  readonly neighbour: string;
  readonly id: number;
  /** This array chose the id (it opened this leg). */
  readonly mine: boolean;
}

interface RelayHalf {
  readonly leg: Leg;
  readonly other: Leg;
  /** Bytes received on `leg` and passed on, not yet credited back by the far end. */
  inFlight: number;
  readonly from: string;
  readonly to: string;
}

const keyOf = (leg: Leg): string => `${leg.neighbour}\u0000${leg.mine ? 'm' : 't'}\u0000${leg.id}`;
/** An id chosen by the receiver is flagged `theirs` on the wire. */
const wire = (leg: Leg): { id: number; theirs: boolean } => ({ id: leg.id, theirs: !leg.mine });
/** Credits go back in batches: one per quarter window, not one per DATA message. */
const CREDIT_BATCH_BYTES = TUNNEL_WINDOW_BYTES / 4;

export class LinkTunnels {
  private nextId = 1;
  private readonly ends = new Map<string, TunnelSocket>();
  private readonly relays = new Map<string, RelayHalf>();
  /** Bytes this array passed on as a relay, for stats and tests. */
  relayedBytes = 0;

  constructor(private readonly host: TunnelHost) {}

  /** Dials `target` through `relay`: the socket emits 'connect' once the far end took the tunnel. */
  open(relay: string, target: string): TunnelSocket {
    const leg: Leg = { neighbour: relay, id: this.allocateId(), mine: true };
    const socket = new TunnelSocket(this, leg, relayAddress(relay), false);
    if (!this.host.isDirectPeer(relay) || !this.host.isUp(relay)) {
      // Asynchronously, as a failed TCP connect would: the caller attaches its listeners first.
      setImmediate(() => socket.destroy(new Error(`no link to the relay ${relay}`)));
      return socket;
    }
    this.ends.set(keyOf(leg), socket);
    this.sendOn(leg, { kind: TunnelKind.OpenVia, ...wire(leg), name: target });
    return socket;
  }

  /** Tunnels this array ends (dialled or accepted) and relays. */
  stats(): { ends: number; relayed: number; relayedBytes: number } {
    return { ends: this.ends.size, relayed: this.relays.size / 2, relayedBytes: this.relayedBytes };
  }

  /** A neighbour's link went down or its session reset: every tunnel over it is gone. */
  neighbourDown(neighbour: string, why: string): void {
    for (const socket of [...this.ends.values()]) {
      if (socket.leg.neighbour === neighbour) socket.remoteClosed(`relay link to ${neighbour} lost: ${why}`);
    }
    for (const half of [...this.relays.values()]) {
      if (half.leg.neighbour !== neighbour) continue;
      this.dropRelay(half);
      this.sendOn(half.other, { kind: TunnelKind.Close, ...wire(half.other), reason: `the relay lost its link to ${neighbour}` });
    }
  }

  /** A tunnel message from a neighbour (already authenticated by its link). */
  receive(neighbour: string, bytes: Uint8Array): void {
    const decoded = decodeTunnelMessage(bytes);
    if (!decoded.ok) {
      this.host.log('warn', 'bad tunnel message', { peer: neighbour, reason: decoded.reason });
      if (decoded.id !== undefined && decoded.theirs !== undefined) {
        const leg: Leg = { neighbour, id: decoded.id, mine: decoded.theirs };
        this.closeLeg(leg, `bad tunnel message: ${decoded.reason}`, true);
      }
      return;
    }
    const m = decoded.message;
    const leg: Leg = { neighbour, id: m.id, mine: m.theirs };
    const key = keyOf(leg);
    if (m.kind === TunnelKind.OpenVia) return this.relayOpen(leg, m.name);
    if (m.kind === TunnelKind.OpenFrom) return this.arrive(leg, m.name);
    const end = this.ends.get(key);
    if (end) {
      switch (m.kind) {
        case TunnelKind.Opened: return end.opened();
        case TunnelKind.Data: return end.received(m.data);
        case TunnelKind.Credit: return end.credited(m.bytes);
        case TunnelKind.Close: return end.remoteClosed(m.reason);
      }
    }
    const half = this.relays.get(key);
    if (half) return this.relayPass(half, m);
    // A message for a tunnel closed meanwhile (its CLOSE crossed this one): nothing to do, except
    // that a late CLOSE must not be answered, or two arrays would bounce CLOSEs forever.
  }

  // ---- the relay's part ----

  private relayOpen(from: Leg, target: string): void {
    const refuse = (reason: string): void => {
      this.host.log('warn', 'relay tunnel refused', { from: from.neighbour, to: target, reason });
      this.sendOn(from, { kind: TunnelKind.Close, ...wire(from), reason });
    };
    if (this.relays.has(keyOf(from)) || this.ends.has(keyOf(from))) return refuse('tunnel id in use');
    if (this.countFor(from.neighbour) >= MAX_TUNNELS_PER_NEIGHBOUR) return refuse(`too many tunnels from ${from.neighbour}`);
    if (target === from.neighbour) return refuse('a tunnel cannot lead back to its sender');
    if (!this.host.isDirectPeer(target)) return refuse(`the relay has no direct peer named ${target}`);
    if (!this.host.isUp(target)) return refuse(`the relay's link to ${target} is down`);
    const to: Leg = { neighbour: target, id: this.allocateId(), mine: true };
    const a: RelayHalf = { leg: from, other: to, inFlight: 0, from: from.neighbour, to: target };
    const b: RelayHalf = { leg: to, other: from, inFlight: 0, from: target, to: from.neighbour };
    this.relays.set(keyOf(from), a);
    this.relays.set(keyOf(to), b);
    this.host.log('info', 'relay tunnel opened', { from: from.neighbour, to: target });
    this.sendOn(to, { kind: TunnelKind.OpenFrom, ...wire(to), name: from.neighbour });
  }

  private relayPass(half: RelayHalf, m: TunnelMessage): void {
    const out = half.other;
    switch (m.kind) {
      case TunnelKind.Opened:
        return this.sendOn(out, { kind: TunnelKind.Opened, ...wire(out) });
      case TunnelKind.Data: {
        half.inFlight += m.data.length;
        if (half.inFlight > TUNNEL_WINDOW_BYTES) {
          // The sender ignored the far end's credits: this relay will not buffer for it.
          this.dropRelay(half);
          const reason = `tunnel window exceeded by ${half.from}`;
          this.sendOn(half.leg, { kind: TunnelKind.Close, ...wire(half.leg), reason });
          this.sendOn(out, { kind: TunnelKind.Close, ...wire(out), reason });
          return;
        }
        this.relayedBytes += m.data.length;
        return this.sendOn(out, { kind: TunnelKind.Data, ...wire(out), data: this.forward(half.from, half.to, m.data) });
      }
      case TunnelKind.Credit: {
        const back = this.relays.get(keyOf(out));
        if (back) back.inFlight = Math.max(0, back.inFlight - m.bytes);
        return this.sendOn(out, { kind: TunnelKind.Credit, ...wire(out), bytes: m.bytes });
      }
      case TunnelKind.Close:
        this.dropRelay(half);
        return this.sendOn(out, { kind: TunnelKind.Close, ...wire(out), reason: m.reason });
      case TunnelKind.OpenVia:
      case TunnelKind.OpenFrom:
        return;
    }
  }

  /**
   * The bytes a relay passes on, unchanged. A seam for tests, which read or alter them here to show
   * that a relay learns nothing and cannot change a byte without the two ends noticing.
   */
  protected forward(_from: string, _to: string, data: Uint8Array): Uint8Array {
    return data;
  }

  private dropRelay(half: RelayHalf): void {
    if (!this.relays.delete(keyOf(half.leg))) return;
    this.relays.delete(keyOf(half.other));
    this.host.log('info', 'relay tunnel closed', { from: half.from, to: half.to });
  }

  // ---- an end's part ----

  private arrive(leg: Leg, origin: string): void {
    if (this.ends.has(keyOf(leg)) || this.relays.has(keyOf(leg))) return this.closeLeg(leg, 'tunnel id in use', false);
    if (this.countFor(leg.neighbour) >= MAX_TUNNELS_PER_NEIGHBOUR) return this.closeLeg(leg, `too many tunnels through ${leg.neighbour}`, false);
    // Who is really at the other end is for the link handshake to prove (the A–C secret), not for the relay to say.
    // Its source is the relay, whatever origin it claims: the endpoint's bound on unauthenticated
    // connections per source then holds a relay to 8 pending handshakes, not 8 per invented name.
    const socket = new TunnelSocket(this, leg, relayAddress(leg.neighbour), true);
    this.host.log('info', 'relayed link connection arriving', { relay: leg.neighbour, from: origin });
    this.ends.set(keyOf(leg), socket);
    this.sendOn(leg, { kind: TunnelKind.Opened, ...wire(leg) });
    this.host.accept(socket);
  }

  /** For TunnelSocket: sends on its leg. */
  sendOn(leg: Leg, message: TunnelMessage): void {
    if (!this.host.isUp(leg.neighbour)) return;
    this.host.send(leg.neighbour, encodeTunnelMessage(message)).catch(() => undefined);
  }

  /** For TunnelSocket: the socket is gone; tell the other end unless it told us. */
  ended(socket: TunnelSocket, tellPeer: boolean, reason: string): void {
    if (this.ends.get(keyOf(socket.leg)) !== socket) return;
    this.ends.delete(keyOf(socket.leg));
    if (tellPeer) this.sendOn(socket.leg, { kind: TunnelKind.Close, ...wire(socket.leg), reason });
  }

  private closeLeg(leg: Leg, reason: string, local: boolean): void {
    const end = this.ends.get(keyOf(leg));
    if (end) return end.remoteClosed(reason);
    const half = this.relays.get(keyOf(leg));
    if (half) {
      this.dropRelay(half);
      this.sendOn(half.other, { kind: TunnelKind.Close, ...wire(half.other), reason });
    }
    if (local || !half) this.sendOn(leg, { kind: TunnelKind.Close, ...wire(leg), reason });
  }

  private countFor(neighbour: string): number {
    let n = 0;
    for (const s of this.ends.values()) if (s.leg.neighbour === neighbour) n++;
    for (const h of this.relays.values()) if (h.leg.neighbour === neighbour) n++;
    return n;
  }

  private allocateId(): number {
    const id = this.nextId;
    this.nextId = this.nextId >= 0xffff_ffff ? 1 : this.nextId + 1;
    return id;
  }
}

interface Pending {
  data: Buffer;
  readonly done: (error?: Error | null) => void;
}

/**
 * One end of a tunnel as a socket for the link network: 'data', 'drain', 'close', write(), end(),
 * destroy(), cork()/uncork() behave as a TCP socket's. A write completes only once the far end has
 * granted the credit for it, so write() returns false and 'drain' follows exactly as backpressure
 * on a slow TCP connection would.
 */
export class TunnelSocket extends Duplex {
  private isOpen: boolean;
  private credit = TUNNEL_WINDOW_BYTES;
  private ungranted = 0;
  private readonly queue: Pending[] = [];
  private peerClosed = false;

  constructor(private readonly tunnels: LinkTunnels, readonly leg: Leg, readonly remoteAddress: string, open: boolean) {
    super({ allowHalfOpen: false, highWaterMark: 256 * 1024 });
    this.isOpen = open;
  }

  /** TCP's Nagle switch: a tunnel sends each write at once anyway. */
  setNoDelay(): this {
    return this;
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, done: (error?: Error | null) => void): void {
    this.queue.push({ data: chunk, done });
    this.flush();
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, done: (error?: Error | null) => void): void {
    this.queue.push({ data: Buffer.concat(chunks.map((c) => c.chunk)), done });
    this.flush();
  }

  override _read(): void {
    // Data is pushed as it arrives; the far end's credit is what paces it.
  }

  override _final(done: (error?: Error | null) => void): void {
    done();
    this.destroy();
  }

  override _destroy(error: Error | null, done: (error?: Error | null) => void): void {
    for (const p of this.queue.splice(0)) p.done(error ?? new Error('tunnel closed'));
    this.tunnels.ended(this, !this.peerClosed, error?.message ?? 'closed');
    done(error);
  }

  opened(): void {
    if (this.isOpen) return;
    this.isOpen = true;
    this.emit('connect');
    this.flush();
  }

  received(data: Uint8Array): void {
    if (this.destroyed) return;
    this.push(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
    this.ungranted += data.length;
    if (this.ungranted >= CREDIT_BATCH_BYTES) {
      // Credit follows consumption (the link network reads every chunk as it comes, in flowing mode),
      // in batches: the sender still has three quarters of its window while a grant travels.
      const bytes = this.ungranted;
      this.ungranted = 0;
      this.tunnels.sendOn(this.leg, { kind: TunnelKind.Credit, ...wire(this.leg), bytes });
    }
  }

  credited(bytes: number): void {
    this.credit += bytes;
    if (this.credit > TUNNEL_WINDOW_BYTES) {
      this.destroy(new Error('tunnel credit beyond the window: the far end is broken'));
      return;
    }
    this.flush();
  }

  remoteClosed(reason: string): void {
    this.peerClosed = true;
    this.destroy(new Error(reason));
  }

  private flush(): void {
    while (this.isOpen && !this.destroyed && this.credit > 0 && this.queue.length > 0) {
      const head = this.queue[0]!;
      const n = Math.min(this.credit, head.data.length, MAX_TUNNEL_DATA_BYTES);
      this.tunnels.sendOn(this.leg, { kind: TunnelKind.Data, ...wire(this.leg), data: head.data.subarray(0, n) });
      this.credit -= n;
      head.data = head.data.subarray(n);
      if (head.data.length === 0) {
        this.queue.shift();
        head.done();
      }
    }
  }
}
