// The primary-side journal log's files (core/journal/primary-log.ts): per journal, numbered
// append-only segments. Appends are positional writes that have reached the page cache when the
// call returns (a kill -9 of the process keeps them) and are not synced one by one; `sync` makes
// everything appended durable (the app calls it when a host FLUSH or FUA makes the volume durable).

export interface JournalLogStore {
  /** The journal's segments that exist, oldest first, with their bytes. */
  load(journal: string): Promise<Array<{ readonly segment: number; readonly bytes: Uint8Array }>>;
  /** Appends at the end of the segment (creating it). Synchronous: what follows may depend on it. */
  append(journal: string, segment: number, bytes: Uint8Array): void;
  /** Every segment of the journal open for appending is durable when this resolves. */
  sync(journal: string): Promise<void>;
  /** The same, synchronously (a clean stop, which cannot wait). */
  syncNow(journal: string): void;
  removeSegment(journal: string, segment: number): Promise<void>;
  /** The journal is gone (or has no primary role here any more): every segment goes. */
  removeJournal(journal: string): Promise<void>;
  close(): Promise<void>;
}
