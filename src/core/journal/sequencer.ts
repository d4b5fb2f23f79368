// The sequencer of one journal (seed 004's "sequencing service"): it hands out contiguous ranges of
// global sequence numbers to the journal's primary arrays and fans every token out to every
// secondary array, so each secondary knows, for each number, whether the piece is its own or
// another secondary's — without that, a secondary could not tell "not mine" from "not arrived".
//
// Dependent-write order across arrays: a primary asks for numbers only for writes that have
// arrived, and one batch is granted at a time in arrival order of the requests, so a write issued
// after another completed (its number was granted before its completion) gets a higher number.
//
// Pure: the app persists `nextSequence` before a grant leaves (`persist` action first), the
// simulator runs it as is.
import { assert } from '../lib/assert.js';
import { OutStream } from './stream.js';
import type { JournalMessage, Token, TokenSpec } from './journal-types.js';
import type { IssuedRecord } from './primary-log.js';

export interface SequencerConfig {
  readonly journal: string;
  /** This array's name (messages' `from`). */
  readonly self: string;
  readonly secondaries: readonly string[];
  readonly retransmitMs: number;
  readonly windowMessages: number;
  /** This process (messages carry it: a restarted sequencer's fan-out is a new stream). */
  readonly incarnation?: number;
  /** Emit `log` actions: every grant is logged before it leaves (primary-log.ts, IssuedRecord). */
  readonly log?: boolean;
}

export interface Grant {
  readonly requestId: number;
  readonly first: number;
  readonly count: number;
  readonly timeMs: number;
}

export type SequencerEvent =
  /** A primary asks for numbers for `specs`, in order. `incarnation` tells a restarted primary's requests apart. */
  | { readonly kind: 'request'; readonly from: string; readonly incarnation: number; readonly requestId: number; readonly specs: readonly TokenSpec[] }
  /** A secondary acknowledged the token stream up to this continuity. */
  | { readonly kind: 'ack'; readonly from: string; readonly ackUpTo: number; readonly incarnation?: number };

export type SequencerAction =
  | { readonly kind: 'grant'; readonly to: string; readonly grant: Grant }
  | { readonly kind: 'send'; readonly to: string; readonly message: JournalMessage }
  /** Append to the sequencer's log before the grant after it leaves. */
  | { readonly kind: 'log'; readonly record: IssuedRecord };

/**
 * Incarnations of one primary whose last grant is remembered. A restarted primary asks again under
 * its predecessor's identity first; a copy of an earlier incarnation's request can still arrive
 * after the new one's requests (journal seed 1161597524: it got fresh numbers no primary would
 * ever fill, and every secondary stalled in front of them). Beyond this many restarts, the oldest
 * is forgotten.
 */
const REMEMBERED_INCARNATIONS = 8;

export class Sequencer {
  private next: number;
  private readonly streams = new Map<string, OutStream>();
  /** Tokens granted but not yet put into a message, for every secondary alike. */
  private pending: Token[] = [];
  /** Per primary, per incarnation (oldest first): the last grant made to it. */
  private readonly lastGrant = new Map<string, Map<number, Grant>>();
  private readonly actions: SequencerAction[] = [];

  /**
   * `logged`: what a killed predecessor logged. Its grants are remembered (a primary repeating a
   * request gets the same numbers) and their tokens fanned out again on this incarnation's streams
   * (a secondary drops the ones it has); numbering goes on after the highest.
   */
  constructor(private readonly config: SequencerConfig, nextSequence = 1, logged: readonly IssuedRecord[] = []) {
    assert(Number.isSafeInteger(nextSequence) && nextSequence >= 1, 'sequence numbers start at 1');
    this.next = nextSequence;
    for (const s of config.secondaries) this.streams.set(s, new OutStream(config.retransmitMs, config.windowMessages));
    for (const r of [...logged].sort((a, b) => a.first - b.first)) {
      const grant: Grant = { requestId: r.requestId, first: r.first, count: r.specs.length, timeMs: r.timeMs };
      this.remember(r.from, r.incarnation, grant);
      r.specs.forEach((spec, i) => this.pending.push({ ...spec, sequence: r.first + i, timeMs: r.timeMs }));
      this.next = Math.max(this.next, r.first + r.specs.length);
    }
  }

  private remember(from: string, incarnation: number, grant: Grant): void {
    let grants = this.lastGrant.get(from);
    if (!grants) this.lastGrant.set(from, grants = new Map());
    grants.delete(incarnation); // re-inserted: the newest last
    grants.set(incarnation, grant);
    if (grants.size > REMEMBERED_INCARNATIONS) grants.delete(grants.keys().next().value!);
  }

  /** The lowest number whose token a secondary may still lack (log records below it may go). */
  get logFloor(): number {
    let f = this.next;
    for (const t of this.pending) f = Math.min(f, t.sequence);
    for (const s of this.streams.values()) for (const m of s.pending) for (const t of m.tokens) f = Math.min(f, t.sequence);
    return f;
  }

  /**
   * A secondary joins: it gets every token granted from now on. Returns the numbers issued so far
   * (its queue starts after them). Tokens already queued for the fan-out go out before it joins.
   */
  addSecondary(name: string, now: number): number {
    if (!this.streams.has(name)) {
      this.flushPending(now, true);
      this.streams.set(name, new OutStream(this.config.retransmitMs, this.config.windowMessages));
    }
    return this.issued;
  }

  get secondaries(): string[] {
    return [...this.streams.keys()];
  }

  /** The next number it will hand out (the app persists it before a grant leaves). */
  get nextSequence(): number {
    return this.next;
  }

  get issued(): number {
    return this.next - 1;
  }

  handle(event: SequencerEvent, now: number): void {
    switch (event.kind) {
      case 'request': {
        const last = this.lastGrant.get(event.from)?.get(event.incarnation);
        // A repeated request (its grant was lost on the way, or a restarted primary asks under its
        // predecessor's identity) gets the same numbers again.
        if (last && last.requestId === event.requestId) {
          this.actions.push({ kind: 'grant', to: event.from, grant: last });
          return;
        }
        if (last && event.requestId < last.requestId) return; // stale
        const first = this.next;
        this.next += event.specs.length;
        const grant: Grant = { requestId: event.requestId, first, count: event.specs.length, timeMs: now };
        event.specs.forEach((spec, i) => this.pending.push({ ...spec, sequence: first + i, timeMs: now }));
        this.remember(event.from, event.incarnation, grant);
        if (this.config.log) {
          this.actions.push({ kind: 'log', record: { kind: 'issued', from: event.from, incarnation: event.incarnation, requestId: event.requestId, first, timeMs: now, specs: event.specs } });
        }
        this.actions.push({ kind: 'grant', to: event.from, grant });
        return;
      }
      case 'ack': {
        if (event.incarnation !== undefined && event.incarnation !== this.config.incarnation) return;
        this.streams.get(event.from)?.ack(event.ackUpTo);
        return;
      }
      default: {
        const never: never = event;
        throw new Error(`unknown sequencer event ${JSON.stringify(never)}`);
      }
    }
  }

  /** Grants, then the token fan-out (one message per secondary with every token since the last). */
  poll(now: number): SequencerAction[] {
    this.flushPending(now, false);
    for (const [to, stream] of this.streams) for (const message of stream.due(now)) this.actions.push({ kind: 'send', to, message });
    return this.actions.splice(0);
  }

  /** One message per secondary with every token since the last (held while a receiver is too far behind, unless forced). */
  private flushPending(now: number, force: boolean): void {
    if (this.pending.length === 0) return;
    let room = true;
    for (const s of this.streams.values()) room &&= s.hasRoom;
    if (!room && !force) return;
    const tokens = this.pending;
    this.pending = [];
    for (const [to, stream] of this.streams) {
      const message = stream.send({
        journal: this.config.journal, from: this.config.self, role: 'sequencer', type: 'data',
        ...(this.config.incarnation === undefined ? {} : { incarnation: this.config.incarnation }), tokens, entries: [],
      }, now);
      this.actions.push({ kind: 'send', to, message });
    }
  }

  nextDeadline(): number | undefined {
    let d: number | undefined;
    for (const s of this.streams.values()) {
      const t = s.nextDeadline();
      if (t !== undefined && (d === undefined || t < d)) d = t;
    }
    return d;
  }
}
