// Link frame codec. Every frame is a fixed 24-byte header followed by `length` payload bytes:
//
//   0  magic    u32  'TMLK'
//   4  version  u8   link protocol version (LINK_PROTOCOL_VERSION)
//   5  type     u8   FrameType
//   6  flags    u16  DATA: FIRST/LAST; every other type: 0
//   8  length   u32  payload bytes, <= MAX_FRAME_PAYLOAD_BYTES (+ the AEAD tag when sealed)
//  12  seq      u64  DATA: packet sequence; ACK/RESUME: cumulative sequence received; else 0
//  20  check    u32  clear frames (the handshake): CRC32C over header bytes 0..19 and the payload;
//                    sealed frames (everything after authentication, cipher.ts): the low 32 bits
//                    of the connection's frame counter, the AEAD tag being the integrity check
//
// All integers are big-endian. Decoding is strict: anything unexpected is a protocol error, which
// the caller turns into closing the connection. The decoder never throws on peer input.
import { assert } from '../lib/assert.js';
import { crc32c } from '../lib/crc32c.js';
import { getU64, setU64 } from '../lib/u64.js';
import { ByteQueue } from '../nbd/byte-queue.js';

export const FRAME_MAGIC = 0x544d4c4b; // 'TMLK'
/** 2: frames after authentication are sealed (AES-256-GCM); 1 had only a CRC. */
export const LINK_PROTOCOL_VERSION = 2;
export const FRAME_HEADER_BYTES = 24;
/** Hard protocol cap on one frame's payload; the packet size is configured below this. */
export const MAX_FRAME_PAYLOAD_BYTES = 1024 * 1024;
/** Sequence numbers stay exact in a JS number. */
export const MAX_SEQ = Number.MAX_SAFE_INTEGER;
/** The AEAD tag that ends every sealed frame's payload (cipher.ts). */
export const TAG_BYTES = 16;

export const FrameType = {
  Hello: 1,
  Auth: 2,
  Error: 3,
  Resume: 4,
  Data: 5,
  Ack: 6,
  Heartbeat: 7,
} as const;
export type FrameType = (typeof FrameType)[keyof typeof FrameType];
const FRAME_TYPES = new Set<number>(Object.values(FrameType));

export const DataFlag = {
  /** The packet starts a message. */
  First: 1,
  /** The packet ends a message. */
  Last: 2,
} as const;

export interface Frame {
  readonly type: FrameType;
  readonly flags: number;
  readonly seq: number;
  readonly payload: Uint8Array;
}

/** A frame ready to write: header and payload stay separate so the payload is never copied. */
/** What the decoder needs to open sealed frames (cipher.ts FrameOpener). */
export interface SealedFrameOpener {
  open(header: Uint8Array, type: FrameType, flags: number, seq: number, check: number, body: Uint8Array):
    { readonly ok: true; readonly frame: Frame } | { readonly ok: false; readonly reason: string };
}

export interface EncodedFrame {
  readonly header: Uint8Array;
  readonly payload: Uint8Array;
}

export function frameBytes(frame: EncodedFrame): number {
  return frame.header.length + frame.payload.length;
}

/** A clear (CRC-checked) frame: the handshake, before there are keys. */
export function encodeFrame(type: FrameType, flags: number, seq: number, payload: Uint8Array, version = LINK_PROTOCOL_VERSION): EncodedFrame {
  if (!(payload.length <= MAX_FRAME_PAYLOAD_BYTES)) assert(false, `frame payload ${payload.length} exceeds ${MAX_FRAME_PAYLOAD_BYTES}`);
  const header = new Uint8Array(FRAME_HEADER_BYTES);
  writeFrameHeader(header, version, type, flags, payload.length, seq, 0);
  new DataView(header.buffer).setUint32(20, crc32c(payload, crc32c(header.subarray(0, 20))));
  return { header, payload };
}

/** Fills a 24-byte header; `check` is the CRC or the sealed frame's counter. */
export function writeFrameHeader(header: Uint8Array, version: number, type: FrameType, flags: number, length: number, seq: number, check: number): void {
  // Messages built only on failure: this runs for every frame.
  if (!(length <= MAX_FRAME_PAYLOAD_BYTES + TAG_BYTES)) assert(false, `frame length ${length}`);
  if (!(Number.isSafeInteger(seq) && seq >= 0)) assert(false, `frame seq ${seq}`);
  if (!(flags >= 0 && flags <= 0xffff)) assert(false, `frame flags ${flags}`);
  assert(header.length === FRAME_HEADER_BYTES, 'header size');
  const view = new DataView(header.buffer, header.byteOffset, FRAME_HEADER_BYTES);
  view.setUint32(0, FRAME_MAGIC);
  view.setUint8(4, version);
  view.setUint8(5, type);
  view.setUint16(6, flags);
  view.setUint32(8, length);
  setU64(view, 12, seq);
  view.setUint32(20, check >>> 0);
}

/** One contiguous copy of a frame (tests and the simulator). */
export function frameToBytes(frame: EncodedFrame): Uint8Array {
  const out = new Uint8Array(frameBytes(frame));
  out.set(frame.header, 0);
  out.set(frame.payload, frame.header.length);
  return out;
}

export type DecodeResult =
  | { readonly kind: 'frame'; readonly frame: Frame }
  | { readonly kind: 'need-more' }
  /** The peer speaks another protocol version: reported apart so the error can say so. */
  | { readonly kind: 'version-mismatch'; readonly peerVersion: number }
  | { readonly kind: 'error'; readonly reason: string };

/**
 * Incremental frame decoder: push() received chunks at any boundaries, next() yields frames.
 * Buffered bytes are bounded by the caller (it stops reading after an error; a well-formed
 * header bounds the wait to one frame). After an error the decoder stays failed. Frames are clear
 * (CRC) until openWith(): from the next frame on, every frame must be sealed under that opener.
 */
export class FrameDecoder {
  private readonly queue = new ByteQueue();
  private header: { type: FrameType; flags: number; length: number; seq: number; crc: number; raw: Uint8Array } | undefined;
  private failed: DecodeResult | undefined;
  private opener: SealedFrameOpener | undefined;

  constructor(private readonly maxPayloadBytes = MAX_FRAME_PAYLOAD_BYTES) {
    assert(maxPayloadBytes > 0 && maxPayloadBytes <= MAX_FRAME_PAYLOAD_BYTES, `maxPayloadBytes ${maxPayloadBytes}`);
  }

  get bufferedBytes(): number {
    return this.queue.length;
  }

  /** Every frame after the current one is sealed: opened (decrypted, authenticated, in order) by `opener`. */
  openWith(opener: SealedFrameOpener): void {
    assert(this.header === undefined, 'openWith() between frames only');
    this.opener = opener;
  }

  push(chunk: Uint8Array): void {
    if (this.failed === undefined) this.queue.push(chunk);
  }

  next(): DecodeResult {
    if (this.failed) return this.failed;
    if (this.header === undefined) {
      if (this.queue.length < FRAME_HEADER_BYTES) return { kind: 'need-more' };
      // Copied: the header is tiny and it is kept until the payload arrives.
      const raw = Uint8Array.prototype.slice.call(this.queue.take(FRAME_HEADER_BYTES));
      const view = new DataView(raw.buffer, raw.byteOffset, FRAME_HEADER_BYTES);
      if (view.getUint32(0) !== FRAME_MAGIC) return this.fail({ kind: 'error', reason: 'bad frame magic' });
      const version = view.getUint8(4);
      if (version !== LINK_PROTOCOL_VERSION) return this.fail({ kind: 'version-mismatch', peerVersion: version });
      const type = view.getUint8(5);
      if (!FRAME_TYPES.has(type)) return this.fail({ kind: 'error', reason: `unknown frame type ${type}` });
      const flags = view.getUint16(6);
      const allowedFlags = type === FrameType.Data ? DataFlag.First | DataFlag.Last : 0;
      if ((flags & ~allowedFlags) !== 0) return this.fail({ kind: 'error', reason: `bad flags 0x${flags.toString(16)} for frame type ${type}` });
      const length = view.getUint32(8);
      if (length > this.maxPayloadBytes + (this.opener ? TAG_BYTES : 0)) return this.fail({ kind: 'error', reason: `frame length ${length} exceeds ${this.maxPayloadBytes}` });
      const seq = getU64(view, 12);
      if (seq < 0) return this.fail({ kind: 'error', reason: 'frame sequence number out of range' });
      this.header = { type: type as FrameType, flags, length, seq, crc: view.getUint32(20), raw };
    }
    const h = this.header;
    if (this.queue.length < h.length) return { kind: 'need-more' };
    const payload = this.queue.take(h.length);
    this.header = undefined;
    if (this.opener) {
      const opened = this.opener.open(h.raw, h.type, h.flags, h.seq, h.crc, payload);
      return opened.ok ? { kind: 'frame', frame: opened.frame } : this.fail({ kind: 'error', reason: opened.reason });
    }
    if (crc32c(payload, crc32c(h.raw.subarray(0, 20))) !== h.crc) return this.fail({ kind: 'error', reason: 'frame CRC mismatch' });
    return { kind: 'frame', frame: { type: h.type, flags: h.flags, seq: h.seq, payload } };
  }

  private fail(result: DecodeResult): DecodeResult {
    this.failed = result;
    this.header = undefined;
    this.queue.skip(this.queue.length);
    return result;
  }
}
