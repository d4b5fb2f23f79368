// Messages between the replication halves of two arrays, carried by the link as opaque payloads.
// A message is a small JSON header (what to do) plus binary segments (the data): block data travels
// as bytes, zeroed ranges as markers. Decoding validates everything; a bad message is a protocol error.
import { ErrorCode, TidemarkError } from '../errors.js';
import { assert } from '../lib/assert.js';
import { getU64, setU64 } from '../lib/u64.js';

export type MessageType = 'request' | 'response';

export type Segment =
  | { readonly kind: 'data'; readonly offset: number; readonly data: Uint8Array }
  | { readonly kind: 'zero'; readonly offset: number; readonly length: number };

export interface PeerMessage {
  readonly type: MessageType;
  /** Request id; a response carries its request's id. */
  readonly id: number;
  readonly header: Readonly<Record<string, unknown>>;
  readonly segments: readonly Segment[];
}

/** Bounds what one message may carry (the link's message limit is larger). */
export const MAX_SEGMENTS = 4096;
export const MAX_HEADER_BYTES = 1024 * 1024;
/**
 * Deepest nesting of arrays and objects a header may have. Real headers nest about five deep;
 * JSON.parse builds any depth, but JSON.stringify, structured logging and schema checks recurse,
 * so a header a few thousand levels deep would throw RangeError wherever it is used next.
 */
export const MAX_HEADER_DEPTH = 32;

/** Index = the first byte. 2 is taken by the link's relay tunnels (core/link/tunnel-codec.ts), which share the sessions. */
const TYPES: readonly MessageType[] = ['request', 'response'];
const SEGMENT_DATA = 1;
const SEGMENT_ZERO = 2;
const enc = new TextEncoder();
const dec = new TextDecoder('utf-8', { fatal: true });

export const segmentLength = (s: Segment): number => (s.kind === 'data' ? s.data.length : s.length);

/** Memory for an encoded message; every byte is written, so it need not be zeroed (see encodeMessage). */
export type MessageAllocator = (bytes: number) => Uint8Array;
const zeroed: MessageAllocator = (bytes) => new Uint8Array(bytes);

// Layout: u8 type, u32 id, u32 header length, header JSON, u32 segment count, then per segment
// u8 kind, u64 offset, u32 length, and for data the bytes. `allocate`: the arrays' link messages
// come from memory that is not zeroed first (a sync pair's batches are ~all data, written at once).
export function encodeMessage(message: PeerMessage, allocate: MessageAllocator = zeroed): Uint8Array {
  const header = enc.encode(JSON.stringify(message.header));
  let total = 1 + 4 + 4 + header.length + 4;
  for (const s of message.segments) total += 1 + 8 + 4 + (s.kind === 'data' ? s.data.length : 0);
  const out = allocate(total);
  assert(out.length === total, 'allocated message size');
  const view = new DataView(out.buffer, out.byteOffset, total);
  view.setUint8(0, TYPES.indexOf(message.type));
  view.setUint32(1, message.id);
  view.setUint32(5, header.length);
  out.set(header, 9);
  let at = 9 + header.length;
  view.setUint32(at, message.segments.length); at += 4;
  for (const s of message.segments) {
    view.setUint8(at, s.kind === 'data' ? SEGMENT_DATA : SEGMENT_ZERO);
    setU64(view, at + 1, s.offset);
    view.setUint32(at + 9, segmentLength(s));
    at += 13;
    if (s.kind === 'data') {
      out.set(s.data, at);
      at += s.data.length;
    }
  }
  return out;
}

/**
 * The id of a request whose first 9 bytes are readable, even when the rest does not decode (a
 * header that is not JSON, truncated segments): such a request still gets an error reply.
 * Undefined for a response or anything too short to carry an id (logged and dropped).
 */
export function peekRequestId(bytes: Uint8Array): number | undefined {
  if (bytes.length < 9 || TYPES[bytes[0]!] !== 'request') return undefined;
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(1);
}

const protocolError = (why: string): TidemarkError => new TidemarkError(ErrorCode.Protocol, `bad replication message: ${why}`);

const OPEN_BRACE = 0x7b;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACE = 0x7d;
const CLOSE_BRACKET = 0x5d;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;

/** Whether JSON text nests deeper than `max` (brackets inside strings do not count); one linear pass. */
function nestsDeeperThan(text: Uint8Array, max: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (inString) {
      if (c === BACKSLASH) i++;
      else if (c === QUOTE) inString = false;
    } else if (c === QUOTE) inString = true;
    else if (c === OPEN_BRACE || c === OPEN_BRACKET) {
      if (++depth > max) return true;
    } else if (c === CLOSE_BRACE || c === CLOSE_BRACKET) depth--;
  }
  return false;
}

/** Decodes and validates a message; data segments are views into `bytes` (no copy). */
export function decodeMessage(bytes: Uint8Array): PeerMessage {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 0;
  const need = (n: number): void => {
    if (at + n > bytes.length) throw protocolError('truncated');
  };
  need(9);
  const type = TYPES[view.getUint8(0)];
  if (type === undefined) throw protocolError('unknown type');
  const id = view.getUint32(1);
  const headerLength = view.getUint32(5);
  at = 9;
  if (headerLength > MAX_HEADER_BYTES) throw protocolError('header too large');
  need(headerLength);
  if (nestsDeeperThan(bytes.subarray(at, at + headerLength), MAX_HEADER_DEPTH)) throw protocolError(`header nests deeper than ${MAX_HEADER_DEPTH}`);
  let header: unknown;
  try {
    header = JSON.parse(dec.decode(bytes.subarray(at, at + headerLength)));
  } catch {
    throw protocolError('header is not JSON');
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header)) throw protocolError('header is not an object');
  at += headerLength;
  need(4);
  const count = view.getUint32(at); at += 4;
  if (count > MAX_SEGMENTS) throw protocolError('too many segments');
  const segments: Segment[] = [];
  for (let i = 0; i < count; i++) {
    need(13);
    const kind = view.getUint8(at);
    const offset = getU64(view, at + 1);
    const length = view.getUint32(at + 9);
    at += 13;
    if (offset < 0) throw protocolError('offset too large');
    if (kind === SEGMENT_DATA) {
      need(length);
      segments.push({ kind: 'data', offset, data: bytes.subarray(at, at + length) });
      at += length;
    } else if (kind === SEGMENT_ZERO) {
      segments.push({ kind: 'zero', offset, length });
    } else {
      throw protocolError('unknown segment kind');
    }
  }
  if (at !== bytes.length) throw protocolError('trailing bytes');
  return { type, id, header: header as Record<string, unknown>, segments };
}
