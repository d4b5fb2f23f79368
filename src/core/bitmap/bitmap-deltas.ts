// Bitmap deltas: what an activity-log eviction must make durable, without rewriting every bitmap.
//
// Before a transaction drops extents from the hot set, the bits of those extents must be durable:
// after a crash, recovery marks only the extents still hot. Persisting every position's whole bitmap
// for that costs 128 KiB per position on a 64 GiB volume, 2 MiB on a 1 TiB one, on each eviction
// batch; random writes over more extents than the log holds hot then pay it every few writes. A
// delta instead records only the evicted extents' set tracks that the last full persist (the base)
// does not hold, in one slot of the activity-log file, written and synced before the transaction.
//
// Recovery is the base OR every delta of the base's generation (deltas only ever add bits, so their
// order does not matter), then the hot extents. A delta holds no cleared bit: clears wait for a full
// persist and the flushes that must come before it. Every full persist starts a new generation, so
// older deltas still in their slots stop counting. The ring of delta slots is not reused within a
// generation: when it is full, or a delta does not fit a slot, or a full persist failed (the base on
// disk may then be either generation), the eviction persists everything instead.
//
// Pure: encoding, decoding and the decision delta-or-full; the volume performs the I/O.
import { assert } from '../lib/assert.js';
import { crc32c } from '../lib/crc32c.js';
import { encodeShortString, putShortString, readShortString } from '../lib/short-string.js';
import type { TrackBitmap, TrackRun } from './track-bitmap.js';

/** Delta slots per volume: an eviction persists every bitmap once per this many deltas. */
export const DEFAULT_DELTA_SLOTS = 64;

const DELTA_MAGIC = 0x544d4244; // "TMBD"
const HEADER_BYTES = 22; // magic u32, crc u32, generation f64, seq u32, positions u16

export interface PositionDelta {
  readonly id: string;
  readonly runs: readonly TrackRun[];
}

export interface BitmapDelta {
  /** The generation of the full persist this delta adds to. */
  readonly generation: number;
  /** Its place among the generation's deltas (0, 1, …): also its slot. */
  readonly seq: number;
  readonly positions: readonly PositionDelta[];
}

/** The delta in one slot of `slotBytes`, or undefined when it does not fit. */
export function encodeDelta(delta: BitmapDelta, slotBytes: number): Uint8Array | undefined {
  const ids = delta.positions.map((p) => encodeShortString(p.id));
  const bytes = HEADER_BYTES + delta.positions.reduce((n, p, i) => n + 2 + ids[i]!.length + 4 + p.runs.length * 8, 0);
  if (bytes > slotBytes) return undefined;
  const out = new Uint8Array(slotBytes);
  const view = new DataView(out.buffer);
  view.setUint32(0, DELTA_MAGIC);
  view.setFloat64(8, delta.generation);
  view.setUint32(16, delta.seq);
  view.setUint16(20, delta.positions.length);
  let at = HEADER_BYTES;
  delta.positions.forEach((p, i) => {
    at = putShortString(out, view, at, ids[i]!);
    view.setUint32(at, p.runs.length); at += 4;
    for (const run of p.runs) {
      view.setUint32(at, run.start); at += 4;
      view.setUint32(at, run.end - run.start); at += 4;
    }
  });
  view.setUint32(4, crc32c(out.subarray(8)));
  return out;
}

/** Decodes one slot; undefined for an empty, torn or foreign one (an activity-log slot, say). */
export function decodeDelta(bytes: Uint8Array, trackCount: number): BitmapDelta | undefined {
  if (bytes.length < HEADER_BYTES) return undefined;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint32(0) !== DELTA_MAGIC || view.getUint32(4) !== crc32c(bytes.subarray(8))) return undefined;
  const positions: PositionDelta[] = [];
  let at = HEADER_BYTES;
  const need = (n: number): boolean => at + n <= bytes.length;
  for (let i = view.getUint16(20); i > 0; i--) {
    const id = readShortString(bytes, view, at);
    if (!id) return undefined;
    at = id.end;
    if (!need(4)) return undefined;
    const runCount = view.getUint32(at); at += 4;
    if (!need(runCount * 8)) return undefined;
    const runs: TrackRun[] = [];
    for (let r = 0; r < runCount; r++) {
      const start = view.getUint32(at);
      const end = start + view.getUint32(at + 4);
      at += 8;
      if (end <= start || end > trackCount) return undefined;
      runs.push({ start, end });
    }
    positions.push({ id: id.value, runs });
  }
  return { generation: view.getFloat64(8), seq: view.getUint32(16), positions };
}

/** The deltas among `slots` that add to the base of `generation`. */
export function deltasOf(generation: number, slots: readonly Uint8Array[], trackCount: number): BitmapDelta[] {
  const out: BitmapDelta[] = [];
  for (const slot of slots) {
    const delta = decodeDelta(slot, trackCount);
    if (delta && delta.generation === generation) out.push(delta);
  }
  return out;
}

/**
 * Runs of tracks in first..last (each range) set in `bits` or `extra` and not in `durable`: what a
 * delta must add for one position. Ranges are sorted and disjoint.
 */
export function newlySetRuns(
  ranges: ReadonlyArray<{ readonly first: number; readonly last: number }>,
  bits: TrackBitmap, extra: TrackBitmap | undefined, durable: TrackBitmap,
): TrackRun[] {
  const runs: TrackRun[] = [];
  const setAt = (t: number): boolean => (bits.test(t) || extra?.test(t) === true) && !durable.test(t);
  for (const { first, last } of ranges) {
    for (let t = first; t <= last; t++) {
      if (!setAt(t)) continue;
      let end = t + 1;
      while (end <= last && setAt(end)) end++;
      const previous = runs[runs.length - 1];
      if (previous && previous.end === t) runs[runs.length - 1] = { start: previous.start, end };
      else runs.push({ start: t, end });
      t = end;
    }
  }
  return runs;
}

/**
 * Which generation the base on disk has, and where the next delta goes. A full persist is begun
 * with fullStarted() and ended with fullDone() or fullFailed(); a delta is taken with nextDelta()
 * (undefined: persist everything instead) and ended with deltaDone() or deltaFailed().
 */
export class DeltaRing {
  /** The generation of the base known durable; deltas add to it. */
  private generation: number;
  /** The highest generation ever attempted: a new base never reuses one that may be on disk. */
  private attempted: number;
  private nextSeq = 0;
  /** False after a full persist failed (the base on disk may be of either generation) or a delta did. */
  private usable = true;
  private deltaInFlight = false;

  constructor(private readonly slots: number, loadedGeneration: number) {
    assert(Number.isSafeInteger(slots) && slots >= 0, `delta slots ${slots}`);
    this.generation = loadedGeneration;
    this.attempted = loadedGeneration;
  }

  get baseGeneration(): number {
    return this.generation;
  }

  /** The generation the full persist about to be written carries. */
  fullStarted(): number {
    assert(!this.deltaInFlight, 'full persist while a delta is in flight');
    this.attempted++;
    return this.attempted;
  }

  fullDone(generation: number): void {
    this.generation = generation;
    this.nextSeq = 0;
    this.usable = generation === this.attempted;
  }

  fullFailed(): void {
    this.usable = false;
  }

  /** The next delta's seq (and slot), or undefined when this eviction must persist everything. */
  nextDelta(): number | undefined {
    assert(!this.deltaInFlight, 'two deltas in flight');
    if (!this.usable || this.nextSeq >= this.slots) return undefined;
    this.deltaInFlight = true;
    return this.nextSeq;
  }

  /** The delta did not fit a slot: nothing was written. */
  deltaSkipped(): void {
    this.deltaInFlight = false;
  }

  deltaDone(): void {
    this.deltaInFlight = false;
    this.nextSeq++;
  }

  /** The slot may hold the delta or not: its seq is not used again in this generation. */
  deltaFailed(): void {
    this.deltaInFlight = false;
    this.nextSeq++;
    this.usable = false;
  }
}
