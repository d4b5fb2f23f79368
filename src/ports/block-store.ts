// The storage behind one volume. The daemon uses a sparse file (adapters/fs); the simulator a
// faulty in-memory disk (sim/). Offsets and lengths are validated by the caller.

export interface AllocationExtent {
  readonly offset: number;
  readonly length: number;
  /** 'hole': unallocated, reads as zeros. 'data': allocated (contents unknown to the caller). */
  readonly kind: 'hole' | 'data';
}

export interface BlockStore {
  readonly sizeBytes: number;
  /** Reads exactly `length` bytes into `target` at `targetOffset` (zeros past allocated data). */
  readInto(offset: number, length: number, target: Uint8Array, targetOffset?: number): Promise<void>;
  write(offset: number, data: Uint8Array): Promise<void>;
  /** Makes the range read as zeros; `allocate` false lets the store punch a hole instead. */
  writeZeroes(offset: number, length: number, allocate: boolean): Promise<void>;
  /** Discards the range (punches a hole where the store can). Afterwards it reads as zeros. */
  trim(offset: number, length: number): Promise<void>;
  /** Whether writeZeroes without allocation is cheaper than writing zeros (NBD FAST_ZERO). */
  readonly canPunchHoles: boolean;
  /** Makes every completed write durable (fdatasync semantics). */
  flush(): Promise<void>;
  /**
   * Holes and data in [offset, offset+length), in order, covering the whole range — or, with
   * `maxExtents`, at most that many covering a prefix of it (the scan stops there: bounded work).
   */
  allocation(offset: number, length: number, maxExtents?: number): Promise<AllocationExtent[]>;
  close(): Promise<void>;
}

export interface BlockStoreFactory {
  create(name: string, sizeBytes: number): Promise<BlockStore>;
  open(name: string, sizeBytes: number): Promise<BlockStore>;
  remove(name: string): Promise<void>;
  /**
   * Gives store `from` the name `to`, atomically replacing any store named `to` (a finished
   * migration: VOL's storage takes VOL's name, its old storage goes). A missing `from` is not an
   * error: the rename happened before a crash.
   */
  rename(from: string, to: string): Promise<void>;
}
