// The byte ranges a pair replicates (--extents): validated once, then used to clip writes and to
// scope the pair's bitmaps. Extents are whole tracks, so bitmaps and byte ranges agree exactly.
import { TrackBitmap } from '../bitmap/track-bitmap.js';
import { invalidArgument } from '../errors.js';
import type { Geometry } from '../volume/geometry.js';

export interface ByteExtent {
  readonly offset: number;
  readonly length: number;
}

/** Sorted, non-overlapping, track-aligned extents inside the volume; otherwise a clear error. */
export function validateExtents(extents: readonly ByteExtent[], geometry: Geometry): ByteExtent[] {
  if (extents.length === 0) throw invalidArgument('--extents needs at least one range');
  if (extents.length > 1024) throw invalidArgument('at most 1024 extents');
  const sorted = [...extents].sort((a, b) => a.offset - b.offset);
  let end = 0;
  for (const e of sorted) {
    if (!Number.isSafeInteger(e.offset) || !Number.isSafeInteger(e.length) || e.offset < 0 || e.length <= 0) {
      throw invalidArgument(`extent ${e.offset}+${e.length} is not a positive byte range`);
    }
    const last = e.offset + e.length;
    if (e.offset % geometry.trackBytes !== 0 || (last % geometry.trackBytes !== 0 && last !== geometry.sizeBytes)) {
      throw invalidArgument(`extent ${e.offset}+${e.length} must start and end on a ${geometry.trackBytes}-byte track boundary`);
    }
    if (last > geometry.sizeBytes) throw invalidArgument(`extent ${e.offset}+${e.length} ends past the volume (${geometry.sizeBytes} bytes)`);
    if (e.offset < end) throw invalidArgument(`extents overlap at byte ${e.offset}`);
    end = last;
  }
  return sorted;
}

export function extentTracks(extents: readonly ByteExtent[], geometry: Geometry): TrackBitmap {
  const bits = new TrackBitmap(geometry.trackCount);
  for (const e of extents) {
    bits.setRange(Math.floor(e.offset / geometry.trackBytes), Math.ceil((e.offset + e.length) / geometry.trackBytes) - 1);
  }
  return bits;
}

/** The parts of [offset, offset+length) inside the extents (all of it when there are none). */
export function clipToExtents(extents: readonly ByteExtent[] | null, offset: number, length: number): ByteExtent[] {
  if (extents === null) return [{ offset, length }];
  const out: ByteExtent[] = [];
  const end = offset + length;
  for (const e of extents) {
    const from = Math.max(offset, e.offset);
    const to = Math.min(end, e.offset + e.length);
    if (from < to) out.push({ offset: from, length: to - from });
  }
  return out;
}

export function intersectsExtents(extents: readonly ByteExtent[] | null, offset: number, length: number): boolean {
  return extents === null || clipToExtents(extents, offset, length).length > 0;
}
