// Tracks a copy engine (clone copies, migration copies, import fetches) wrote whose data no completed
// flush covers yet. A copy clears its bit in memory as soon as its data is written; the bitmaps may
// record that clear bit only once a flush that began after the copy has completed, since a power
// loss keeps the record but may lose unflushed data. Until then a persist records the bit as still
// set (Volume.setPersistOverlay), and with nothing pending the flush is not needed at all.
import { TrackBitmap } from '../../core/bitmap/track-bitmap.js';
import type { Volume } from './volume.js';

export class UnflushedCopies {
  readonly tracks: TrackBitmap;

  constructor(trackCount: number) {
    this.tracks = new TrackBitmap(trackCount);
  }

  /** A copy of `track` finished: its data is written, not yet durable. */
  copied(track: number): void {
    this.tracks.set(track);
  }

  /** While a track is here, `volume` persists it as set in its position `positionId`. */
  overlay(volume: Volume, positionId: string): void {
    volume.setPersistOverlay(positionId, () => this.tracks);
  }

  /**
   * For a beforePersist hook: runs `flush` (of every volume these copies wrote) unless nothing is
   * pending; afterwards the tracks copied before it began are durable and leave their sets.
   */
  static async flushCovering(sets: readonly UnflushedCopies[], flush: () => Promise<unknown>): Promise<void> {
    if (sets.every((s) => s.tracks.isEmpty())) return;
    const covered = sets.map((s) => s.tracks.copy());
    await flush();
    sets.forEach((s, i) => s.tracks.andNot(covered[i]!));
  }
}
