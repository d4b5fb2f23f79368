// Keeps one journal's primary-side log (core/journal/primary-log.ts) in segments of a
// JournalLogStore: appends the records the primary machine emits, starts a new segment once the
// current one is big and no request is out (so a request and its grant share a segment), and
// deletes whole segments once every number in them is acknowledged by its secondary (the
// machine's `logFloor`). At open, whatever an earlier process left is read back and copied into
// a fresh segment (made durable), so the new process never appends to a file the old one wrote.
import { decodePrimaryLogSegment, encodePrimaryLogRecord } from '../../core/journal/primary-log-codec.js';
import type { PrimaryLogRecord } from '../../core/journal/primary-log.js';
import type { JournalLogStore } from '../../ports/journal-log-store.js';

const SEGMENT_BYTES = 16 * 1024 * 1024;

interface Segment {
  readonly number: number;
  bytes: number;
  /** Highest sequence number granted to a request logged here (0: none). */
  highest: number;
}

export class PrimaryLogWriter {
  private readonly segments: Segment[] = [];
  /** Pieces of each logged request not yet granted (key incarnation/requestId). */
  private readonly requestPieces = new Map<string, number>();
  private removing = false;

  private constructor(private readonly store: JournalLogStore, private readonly journal: string) {}

  /** Opens the log; returns what an earlier process left (empty for a new journal). */
  static async open(store: JournalLogStore, journal: string): Promise<{ writer: PrimaryLogWriter; records: PrimaryLogRecord[] }> {
    const w = new PrimaryLogWriter(store, journal);
    const old = await store.load(journal);
    const records: PrimaryLogRecord[] = [];
    for (const s of old) records.push(...decodePrimaryLogSegment(s.bytes).records);
    const next = old.length === 0 ? 1 : old[old.length - 1]!.segment + 1;
    w.segments.push({ number: next, bytes: 0, highest: 0 });
    if (records.length > 0) {
      for (const r of records) w.append(r);
      await store.sync(journal);
    }
    for (const s of old) await store.removeSegment(journal, s.segment);
    return { writer: w, records };
  }

  append(record: PrimaryLogRecord): void {
    const current = this.segments[this.segments.length - 1]!;
    const bytes = encodePrimaryLogRecord(record);
    this.store.append(this.journal, current.number, bytes);
    current.bytes += bytes.length;
    const key = `${record.incarnation}/${record.requestId}`;
    if (record.kind === 'request') this.requestPieces.set(key, record.pieces.length);
    else {
      const n = this.requestPieces.get(key) ?? 0;
      this.requestPieces.delete(key);
      current.highest = Math.max(current.highest, record.first + n - 1);
    }
  }

  sync(): Promise<void> {
    return this.store.sync(this.journal);
  }

  /** Rotates and drops segments (floor: the lowest number a secondary may still need). */
  maintain(floor: number, requestPending: boolean): void {
    const current = this.segments[this.segments.length - 1]!;
    if (!requestPending && current.bytes >= SEGMENT_BYTES) this.segments.push({ number: current.number + 1, bytes: 0, highest: 0 });
    if (this.removing) return;
    const done: Segment[] = [];
    for (const s of this.segments.slice(0, -1)) {
      if (s.highest >= floor) break;
      done.push(s);
    }
    if (done.length === 0) return;
    this.removing = true;
    void (async () => {
      try {
        for (const s of done) {
          await this.store.removeSegment(this.journal, s.number);
          this.segments.splice(this.segments.indexOf(s), 1);
        }
      } finally {
        this.removing = false;
      }
    })();
  }

  /** Segments kept and their bytes (status, tests). */
  get size(): { segments: number; bytes: number } {
    return { segments: this.segments.length, bytes: this.segments.reduce((n, s) => n + s.bytes, 0) };
  }
}
