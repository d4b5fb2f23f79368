// Which tracks of a volume are wholly unallocated (read as zeros): found from the allocation map,
// so establishing a mostly empty volume reads and compares nothing for its holes.
import { trackRange, tracksRange } from '../../core/volume/geometry.js';
import type { Volume } from '../volume/volume.js';

export async function holeTracks(volume: Volume, tracks: readonly number[]): Promise<Set<number>> {
  const holes = new Set<number>();
  if (tracks.length === 0) return holes;
  const g = volume.geometry;
  const span = tracksRange(g, Math.min(...tracks), Math.max(...tracks));
  const extents = (await volume.internalAllocation(span.offset, span.length)).filter((e) => e.kind === 'hole');
  for (const t of tracks) {
    const { offset, length } = trackRange(g, t);
    // Extents are sorted and merged: a track is a hole when one hole extent covers it.
    if (extents.some((e) => e.offset <= offset && e.offset + e.length >= offset + length)) holes.add(t);
  }
  return holes;
}
