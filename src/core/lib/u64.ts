// Unsigned 64-bit big-endian wire integers as exact JS numbers, read and written as two 32-bit
// words: DataView's BigInt accessors allocate on every call, and these run for every request,
// frame and forwarded write. Values from 2^53 on have no exact JS number; a reader refuses them.
import { assert } from './assert.js';

const TWO_TO_32 = 0x1_0000_0000;
/** A high word at or above this puts the value at 2^53 or beyond. */
const SAFE_HIGH_WORD_LIMIT = 0x20_0000;

/** `value`: a safe integer ≥ 0. */
export function setU64(view: DataView, at: number, value: number): void {
  if (!(Number.isSafeInteger(value) && value >= 0)) assert(false, `u64 ${value} is not a safe unsigned integer`);
  view.setUint32(at, Math.floor(value / TWO_TO_32));
  view.setUint32(at + 4, value >>> 0);
}

/** The value, or -1 when it is 2^53 or more (no exact JS number: the caller refuses it). */
export function getU64(view: DataView, at: number): number {
  const high = view.getUint32(at);
  return high < SAFE_HIGH_WORD_LIMIT ? high * TWO_TO_32 + view.getUint32(at + 4) : -1;
}
