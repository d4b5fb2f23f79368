// Per-record digests let two arrays find which 4 KiB records of a track differ without shipping
// them: 16 bytes of SHA-256 per record, and all-zero digests for records that are all zeros (holes
// need no read and no hashing).
import { createHash } from 'node:crypto';

export const DIGEST_BYTES = 16;
const ZERO_PAGE = new Uint8Array(64 * 1024);

export function isAllZero(bytes: Uint8Array): boolean {
  for (let at = 0; at < bytes.length; at += ZERO_PAGE.length) {
    const n = Math.min(ZERO_PAGE.length, bytes.length - at);
    if (Buffer.compare(bytes.subarray(at, at + n), ZERO_PAGE.subarray(0, n)) !== 0) return false;
  }
  return true;
}

/** Digests of every record of `track` (its bytes), concatenated. */
export function recordDigests(track: Uint8Array, recordBytes: number): Uint8Array {
  const count = Math.ceil(track.length / recordBytes);
  const out = new Uint8Array(count * DIGEST_BYTES);
  for (let r = 0; r < count; r++) {
    const record = track.subarray(r * recordBytes, Math.min(track.length, (r + 1) * recordBytes));
    if (isAllZero(record)) continue;
    out.set(createHash('sha256').update(record).digest().subarray(0, DIGEST_BYTES), r * DIGEST_BYTES);
  }
  return out;
}

export function digestEqual(a: Uint8Array, b: Uint8Array, record: number): boolean {
  const at = record * DIGEST_BYTES;
  return Buffer.compare(a.subarray(at, at + DIGEST_BYTES), b.subarray(at, at + DIGEST_BYTES)) === 0;
}
