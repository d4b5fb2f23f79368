// What R1 still owes its remote mirror, at two grains: the tracks (persisted, as the pair's position
// bitmap) and, for tracks dirtied since the process started, exactly which 4 KiB records changed, so
// a 4 KiB write ships 4 KiB however the track size is set. A track owed without a record mask (after
// a restart, an establish) is compared with R2 record by record before anything is shipped.
import { TrackBitmap } from '../bitmap/track-bitmap.js';
import { assert } from '../lib/assert.js';
import { tracksOf, type Geometry } from '../volume/geometry.js';

/** Records of one track to ship: a bitmask over the track's records, or every record. */
export type RecordSelection = Uint32Array | 'all';

export class OwedTracks {
  readonly owed: TrackBitmap;
  private readonly masks = new Map<number, Uint32Array>();
  private readonly recordsPerTrack: number;
  private readonly maskWords: number;
  /** When the oldest still-owed change was made (for lag); undefined when nothing is owed. */
  private oldestOwedAtMs: number | undefined;
  /**
   * Per track owed by a write: when its oldest unshipped change was made (a minimum age before
   * shipping counts from it). Tracks owed whole, or given back by a failed shipment, have none:
   * they are due at once.
   */
  private readonly owedSinceMs = new Map<number, number>();

  constructor(private readonly geometry: Geometry, initiallyOwed: TrackBitmap, nowMs: number) {
    assert(initiallyOwed.size === geometry.trackCount, 'owed bitmap size');
    this.owed = initiallyOwed.copy();
    this.recordsPerTrack = geometry.trackBytes / geometry.recordBytes;
    this.maskWords = Math.ceil(this.recordsPerTrack / 32);
    if (!this.owed.isEmpty()) this.oldestOwedAtMs = nowMs;
  }

  get count(): number {
    return this.owed.count();
  }

  /** Tracks owed whole (no record mask: which records differ is not known). */
  get wholeCount(): number {
    return this.owed.count() - this.masks.size;
  }

  oldestAtMs(): number | undefined {
    return this.owed.isEmpty() ? undefined : this.oldestOwedAtMs;
  }

  private noteOwed(nowMs: number): void {
    if (this.oldestOwedAtMs === undefined || this.owed.isEmpty()) this.oldestOwedAtMs = nowMs;
  }

  /** A change to a byte range R2 has not got: its records become owed. */
  markWrite(offset: number, length: number, nowMs: number): void {
    if (length <= 0) return;
    this.noteOwed(nowMs);
    const { first, last } = tracksOf(this.geometry, offset, length);
    const { trackBytes, recordBytes } = this.geometry;
    for (let t = first; t <= last; t++) {
      const wasOwed = this.owed.test(t);
      let mask = this.masks.get(t);
      if (wasOwed && !mask) continue; // already owed whole
      if (!this.owedSinceMs.has(t)) this.owedSinceMs.set(t, nowMs);
      if (!mask) {
        mask = new Uint32Array(this.maskWords);
        this.masks.set(t, mask);
      }
      const trackStart = t * trackBytes;
      const from = Math.max(offset, trackStart) - trackStart;
      const to = Math.min(offset + length, trackStart + trackBytes) - trackStart;
      for (let r = Math.floor(from / recordBytes); r <= Math.floor((to - 1) / recordBytes); r++) mask[r >>> 5]! |= 1 << (r & 31);
      this.owed.set(t);
    }
  }

  /** Tracks owed whole: which records differ is not known (recovery, establish, a lost shipment). */
  markWhole(first: number, last: number, nowMs: number): void {
    this.noteOwed(nowMs);
    for (let t = first; t <= last; t++) {
      this.masks.delete(t);
      this.owedSinceMs.delete(t);
    }
    this.owed.setRange(first, last);
  }

  markWholeBitmap(bits: TrackBitmap, nowMs: number): void {
    for (let t = bits.nextSet(0); t >= 0; t = bits.nextSet(t + 1)) this.markWhole(t, t, nowMs);
  }

  /** Whether an owed track's oldest unshipped change was made at or before `cutoffMs`. */
  dueBy(track: number, cutoffMs: number): boolean {
    const since = this.owedSinceMs.get(track);
    return since === undefined || since <= cutoffMs;
  }

  hasMask(track: number): boolean {
    return this.masks.has(track);
  }

  /** Takes a track for shipping: it is no longer owed unless written again or given back. */
  take(track: number): RecordSelection {
    assert(this.owed.test(track), 'taking a track that is not owed');
    const mask = this.masks.get(track);
    this.masks.delete(track);
    this.owedSinceMs.delete(track);
    this.owed.clear(track);
    return mask ?? 'all';
  }

  /** A shipment that failed: its records are owed again (merged with anything written since). */
  giveBack(track: number, selection: RecordSelection, nowMs: number): void {
    if (selection === 'all') {
      this.markWhole(track, track, nowMs);
      return;
    }
    this.noteOwed(nowMs);
    // Those records were due when taken: they stay due, whatever was written since.
    this.owedSinceMs.delete(track);
    const wasOwed = this.owed.test(track);
    const mask = this.masks.get(track);
    if (wasOwed && !mask) return;
    if (mask) for (let i = 0; i < mask.length; i++) mask[i]! |= selection[i]!;
    else this.masks.set(track, selection.slice());
    this.owed.set(track);
  }

  /** Record indexes a selection names, in order. */
  recordsOf(selection: RecordSelection): number[] {
    const out: number[] = [];
    for (let r = 0; r < this.recordsPerTrack; r++) {
      if (selection === 'all' || (selection[r >>> 5]! & (1 << (r & 31))) !== 0) out.push(r);
    }
    return out;
  }

  clearAll(): void {
    this.owed.clearAll();
    this.masks.clear();
    this.owedSinceMs.clear();
    this.oldestOwedAtMs = undefined;
  }
}
