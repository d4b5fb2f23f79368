// Reliable, in-order, exactly-once delivery of messages over a set of connections that come and
// go (reconnects, parallel streams). Pure state: the endpoint feeds it frames and asks it what to
// send next on which connection.
//
// Sending: a message is copied, split into packets of at most maxPacketBytes, and every packet gets
// the next session sequence number. Packets are kept in the clear and framed only when put on a
// connection: every connection has its own keys and frame counter (cipher.ts), so a retransmission
// on a new connection is sealed afresh, never a copy of bytes sent under another key. Packets stay until the peer's cumulative ACK covers them. The bytes held (frames
// including headers) are bounded by windowBytes: the app must wait (canAccept) when it is full.
// Packets first sent on a connection that is lost are queued for resending; after a reconnect the
// peer's RESUME says what it already has, so only the rest goes again.
//
// Receiving: packets arriving ahead of a gap are held (bounded by our announced window) until the
// gap fills; in-order packets are assembled into the current message, which is delivered only once
// its LAST packet arrived. Duplicates (retransmissions) are dropped by sequence number.
import { assert } from '../lib/assert.js';
import { DataFlag, FRAME_HEADER_BYTES, FrameType, type Frame } from './frame.js';
import type { ConnId } from './types.js';

/** A DATA packet to frame (and seal) for one connection. */
export interface OutgoingPacket {
  readonly seq: number;
  readonly flags: number;
  readonly payload: Uint8Array;
}

interface OutPacket extends OutgoingPacket {
  /** Header + payload bytes: what the window counts (the tag of a sealed frame is left out). */
  readonly bytes: number;
  readonly last: boolean;
  /** The connection it was last sent on; undefined: never sent, or that connection was lost. */
  sentOn: ConnId | undefined;
  sentCount: number;
}

export interface SendLimits {
  readonly windowBytes: number;
  readonly maxPacketBytes: number;
  readonly maxMessageBytes: number;
}

/** The cost of a message against the window: its payload plus one header per packet. */
export function messageCostBytes(length: number, maxPacketBytes: number): number {
  const packets = Math.max(1, Math.ceil(length / maxPacketBytes));
  return length + packets * FRAME_HEADER_BYTES;
}

export class SendSide {
  /** Held packets in sequence order; entries before `head` are acknowledged (cleared). */
  private packets: (OutPacket | undefined)[] = [];
  private head = 0;
  /** Index (into packets) of the first packet never sent. */
  private cursor = 0;
  /** Packets to send again, in sequence order, consumed from `resendHead`. */
  private resend: OutPacket[] = [];
  private resendHead = 0;
  private nextSeq = 1;
  private ackedThroughSeq = 0;
  private heldBytes = 0;
  private inFlightBytes = 0;
  private heldMessages = 0;

  constructor(private readonly limits: SendLimits) {
    assert(limits.maxPacketBytes > 0 && limits.windowBytes >= limits.maxPacketBytes + FRAME_HEADER_BYTES, 'window holds a packet');
  }

  get unackedBytes(): number {
    return this.heldBytes;
  }

  /** Messages accepted whose last packet the peer has not acknowledged. */
  get unackedMessages(): number {
    return this.heldMessages;
  }

  get ackedThrough(): number {
    return this.ackedThroughSeq;
  }

  get highestSeq(): number {
    return this.nextSeq - 1;
  }

  /** Whether a message of `length` bytes fits the window now. An empty window takes any allowed message. */
  canAccept(length: number): boolean {
    if (length > this.limits.maxMessageBytes) return false;
    return this.heldBytes === 0 || this.heldBytes + messageCostBytes(length, this.limits.maxPacketBytes) <= this.limits.windowBytes;
  }

  /** Splits and frames a message; the caller checked canAccept. Returns the number of packets. */
  accept(message: Uint8Array): number {
    assert(this.canAccept(message.length), 'accept() beyond the window');
    // No copy: the message is the sender's to give (Endpoint.send); packets are views into it.
    const data = message;
    const max = this.limits.maxPacketBytes;
    let count = 0;
    let at = 0;
    do {
      const end = Math.min(data.length, at + max);
      let flags = 0;
      if (at === 0) flags |= DataFlag.First;
      if (end === data.length) flags |= DataFlag.Last;
      const payload = data.subarray(at, end);
      const bytes = FRAME_HEADER_BYTES + payload.length;
      this.packets.push({ seq: this.nextSeq++, flags, payload, bytes, last: end === data.length, sentOn: undefined, sentCount: 0 });
      this.heldBytes += bytes;
      count++;
      at = end;
    } while (at < data.length);
    this.heldMessages++;
    return count;
  }

  /**
   * The peer has everything through `seq`. Returns the bytes released, or an error reason if the
   * peer acknowledges something never sent. Stale acks (parallel streams reorder them) are ignored.
   */
  ack(seq: number): { ok: true; releasedBytes: number } | { ok: false; reason: string } {
    if (seq > this.nextSeq - 1) return { ok: false, reason: `peer acknowledged ${seq} but only ${this.nextSeq - 1} were sent` };
    let released = 0;
    while (this.head < this.packets.length && this.packets[this.head]!.seq <= seq) {
      const p = this.packets[this.head]!;
      if (p.sentCount > 0) this.inFlightBytes -= p.bytes;
      released += p.bytes;
      if (p.last) this.heldMessages--;
      this.packets[this.head] = undefined; // let it be collected
      this.head++;
    }
    if (seq > this.ackedThroughSeq) this.ackedThroughSeq = seq;
    if (this.cursor < this.head) this.cursor = this.head; // a resumed peer may already hold unsent-here packets
    this.heldBytes -= released;
    if (this.head > 1024 && this.head * 2 > this.packets.length) {
      this.packets = this.packets.slice(this.head);
      this.cursor -= this.head;
      this.head = 0;
    }
    assert(this.heldBytes >= 0 && this.inFlightBytes >= 0, 'window accounting went negative');
    return { ok: true, releasedBytes: released };
  }

  /** A connection is gone: whatever was last sent on it and is unacknowledged goes again. */
  connectionLost(connId: ConnId): void {
    let added = false;
    const pending = this.resend.slice(this.resendHead);
    for (let i = this.head; i < this.cursor; i++) {
      const p = this.packets[i]!;
      if (p.sentOn === connId) {
        p.sentOn = undefined;
        pending.push(p);
        added = true;
      }
    }
    if (!added) return;
    pending.sort((a, b) => a.seq - b.seq);
    this.resend = pending;
    this.resendHead = 0;
  }

  /** Whether next() would return a packet (ignoring which connection). */
  hasWork(peerWindowBytes: number): boolean {
    this.dropAckedResends();
    if (this.resendHead < this.resend.length) return true;
    return this.cursor < this.packets.length && this.fitsInFlight(this.packets[this.cursor]!, peerWindowBytes);
  }

  /** The next packet to put on `connId`: retransmissions first, then new packets within the peer's window. */
  next(connId: ConnId, peerWindowBytes: number): { packet: OutgoingPacket; retransmit: boolean } | undefined {
    this.dropAckedResends();
    const again = this.resend[this.resendHead];
    if (again) {
      this.resendHead++;
      again.sentOn = connId;
      again.sentCount++;
      return { packet: again, retransmit: true };
    }
    const p = this.packets[this.cursor];
    if (!p || !this.fitsInFlight(p, peerWindowBytes)) return undefined;
    this.cursor++;
    p.sentOn = connId;
    p.sentCount++;
    this.inFlightBytes += p.bytes;
    return { packet: p, retransmit: false };
  }

  private fitsInFlight(p: OutPacket, peerWindowBytes: number): boolean {
    return this.inFlightBytes === 0 || this.inFlightBytes + p.bytes <= peerWindowBytes;
  }

  private dropAckedResends(): void {
    while (this.resendHead < this.resend.length && this.resend[this.resendHead]!.seq <= this.ackedThroughSeq) this.resendHead++;
    if (this.resendHead === this.resend.length && this.resendHead > 0) {
      this.resend = [];
      this.resendHead = 0;
    }
  }
}

export interface ReceiveLimits {
  /** The window we announce: out-of-order packets held may not exceed it. */
  readonly windowBytes: number;
  readonly maxMessageBytes: number;
}

export type ReceiveResult =
  | { readonly ok: true; readonly delivered: readonly Uint8Array[]; readonly duplicate: boolean }
  | { readonly ok: false; readonly reason: string };

export class ReceiveSide {
  private receivedThroughSeq = 0;
  private readonly held = new Map<number, { readonly flags: number; readonly payload: Uint8Array }>();
  private heldBytes = 0;
  private parts: Uint8Array[] = [];
  private partBytes = 0;
  private inMessage = false;

  constructor(private readonly limits: ReceiveLimits) {}

  /** Cumulative: every packet through this sequence number was received and consumed. */
  get receivedThrough(): number {
    return this.receivedThroughSeq;
  }

  get heldOutOfOrderBytes(): number {
    return this.heldBytes;
  }

  receive(frame: Frame): ReceiveResult {
    assert(frame.type === FrameType.Data, 'receive() takes DATA frames');
    if (frame.seq === 0) return { ok: false, reason: 'DATA with sequence number 0' };
    if (frame.seq <= this.receivedThroughSeq || this.held.has(frame.seq)) return { ok: true, delivered: [], duplicate: true };
    if (frame.seq > this.receivedThroughSeq + 1) {
      const bytes = frame.payload.length + FRAME_HEADER_BYTES;
      if (this.heldBytes + bytes > this.limits.windowBytes) return { ok: false, reason: 'peer overran the receive window' };
      // Copied: a view would pin the whole received chunk for as long as the gap lasts.
      this.held.set(frame.seq, { flags: frame.flags, payload: frame.payload.slice() });
      this.heldBytes += bytes;
      return { ok: true, delivered: [], duplicate: false };
    }
    const delivered: Uint8Array[] = [];
    let next: { readonly flags: number; readonly payload: Uint8Array } | undefined = { flags: frame.flags, payload: frame.payload };
    while (next) {
      const failure = this.consume(next.flags, next.payload, delivered);
      if (failure) return { ok: false, reason: failure };
      this.receivedThroughSeq++;
      next = this.held.get(this.receivedThroughSeq + 1);
      if (next) {
        this.held.delete(this.receivedThroughSeq + 1);
        this.heldBytes -= next.payload.length + FRAME_HEADER_BYTES;
      }
    }
    return { ok: true, delivered, duplicate: false };
  }

  private consume(flags: number, payload: Uint8Array, delivered: Uint8Array[]): string | undefined {
    const first = (flags & DataFlag.First) !== 0;
    if (first === this.inMessage) return first ? 'a message started inside another' : 'a packet continues no message';
    this.inMessage = true;
    this.partBytes += payload.length;
    if (this.partBytes > this.limits.maxMessageBytes) return `message exceeds ${this.limits.maxMessageBytes} bytes`;
    this.parts.push(payload);
    if ((flags & DataFlag.Last) === 0) return undefined;
    // A message of one packet is that packet's payload, uncopied: a decoded payload is never written
    // again (an opened frame's is a buffer of its own; a clear one's a view of a received chunk).
    let message = this.parts[0]!;
    if (this.parts.length > 1) {
      message = new Uint8Array(this.partBytes);
      let at = 0;
      for (const part of this.parts) { message.set(part, at); at += part.length; }
    }
    delivered.push(message);
    this.parts = [];
    this.partBytes = 0;
    this.inMessage = false;
    return undefined;
  }
}
