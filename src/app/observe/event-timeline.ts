// The array's event timeline (SPEC §9): the last state changes worth an operator's eye — links
// going down and up, pair state changes and commands, group evictions and stalls, clone state
// changes — kept in a bounded ring so the API, `tidemark events` and the dashboard can show what
// happened without a log pipeline. Nothing here is durable: the log keeps the full record.
import { StateWaiters } from '../state-waiters.js';

export type EventKind = 'array' | 'link' | 'pair' | 'group' | 'clone';
export const EVENT_KINDS: readonly EventKind[] = ['array', 'link', 'pair', 'group', 'clone'];

export interface TimelineEvent {
  /** Grows by one per event since the array started: the cursor `since` takes. */
  readonly seq: number;
  readonly at: string;
  readonly kind: EventKind;
  /** The object the event is about (a pair, peer, group or clone name), when there is one. */
  readonly subject: string | null;
  readonly message: string;
  readonly fields: Readonly<Record<string, string | number | boolean | null>>;
}

export interface EventPage {
  readonly events: TimelineEvent[];
  /** Pass as `since` to get what follows. */
  readonly next: number;
  /** Events after `since` that the ring no longer holds (the reader fell behind). */
  readonly missed: number;
}

export const DEFAULT_TIMELINE_CAPACITY = 1000;
const MAX_FIELD_CHARS = 500;

/** Field values as JSON primitives, strings capped: an event never carries a buffer or a cycle. */
function flatten(fields: Record<string, unknown>): Record<string, string | number | boolean | null> {
  const out: Record<string, string | number | boolean | null> = {};
  for (const [key, value] of Object.entries(fields)) {
    if (value === undefined) continue;
    if (value === null || typeof value === 'number' || typeof value === 'boolean') out[key] = value;
    else {
      const text = typeof value === 'string' ? value : Array.isArray(value) ? value.map(String).join(', ') : JSON.stringify(value) ?? String(value);
      out[key] = text.length > MAX_FIELD_CHARS ? `${text.slice(0, MAX_FIELD_CHARS)}…` : text;
    }
  }
  return out;
}

export class EventTimeline {
  private readonly ring: (TimelineEvent | undefined)[];
  private lastSeq = 0;
  /** Readers waiting for an event newer than theirs (long polls). */
  private readonly readers = new StateWaiters();

  constructor(private readonly nowMs: () => number, readonly capacity = DEFAULT_TIMELINE_CAPACITY) {
    if (!(Number.isSafeInteger(capacity) && capacity > 0)) throw new Error(`timeline capacity must be a positive integer, not ${capacity}`);
    this.ring = new Array<TimelineEvent | undefined>(capacity);
  }

  /** The newest event's seq (0: none yet). */
  get latest(): number {
    return this.lastSeq;
  }

  record(kind: EventKind, message: string, subject: string | null, fields: Record<string, unknown> = {}): TimelineEvent {
    const event: TimelineEvent = {
      seq: ++this.lastSeq, at: new Date(this.nowMs()).toISOString(), kind, subject, message, fields: flatten(fields),
    };
    this.ring[event.seq % this.capacity] = event;
    this.readers.notify();
    return event;
  }

  /**
   * Events with seq > since, oldest first, at most `limit`. A cursor beyond the newest event comes
   * from an earlier run of the array (seq restarts at 1): the reader gets this run's events from the start.
   */
  since(since: number, limit = this.capacity): EventPage {
    const cursor = since > this.lastSeq ? 0 : since;
    const oldest = Math.max(1, this.lastSeq - this.capacity + 1);
    const from = Math.max(cursor + 1, oldest);
    const events: TimelineEvent[] = [];
    for (let seq = from; seq <= this.lastSeq && events.length < limit; seq++) events.push(this.ring[seq % this.capacity]!);
    return { events, next: events.length > 0 ? events[events.length - 1]!.seq : cursor, missed: Math.max(0, oldest - (cursor + 1)) };
  }

  /**
   * Resolves once an event newer than `since` exists, or after `timeoutMs` (a long poll: the
   * dashboard and `events --follow` see changes at once without hammering the API).
   */
  waitAfter(since: number, timeoutMs: number): Promise<void> {
    return this.readers.until(() => this.lastSeq !== since, timeoutMs);
  }

  /** Wakes every waiting reader and makes later ones answer at once (the API is closing). */
  close(): void {
    this.readers.releaseAll();
  }
}
