// Online import of a volume from another NBD server (SPEC §8, beyond the seeds; docs/design/migration.md),
// as a pure machine: the import's state, the work due next, and which commands are allowed.
//
//   copying ──(every track fetched)──▶ copied ──finish──▶ finished (the source is let go)
//
// Reads and writes of tracks not fetched yet fetch them first (write plan, 'import' positions);
// the background copy fetches the rest. A source outage pauses the copy; it resumes when the
// source answers again.
import { ErrorCode, TidemarkError } from '../errors.js';

export const IMPORT_STATES = ['copying', 'copied', 'finished'] as const;
export type ImportState = (typeof IMPORT_STATES)[number];

export interface ImportRecord {
  readonly name: string;
  /** nbd://HOST[:PORT]/EXPORT */
  readonly source: string;
  readonly sizeBytes: number;
  readonly writeBack: boolean;
  readonly state: ImportState;
  readonly startedAtMs: number;
  /** Cap on the background copy's rate (bytes/s); null: as fast as host I/O leaves room for. */
  readonly maxBytesPerSecond: number | null;
}

export type ImportAction =
  | { readonly kind: 'copy' }
  /** Every track is fetched: record the import as copied. */
  | { readonly kind: 'copied' }
  | { readonly kind: 'none' };

/** How long the copy waits before asking a source that failed again. */
export const SOURCE_RETRY_MS = 1000;

export class ImportMachine {
  private current: ImportRecord;
  private sourceFailedAtMs: number | undefined;

  constructor(record: ImportRecord) {
    this.current = record;
  }

  get record(): ImportRecord {
    return this.current;
  }

  get state(): ImportState {
    return this.current.state;
  }

  /** The source failed (a read, a connection): the copy pauses until the retry time. */
  sourceFailed(nowMs: number): void {
    this.sourceFailedAtMs = nowMs;
  }

  sourceAnswered(): void {
    this.sourceFailedAtMs = undefined;
  }

  get sourceDown(): boolean {
    return this.sourceFailedAtMs !== undefined;
  }

  poll(tracksLeft: number, nowMs: number): ImportAction {
    if (this.current.state !== 'copying') return { kind: 'none' };
    if (tracksLeft === 0) return { kind: 'copied' };
    if (this.sourceFailedAtMs !== undefined && nowMs - this.sourceFailedAtMs < SOURCE_RETRY_MS) return { kind: 'none' };
    return { kind: 'copy' };
  }

  /** Every track is in the volume. */
  copied(tracksLeft: number): ImportRecord {
    if (this.current.state !== 'copying' || tracksLeft !== 0) {
      throw new TidemarkError(ErrorCode.Internal, `import ${this.current.name}: copied with ${tracksLeft} tracks left in state ${this.current.state}`);
    }
    this.current = { ...this.current, state: 'copied' };
    return this.current;
  }

  finish(): ImportRecord {
    if (this.current.state !== 'copied') {
      throw new TidemarkError(ErrorCode.InvalidState,
        `cannot finish the import of ${this.current.name}: it is ${this.current.state}${this.current.state === 'copying' ? ' (wait until copied)' : ''}`,
        { volume: this.current.name, state: this.current.state });
    }
    this.current = { ...this.current, state: 'finished' };
    return this.current;
  }
}

export function parseImportRecord(value: unknown, key: string): ImportRecord {
  const bad = (why: string): TidemarkError => new TidemarkError(ErrorCode.MetadataCorrupt, `import record ${key}: ${why}`);
  if (value === null || typeof value !== 'object') throw bad('not an object');
  const r = value as Record<string, unknown>;
  if (typeof r.name !== 'string' || r.name === '') throw bad('name is not a name');
  if (typeof r.source !== 'string' || !r.source.startsWith('nbd://')) throw bad('source is not an nbd:// URL');
  if (typeof r.sizeBytes !== 'number' || !Number.isSafeInteger(r.sizeBytes) || r.sizeBytes <= 0) throw bad('sizeBytes is not a size');
  if (typeof r.writeBack !== 'boolean') throw bad('writeBack is not a boolean');
  if (!IMPORT_STATES.includes(r.state as ImportState)) throw bad(`unknown state ${String(r.state)}`);
  if (typeof r.startedAtMs !== 'number' || !Number.isSafeInteger(r.startedAtMs) || r.startedAtMs < 0) throw bad('startedAtMs is not a time');
  if (r.maxBytesPerSecond !== null && (typeof r.maxBytesPerSecond !== 'number' || !(r.maxBytesPerSecond > 0))) throw bad('maxBytesPerSecond is not a rate');
  return {
    name: r.name, source: r.source, sizeBytes: r.sizeBytes, writeBack: r.writeBack, state: r.state as ImportState,
    startedAtMs: r.startedAtMs, maxBytesPerSecond: r.maxBytesPerSecond as number | null,
  };
}
