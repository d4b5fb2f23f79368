// Scratch space for R1's async cycles when they outgrow memory (SPEC §5): one sparse file per
// (pair, cycle), addressed by byte offset (the caller puts record r at r × recordBytes).
//
// Not durable, and nothing in it outlives the process: R1's cycles do not survive a restart (the
// pair's bitmaps drive a resync then), so there is no fsync, and an implementation that keeps
// files drops whatever an earlier process left when it opens.
//
// Calls on one file are not ordered by the store: a write and a read of the same bytes issued
// together may complete in either order. The caller keeps one queue per file (CycleSpill does).

/** Bytes to write at a byte offset of a spill file. */
export interface SpillPiece {
  readonly offset: number;
  readonly data: Uint8Array;
}

export interface SpillStore {
  /**
   * Writes each piece at its offset of the file (pair, cycle), creating it. The pieces of one call
   * do not overlap; they are written as one operation (one thread-pool job for a file store: a spill
   * batch is thousands of scattered records).
   */
  write(pair: string, cycle: number, pieces: readonly SpillPiece[]): Promise<void>;
  /** `length` bytes at `offset` of the file (pair, cycle); zeros where nothing was written. */
  read(pair: string, cycle: number, offset: number, length: number): Promise<Uint8Array>;
  /** Deletes the file (pair, cycle); nothing happens if there is none. */
  removeCycle(pair: string, cycle: number): Promise<void>;
  /** The array stops: every file is closed and deleted. */
  close(): Promise<void>;
}
