// Durable metadata records (volume definitions, bitmaps, sessions, ...). Every write is atomic
// and durable when its promise resolves; every read verifies a checksum and throws
// TM_ERR_METADATA_CORRUPT rather than return damaged bytes.

export interface MetaStore {
  read(key: string): Promise<Uint8Array | undefined>;
  write(key: string, data: Uint8Array): Promise<void>;
  delete(key: string): Promise<void>;
  /** Keys beginning with the prefix, sorted. */
  list(prefix: string): Promise<string[]>;
}

export interface SlotWrite {
  readonly index: number;
  readonly data: Uint8Array;
}

/**
 * A small ring of fixed-size slots written in place with fdatasync: the activity log's journal.
 * A slot write is durable when it resolves; a torn slot is detected by its checksum on read.
 */
export interface SlotJournal {
  readonly slotCount: number;
  readonly slotBytes: number;
  writeSlot(index: number, data: Uint8Array): Promise<void>;
  /**
   * Writes several slots and makes them durable with one sync. Until it resolves, a crash may leave
   * each of them old, new or torn, independently of the others.
   */
  writeSlots(writes: readonly SlotWrite[]): Promise<void>;
  /** Every slot's raw bytes (zeros for never-written slots). */
  readAll(): Promise<Uint8Array[]>;
  close(): Promise<void>;
}

export interface SlotJournalFactory {
  open(name: string, slotCount: number, slotBytes: number): Promise<SlotJournal>;
  remove(name: string): Promise<void>;
}
