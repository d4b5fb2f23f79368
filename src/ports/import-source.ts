// Where an online import reads from (SPEC §8, online import): an export of another NBD server. The
// daemon connects with the NBD client adapter (adapters/nbd-client); the simulator with a flaky fake.

export interface ImportSource {
  readonly sizeBytes: number;
  /** The server accepts writes (an import with --write-back needs it). */
  readonly writable: boolean;
  /** False once the connection failed: every call then rejects and a new connection is needed. */
  readonly alive: boolean;
  read(offset: number, length: number): Promise<Uint8Array>;
  write(offset: number, data: Uint8Array): Promise<void>;
  writeZeroes(offset: number, length: number): Promise<void>;
  flush(): Promise<void>;
  close(): void;
}

/** Connects to a source by its URL (nbd://HOST[:PORT]/EXPORT); rejects with TM_ERR_UNAVAILABLE when it cannot. */
export type ImportSourceConnector = (url: string) => Promise<ImportSource>;
