// Relay tunnels (docs/design/routing-and-relay.md): a link connection between two arrays A and C
// carried as a byte stream through a relay array R, inside the link sessions A↔R and R↔C. The link
// handshake and the sealed frames of A↔C run end to end inside it, under the A–C secret; R sees
// and forwards only those frames, as opaque bytes.
//
// The tunnel's own messages travel as link messages between neighbours (A↔R, R↔C). They share the
// sessions with the peer protocol and are told apart by their first byte: peer messages start with
// 0 (request) or 1 (response), tunnel messages with TUNNEL_MESSAGE_TAG. Decoding is strict and
// returns a reason instead of throwing: a bad tunnel message closes that tunnel, never the link.
import { isValidArrayName } from './handshake.js';

export const TUNNEL_MESSAGE_TAG = 2;

export const TunnelKind = {
  /** To a relay: open a tunnel to the array `name` (one of the relay's peers). */
  OpenVia: 1,
  /** From a relay: a tunnel from the array `name` arrives here. */
  OpenFrom: 2,
  /** The far end accepted: bytes may flow. */
  Opened: 3,
  Data: 4,
  /** The receiver consumed `bytes` more: the sender may send that much more (end-to-end flow control). */
  Credit: 5,
  Close: 6,
} as const;
export type TunnelKind = (typeof TunnelKind)[keyof typeof TunnelKind];

/**
 * The bytes one end may have in flight on a tunnel before the other end grants more. It bounds what
 * a relay holds for a tunnel whatever the speed of its two links: everything it has not yet passed
 * on is within this window.
 */
export const TUNNEL_WINDOW_BYTES = 4 * 1024 * 1024;
/** One DATA message's payload at most: the link splits messages into packets anyway. */
export const MAX_TUNNEL_DATA_BYTES = 1024 * 1024;
/** Tunnels one neighbour may hold open through or to this array. */
export const MAX_TUNNELS_PER_NEIGHBOUR = 64;
const MAX_REASON_BYTES = 512;

/**
 * Tunnel ids are chosen by whoever opened the tunnel on that leg; `theirs` says the id is the
 * receiver's (it opened this leg), so ids the two neighbours choose never collide.
 */
export type TunnelMessage =
  | { readonly kind: typeof TunnelKind.OpenVia | typeof TunnelKind.OpenFrom; readonly id: number; readonly theirs: boolean; readonly name: string }
  | { readonly kind: typeof TunnelKind.Opened; readonly id: number; readonly theirs: boolean }
  | { readonly kind: typeof TunnelKind.Data; readonly id: number; readonly theirs: boolean; readonly data: Uint8Array }
  | { readonly kind: typeof TunnelKind.Credit; readonly id: number; readonly theirs: boolean; readonly bytes: number }
  | { readonly kind: typeof TunnelKind.Close; readonly id: number; readonly theirs: boolean; readonly reason: string };

const HEADER_BYTES = 7; // tag u8, kind u8, flags u8, id u32
const enc = new TextEncoder();
const dec = new TextDecoder('utf-8', { fatal: true });

export const isTunnelMessage = (bytes: Uint8Array): boolean => bytes.length > 0 && bytes[0] === TUNNEL_MESSAGE_TAG;

export function encodeTunnelMessage(m: TunnelMessage): Uint8Array {
  let body: Uint8Array;
  switch (m.kind) {
    case TunnelKind.OpenVia:
    case TunnelKind.OpenFrom: {
      const name = enc.encode(m.name);
      body = new Uint8Array(1 + name.length);
      body[0] = name.length;
      body.set(name, 1);
      break;
    }
    case TunnelKind.Opened: body = new Uint8Array(0); break;
    case TunnelKind.Data: body = m.data; break;
    case TunnelKind.Credit: body = new Uint8Array(4); new DataView(body.buffer).setUint32(0, m.bytes); break;
    case TunnelKind.Close: {
      body = enc.encode(m.reason);
      if (body.length > MAX_REASON_BYTES) {
        // Cut at a character boundary: a reason must stay UTF-8 (a continuation byte is 10xxxxxx).
        let end = MAX_REASON_BYTES;
        while (end > 0 && (body[end]! & 0xc0) === 0x80) end--;
        body = body.subarray(0, end);
      }
      break;
    }
  }
  const out = new Uint8Array(HEADER_BYTES + body.length);
  const view = new DataView(out.buffer);
  out[0] = TUNNEL_MESSAGE_TAG;
  out[1] = m.kind;
  out[2] = m.theirs ? 1 : 0;
  view.setUint32(3, m.id);
  out.set(body, HEADER_BYTES);
  return out;
}

export type DecodedTunnel = { readonly ok: true; readonly message: TunnelMessage } | { readonly ok: false; readonly reason: string; readonly id?: number; readonly theirs?: boolean };

export function decodeTunnelMessage(bytes: Uint8Array): DecodedTunnel {
  if (bytes.length < HEADER_BYTES || bytes[0] !== TUNNEL_MESSAGE_TAG) return { ok: false, reason: 'not a tunnel message' };
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const kind = bytes[1]!;
  const flags = bytes[2]!;
  const id = view.getUint32(3);
  const body = bytes.subarray(HEADER_BYTES);
  if (flags > 1) return { ok: false, reason: `tunnel message flags ${flags}` };
  const theirs = flags === 1;
  const bad = (reason: string): DecodedTunnel => ({ ok: false, reason, id, theirs });
  switch (kind) {
    case TunnelKind.OpenVia:
    case TunnelKind.OpenFrom: {
      const length = body[0];
      if (length === undefined || body.length !== 1 + length) return bad('tunnel OPEN name length does not match');
      let name: string;
      try {
        name = dec.decode(body.subarray(1));
      } catch {
        return bad('tunnel OPEN name is not UTF-8');
      }
      if (!isValidArrayName(name)) return bad(`tunnel OPEN names ${JSON.stringify(name)}, not an array name`);
      return { ok: true, message: { kind, id, theirs, name } };
    }
    case TunnelKind.Opened:
      return body.length === 0 ? { ok: true, message: { kind, id, theirs } } : bad('tunnel OPENED with a body');
    case TunnelKind.Data:
      if (body.length === 0 || body.length > MAX_TUNNEL_DATA_BYTES) return bad(`tunnel DATA of ${body.length} bytes`);
      return { ok: true, message: { kind, id, theirs, data: body } };
    case TunnelKind.Credit: {
      if (body.length !== 4) return bad('tunnel CREDIT is not 4 bytes');
      const credit = new DataView(body.buffer, body.byteOffset, 4).getUint32(0);
      if (credit === 0 || credit > TUNNEL_WINDOW_BYTES) return bad(`tunnel CREDIT of ${credit} bytes`);
      return { ok: true, message: { kind, id, theirs, bytes: credit } };
    }
    case TunnelKind.Close: {
      if (body.length > MAX_REASON_BYTES) return bad('tunnel CLOSE reason too long');
      let reason: string;
      try {
        reason = dec.decode(body);
      } catch {
        return bad('tunnel CLOSE reason is not UTF-8');
      }
      return { ok: true, message: { kind, id, theirs, reason } };
    }
    default:
      return bad(`unknown tunnel message kind ${kind}`);
  }
}

/** The address a relayed peer has in the link's peer table: the endpoint passes it to the driver's dial. */
export const RELAY_ADDRESS_PREFIX = 'relay:';
export const relayAddress = (relay: string): string => `${RELAY_ADDRESS_PREFIX}${relay}`;
export function relayOf(address: string): string | undefined {
  return address.startsWith(RELAY_ADDRESS_PREFIX) ? address.slice(RELAY_ADDRESS_PREFIX.length) : undefined;
}
