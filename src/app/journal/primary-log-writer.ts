// Keeps one journal's primary-side log (core/journal/primary-log.ts; the sequencer's log too) in
// segments of a JournalLogStore: appends the records the machine emits, starts a new segment once
// the current one is big (at a request, so a request and its grant share a segment), and deletes whole segments once every number in them is acknowledged by its secondary (the
// machine's `logFloor`). At open, whatever an earlier process left is read back and copied into
// a fresh segment (made durable), so the new process never appends to a file the old one wrote.
import { decodePrimaryLogSegment, encodePrimaryLogRecord } from '../../core/journal/primary-log-codec.js';
import type { JournalLogRecord } from '../../core/journal/primary-log.js';
import type { JournalLogStore } from '../../ports/journal-log-store.js';

const SEGMENT_BYTES = 16 * 1024 * 1024;

interface Segment {
  readonly number: number;
  bytes: number;
  /** Highest sequence number granted to a request logged here (0: none). */
  highest: number;
}

/** The sequencer's log keeps each requester's newest grant (a repeated request gets it again). */
const keepNewestOf = (r: JournalLogRecord): string | undefined => (r.kind === 'issued' ? r.from : undefined);

export class PrimaryLogWriter {
  private readonly segments: Segment[] = [];
  /** Pieces of each logged request not yet granted (key incarnation/requestId). */
  private readonly requestPieces = new Map<string, number>();
  /** Per key (keepNewestOf): the newest record and the segment holding it. */
  private readonly newest = new Map<string, { record: JournalLogRecord; segment: number }>();
  private removing: Promise<void> | undefined;

  private constructor(private readonly store: JournalLogStore, private readonly journal: string, private readonly segmentBytes: number) {}

  /** Opens the log; returns what an earlier process left (empty for a new journal). */
  static async open(store: JournalLogStore, journal: string, segmentBytes = SEGMENT_BYTES): Promise<{ writer: PrimaryLogWriter; records: JournalLogRecord[]; closedCleanly: boolean }> {
    const w = new PrimaryLogWriter(store, journal, segmentBytes);
    const old = await store.load(journal);
    const all: JournalLogRecord[] = [];
    for (const s of old) all.push(...decodePrimaryLogSegment(s.bytes).records);
    const closedCleanly = all.length > 0 && all[all.length - 1]!.kind === 'closed';
    const records = all.filter((r) => r.kind !== 'closed');
    const next = old.length === 0 ? 1 : old[old.length - 1]!.segment + 1;
    w.segments.push({ number: next, bytes: 0, highest: 0 });
    if (records.length > 0) {
      for (const r of records) w.append(r);
      await store.sync(journal);
    }
    for (const s of old) await store.removeSegment(journal, s.segment);
    return { writer: w, records, closedCleanly };
  }

  /** A clean stop: the log is made durable and says so (after a reboot it can be trusted whole). */
  closeCleanly(): void {
    this.append({ kind: 'closed' });
    this.store.syncNow(this.journal);
  }

  append(record: JournalLogRecord): void {
    // A new segment starts with a request (its grant follows in the same one) or a sequencer's
    // record, never empty: the newest segment always holds the newest record (the highest number).
    let current = this.segments[this.segments.length - 1]!;
    if (record.kind !== 'grant' && current.bytes >= this.segmentBytes) {
      current = { number: current.number + 1, bytes: 0, highest: 0 };
      this.segments.push(current);
    }
    const bytes = encodePrimaryLogRecord(record);
    this.store.append(this.journal, current.number, bytes);
    current.bytes += bytes.length;
    const keep = keepNewestOf(record);
    if (keep !== undefined) this.newest.set(keep, { record, segment: current.number });
    if (record.kind === 'closed') return;
    const key = `${record.incarnation}/${record.requestId}`;
    if (record.kind === 'request') this.requestPieces.set(key, record.pieces.length);
    else if (record.kind === 'issued') current.highest = Math.max(current.highest, record.first + record.specs.length - 1);
    else {
      const n = this.requestPieces.get(key) ?? 0;
      this.requestPieces.delete(key);
      current.highest = Math.max(current.highest, record.first + n - 1);
    }
  }

  sync(): Promise<void> {
    return this.store.sync(this.journal);
  }

  /** Drops whole segments below the floor (the lowest number a secondary may still need). */
  maintain(floor: number): void {
    if (this.removing !== undefined) return;
    const done: Segment[] = [];
    for (const s of this.segments.slice(0, -1)) {
      if (s.highest >= floor) break;
      done.push(s);
    }
    if (done.length === 0) return;
    this.removing = (async () => {
      try {
        for (const s of done) {
          // What must outlive the segment is written again at the end first.
          for (const n of [...this.newest.values()]) if (n.segment === s.number) this.append(n.record);
          await this.store.removeSegment(this.journal, s.number);
          this.segments.splice(this.segments.indexOf(s), 1);
        }
      } finally {
        this.removing = undefined;
      }
    })();
    this.removing.catch(() => undefined);
  }

  /** Resolves when no segment is being removed (tests). */
  async settled(): Promise<void> {
    await this.removing?.catch(() => undefined);
  }

  /** Segments kept and their bytes (status, tests). */
  get size(): { segments: number; bytes: number } {
    return { segments: this.segments.length, bytes: this.segments.reduce((n, s) => n + s.bytes, 0) };
  }
}
