// Byte ranges inside one 4 KiB record: what a cycle holds for a record is exactly the bytes its
// writes wrote (never bytes read back from the volume, which could belong to a later cycle).
// Ranges are half-open [start, end), sorted, disjoint and non-adjacent (merged).
import { assert } from '../../lib/assert.js';

export interface ByteRange {
  readonly start: number;
  readonly end: number;
}

/** The union of sorted merged ranges and one more range, sorted and merged. */
export function addRange(ranges: readonly ByteRange[], start: number, end: number): ByteRange[] {
  if (!(start < end)) assert(false, `empty range ${start}..${end}`);
  const out: ByteRange[] = [];
  let s = start;
  let e = end;
  let placed = false;
  for (const r of ranges) {
    if (r.end < s) out.push(r);
    else if (r.start > e) {
      if (!placed) { out.push({ start: s, end: e }); placed = true; }
      out.push(r);
    } else {
      s = Math.min(s, r.start);
      e = Math.max(e, r.end);
    }
  }
  if (!placed) out.push({ start: s, end: e });
  return out;
}

/** Whether [start, end) lies inside one of the ranges (adding it would change nothing). */
export function coversRange(ranges: readonly ByteRange[], start: number, end: number): boolean {
  for (const r of ranges) if (r.start <= start && end <= r.end) return true;
  return false;
}

export function unionRanges(a: readonly ByteRange[], b: readonly ByteRange[]): ByteRange[] {
  let out = a.slice();
  for (const r of b) out = addRange(out, r.start, r.end);
  return out;
}

export function rangesBytes(ranges: readonly ByteRange[]): number {
  let n = 0;
  for (const r of ranges) n += r.end - r.start;
  return n;
}

export function assertRanges(ranges: readonly ByteRange[], recordBytes: number): void {
  let prevEnd = -1;
  for (const r of ranges) {
    assert(Number.isSafeInteger(r.start) && Number.isSafeInteger(r.end), 'range bounds are integers');
    if (!(r.start >= 0 && r.end <= recordBytes && r.start < r.end)) assert(false, `range ${r.start}..${r.end} outside a record`);
    assert(r.start > prevEnd, 'ranges sorted, disjoint and merged');
    prevEnd = r.end;
  }
}

/** Copies `src`'s bytes inside `ranges` over `dst` (both record-sized). */
export function overlay(dst: Uint8Array, src: Uint8Array, ranges: readonly ByteRange[]): void {
  for (const r of ranges) dst.set(src.subarray(r.start, r.end), r.start);
}
