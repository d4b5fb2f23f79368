// Encoders for everything the server sends. Each returns one complete frame, so the adapter writes a
// header and its payload together and never interleaves a partial frame with another reply.
import {
  Chunk, Errno, IHAVEOPT, Info, NBDMAGIC, OPTION_REPLY_MAGIC, ReplyFlag, SIMPLE_REPLY_MAGIC,
  STRUCTURED_REPLY_MAGIC, HandshakeFlag, MAX_ERROR_MESSAGE_BYTES, MAX_STRING_BYTES,
} from './constants.js';

const encoder = new TextEncoder();

/** UTF-8 bytes of `text`, cut to at most `max` bytes without splitting a character. */
export function utf8Bounded(text: string, max: number): Uint8Array {
  const bytes = encoder.encode(text);
  if (bytes.length <= max) return bytes;
  let cut = max;
  while (cut > 0 && (bytes[cut]! & 0xc0) === 0x80) cut--;
  return bytes.subarray(0, cut);
}

// ---- handshake ----

export function greeting(): Uint8Array {
  const out = new Uint8Array(18);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, NBDMAGIC);
  view.setBigUint64(8, IHAVEOPT);
  view.setUint16(16, HandshakeFlag.FixedNewstyle | HandshakeFlag.NoZeroes);
  return out;
}

export function optionReply(option: number, type: number, payload: Uint8Array = new Uint8Array(0)): Uint8Array {
  const out = new Uint8Array(20 + payload.length);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, OPTION_REPLY_MAGIC);
  view.setUint32(8, option);
  view.setUint32(12, type >>> 0);
  view.setUint32(16, payload.length);
  out.set(payload, 20);
  return out;
}

export function optionError(option: number, type: number, message: string): Uint8Array {
  return optionReply(option, type, utf8Bounded(message, MAX_ERROR_MESSAGE_BYTES));
}

/** Payload of NBD_REP_SERVER: `namelen | name | description`. */
export function serverPayload(name: string, description: string): Uint8Array {
  const n = utf8Bounded(name, MAX_STRING_BYTES);
  const d = utf8Bounded(description, 256);
  const out = new Uint8Array(4 + n.length + d.length);
  new DataView(out.buffer).setUint32(0, n.length);
  out.set(n, 4);
  out.set(d, 4 + n.length);
  return out;
}

/** Payload of NBD_REP_META_CONTEXT: `id | name`. */
export function metaContextPayload(id: number, name: string): Uint8Array {
  const n = encoder.encode(name);
  const out = new Uint8Array(4 + n.length);
  new DataView(out.buffer).setUint32(0, id);
  out.set(n, 4);
  return out;
}

/** NBD_INFO_EXPORT: exactly 12 bytes (QEMU and libnbd reject any other length). */
export function infoExportPayload(sizeBytes: number, flags: number): Uint8Array {
  const out = new Uint8Array(12);
  const view = new DataView(out.buffer);
  view.setUint16(0, Info.Export);
  view.setBigUint64(2, BigInt(sizeBytes));
  view.setUint16(10, flags);
  return out;
}

/** NBD_INFO_BLOCK_SIZE: exactly 14 bytes. */
export function infoBlockSizePayload(minimum: number, preferred: number, maximum: number): Uint8Array {
  const out = new Uint8Array(14);
  const view = new DataView(out.buffer);
  view.setUint16(0, Info.BlockSize);
  view.setUint32(2, minimum);
  view.setUint32(6, preferred);
  view.setUint32(10, maximum);
  return out;
}

/** NBD_INFO_NAME or NBD_INFO_DESCRIPTION. */
export function infoStringPayload(type: number, text: string): Uint8Array {
  const bytes = utf8Bounded(text, MAX_STRING_BYTES);
  const out = new Uint8Array(2 + bytes.length);
  new DataView(out.buffer).setUint16(0, type);
  out.set(bytes, 2);
  return out;
}

/** The answer to NBD_OPT_EXPORT_NAME: size and flags, padded with 124 zeros unless NO_ZEROES. */
export function exportNameReply(sizeBytes: number, flags: number, noZeroes: boolean): Uint8Array {
  const out = new Uint8Array(noZeroes ? 10 : 134);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(sizeBytes));
  view.setUint16(8, flags);
  return out;
}

// ---- transmission ----

export const SIMPLE_HEADER_BYTES = 16;
export const STRUCTURED_HEADER_BYTES = 20;
/** Bytes before the data in a successful READ reply: simple header, or chunk header plus offset. */
export const readReplyHeaderBytes = (structured: boolean): number => (structured ? STRUCTURED_HEADER_BYTES + 8 : SIMPLE_HEADER_BYTES);

function writeCookie(view: DataView, at: number, cookie: Uint8Array): void {
  // Byte by byte: a view to set() from would be an allocation on every reply.
  for (let i = 0; i < 8; i++) view.setUint8(at + i, cookie[i]!);
}

function writeSimpleHeader(view: DataView, at: number, cookie: Uint8Array, error: number): void {
  view.setUint32(at, SIMPLE_REPLY_MAGIC);
  view.setUint32(at + 4, error);
  writeCookie(view, at + 8, cookie);
}

function writeChunkHeader(view: DataView, at: number, flags: number, type: number, cookie: Uint8Array, length: number): void {
  view.setUint32(at, STRUCTURED_REPLY_MAGIC);
  view.setUint16(at + 4, flags);
  view.setUint16(at + 6, type);
  writeCookie(view, at + 8, cookie);
  view.setUint32(at + 16, length);
}

/**
 * Fills the header in front of read data already placed at `frame[readReplyHeaderBytes(structured):]`,
 * making `frame` one complete successful READ reply (a single OFFSET_DATA chunk, which also
 * satisfies DF).
 */
export function fillReadReplyHeader(frame: Uint8Array, structured: boolean, cookie: Uint8Array, offset: number): void {
  const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  if (structured) {
    const dataLength = frame.length - STRUCTURED_HEADER_BYTES - 8;
    writeChunkHeader(view, 0, ReplyFlag.Done, Chunk.OffsetData, cookie, 8 + dataLength);
    view.setBigUint64(STRUCTURED_HEADER_BYTES, BigInt(offset));
  } else {
    writeSimpleHeader(view, 0, cookie, 0);
  }
}

/** Bytes of a success reply without data. */
export const successReplyBytes = (structured: boolean): number => (structured ? STRUCTURED_HEADER_BYTES : SIMPLE_HEADER_BYTES);

/** Success without data (also a zero-length READ: a NONE chunk with DONE when structured). */
export function successReply(structured: boolean, cookie: Uint8Array): Uint8Array {
  const out = new Uint8Array(successReplyBytes(structured));
  writeSuccessReply(new DataView(out.buffer), 0, structured, cookie);
  return out;
}

/** successReply() written into `view` at `at` (successReplyBytes long), for replies gathered into one buffer. */
export function writeSuccessReply(view: DataView, at: number, structured: boolean, cookie: Uint8Array): void {
  if (structured) writeChunkHeader(view, at, ReplyFlag.Done, Chunk.None, cookie, 0);
  else writeSimpleHeader(view, at, cookie, 0);
}

/** An error: a structured ERROR chunk carrying a short message, or a bare simple reply. */
export function errorReply(structured: boolean, cookie: Uint8Array, errno: Errno, message: string): Uint8Array {
  if (structured) {
    const text = utf8Bounded(message, MAX_ERROR_MESSAGE_BYTES);
    const out = new Uint8Array(STRUCTURED_HEADER_BYTES + 6 + text.length);
    const view = new DataView(out.buffer);
    writeChunkHeader(view, 0, ReplyFlag.Done, Chunk.Error, cookie, 6 + text.length);
    view.setUint32(STRUCTURED_HEADER_BYTES, errno);
    view.setUint16(STRUCTURED_HEADER_BYTES + 4, text.length);
    out.set(text, STRUCTURED_HEADER_BYTES + 6);
    return out;
  }
  const out = new Uint8Array(SIMPLE_HEADER_BYTES);
  writeSimpleHeader(new DataView(out.buffer), 0, cookie, errno);
  return out;
}

export interface StatusExtent {
  readonly length: number;
  readonly status: number;
}

export function blockStatusReply(cookie: Uint8Array, contextId: number, extents: readonly StatusExtent[]): Uint8Array {
  const payload = 4 + 8 * extents.length;
  const out = new Uint8Array(STRUCTURED_HEADER_BYTES + payload);
  const view = new DataView(out.buffer);
  writeChunkHeader(view, 0, ReplyFlag.Done, Chunk.BlockStatus, cookie, payload);
  view.setUint32(STRUCTURED_HEADER_BYTES, contextId);
  extents.forEach((e, i) => {
    view.setUint32(STRUCTURED_HEADER_BYTES + 4 + i * 8, e.length);
    view.setUint32(STRUCTURED_HEADER_BYTES + 8 + i * 8, e.status);
  });
  return out;
}

/**
 * Fills the OFFSET_DATA chunk header in front of one piece of a streamed READ (data placed at
 * `frame[readReplyHeaderBytes(true):]`); DONE only on the last piece.
 */
export function fillReadPieceHeader(frame: Uint8Array, cookie: Uint8Array, offset: number, last: boolean): void {
  const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  const dataLength = frame.length - STRUCTURED_HEADER_BYTES - 8;
  writeChunkHeader(view, 0, last ? ReplyFlag.Done : 0, Chunk.OffsetData, cookie, 8 + dataLength);
  view.setBigUint64(STRUCTURED_HEADER_BYTES, BigInt(offset));
}
