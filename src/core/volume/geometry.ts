// Volume geometry: tracks (unit of change tracking and copying) made of records (unit of transmission).
import { assert } from '../lib/assert.js';
import { invalidArgument } from '../errors.js';

export const RECORD_BYTES = 4096;
export const DEFAULT_TRACK_BYTES = 64 * 1024;
export const MIN_TRACK_BYTES = RECORD_BYTES;
export const MAX_TRACK_BYTES = 16 * 1024 * 1024;
/** 2^53 - 1 bytes is the largest offset a JS number holds exactly; stay well below it. */
export const MAX_VOLUME_BYTES = 2 ** 50;

export interface Geometry {
  readonly sizeBytes: number;
  readonly trackBytes: number;
  readonly recordBytes: number;
  readonly trackCount: number;
  readonly recordsPerTrack: number;
}

const isPowerOfTwo = (n: number): boolean => n > 0 && (n & (n - 1)) === 0;

/** Validates and builds a geometry; bad input is an InvalidArgument error, never an assertion. */
export function makeGeometry(sizeBytes: number, trackBytes = DEFAULT_TRACK_BYTES): Geometry {
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0) {
    throw invalidArgument(`volume size must be a positive whole number of bytes, got ${sizeBytes}`);
  }
  if (sizeBytes > MAX_VOLUME_BYTES) throw invalidArgument(`volume size ${sizeBytes} exceeds the maximum ${MAX_VOLUME_BYTES}`);
  if (sizeBytes % RECORD_BYTES !== 0) {
    throw invalidArgument(`volume size must be a multiple of ${RECORD_BYTES} bytes, got ${sizeBytes}`);
  }
  if (!Number.isSafeInteger(trackBytes) || !isPowerOfTwo(trackBytes) ||
      trackBytes < MIN_TRACK_BYTES || trackBytes > MAX_TRACK_BYTES) {
    throw invalidArgument(`track size must be a power of two from ${MIN_TRACK_BYTES} to ${MAX_TRACK_BYTES} bytes, got ${trackBytes}`);
  }
  return {
    sizeBytes,
    trackBytes,
    recordBytes: RECORD_BYTES,
    trackCount: Math.ceil(sizeBytes / trackBytes),
    recordsPerTrack: trackBytes / RECORD_BYTES,
  };
}

/** First and last track (inclusive) touched by a byte range; the range must be non-empty and inside the volume. */
export function tracksOf(geometry: Geometry, offset: number, length: number): { first: number; last: number } {
  if (!(length > 0 && offset >= 0 && offset + length <= geometry.sizeBytes)) assert(false, `range ${offset}+${length} outside volume`);
  return {
    first: Math.floor(offset / geometry.trackBytes),
    last: Math.floor((offset + length - 1) / geometry.trackBytes),
  };
}

/** Byte range of one track (the last track may be short). */
export function trackRange(geometry: Geometry, track: number): { offset: number; length: number } {
  if (!(track >= 0 && track < geometry.trackCount)) assert(false, `track ${track} outside volume`);
  const offset = track * geometry.trackBytes;
  return { offset, length: Math.min(geometry.trackBytes, geometry.sizeBytes - offset) };
}

/** Byte range from the start of track `first` to the end of track `last` (inclusive). */
export function tracksRange(geometry: Geometry, first: number, last: number): { offset: number; length: number } {
  const start = trackRange(geometry, first);
  const end = trackRange(geometry, last);
  return { offset: start.offset, length: end.offset + end.length - start.offset };
}

/** True when [offset, offset+length) lies inside the volume. Accepts bigint for wire values that may overflow. */
export function rangeInside(geometry: Geometry, offset: number | bigint, length: number | bigint): boolean {
  // Safe integers (every host write asks): exact without BigInt, which allocates.
  if (typeof offset === 'number' && typeof length === 'number' && Number.isSafeInteger(offset) && Number.isSafeInteger(length)) {
    return offset >= 0 && length >= 0 && length <= geometry.sizeBytes && offset <= geometry.sizeBytes - length;
  }
  const o = BigInt(offset);
  const l = BigInt(length);
  return o >= 0n && l >= 0n && o + l <= BigInt(geometry.sizeBytes);
}
