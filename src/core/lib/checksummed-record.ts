// Envelope for every durable metadata record: magic, version, length and CRC32C of the payload.
// A record that fails any check is reported as corrupt, never used.
import { crc32c } from './crc32c.js';
import { ErrorCode, TidemarkError } from '../errors.js';

const MAGIC = 0x544d5231; // "TMR1"
const HEADER_BYTES = 16;
export const RECORD_FORMAT_VERSION = 1;

export function encodeRecord(payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(HEADER_BYTES + payload.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, MAGIC);
  view.setUint16(4, RECORD_FORMAT_VERSION);
  view.setUint16(6, 0);
  view.setUint32(8, payload.length);
  view.setUint32(12, crc32c(payload));
  out.set(payload, HEADER_BYTES);
  return out;
}

export function decodeRecord(bytes: Uint8Array, what: string): Uint8Array {
  const corrupt = (why: string): TidemarkError =>
    new TidemarkError(ErrorCode.MetadataCorrupt, `metadata record ${what} is corrupt: ${why}`, { record: what });
  if (bytes.length < HEADER_BYTES) throw corrupt(`only ${bytes.length} bytes`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint32(0) !== MAGIC) throw corrupt('bad magic');
  const version = view.getUint16(4);
  if (version !== RECORD_FORMAT_VERSION) throw corrupt(`unknown format version ${version}`);
  if (view.getUint16(6) !== 0) throw corrupt('reserved flags set');
  const length = view.getUint32(8);
  if (length !== bytes.length - HEADER_BYTES) throw corrupt(`length ${length} but ${bytes.length - HEADER_BYTES} bytes present`);
  const payload = bytes.subarray(HEADER_BYTES);
  if (crc32c(payload) !== view.getUint32(12)) throw corrupt('checksum mismatch');
  return payload;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

export const encodeJson = (value: unknown): Uint8Array => encoder.encode(JSON.stringify(value));
export function decodeJson(bytes: Uint8Array, what: string): unknown {
  try {
    return JSON.parse(decoder.decode(bytes));
  } catch (error) {
    throw new TidemarkError(ErrorCode.MetadataCorrupt, `metadata record ${what} is not valid JSON: ${(error as Error).message}`,
      { record: what });
  }
}
