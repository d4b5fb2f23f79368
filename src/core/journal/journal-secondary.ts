// A journal's pending-write queue on one secondary array (seed 004, FIG. 5): tokens and data in
// sequence order, durable before they are acknowledged, applied only in runs of complete entries.
// The secondaries of one journal on different arrays exchange their "complete up to S" watermarks
// and each applies only up to the smallest, so no secondary runs ahead of a point that another one
// cannot reach: after a disaster (journal-recovery.ts) every secondary can be brought to one point.
//
// A sequence number is complete here when its token is known (from the sequencer's fan-out or from
// its primary) and, if the piece is this array's, its data is here too. Pure: actions say what to
// persist, send and apply; the app (or the simulator) runs them in order — a `persist` finishes
// before the `send` after it, so nothing is acknowledged that a crash could lose.
import { assert } from '../lib/assert.js';
import { acceptContinuity } from './stream.js';
import type { QueueState } from './journal-recovery.js';
import { entryBytes, streamKey, type DataEntry, type JournalMessage, type Token } from './journal-types.js';

export interface SecondaryConfig {
  readonly journal: string;
  readonly self: string;
  /** Every secondary array of the journal, this one included. */
  readonly secondaries: readonly string[];
  /** How often the watermark is announced again (announcements are one-shot and may be lost). */
  readonly announceMs: number;
}

/** What survives a crash (the app keeps it through the MetaStore; the simulator in its "disk"). */
export interface SecondaryDurable {
  appliedUpTo: number;
  /** The sequencer's time of the token at appliedUpTo (the consistent time if recovery stops there). */
  appliedTimeMs: number | null;
  /** Next continuity expected on each stream (streamKey: role and sender). */
  readonly expected: Map<string, number>;
  /** Known tokens above appliedUpTo, every secondary's. */
  readonly tokens: Map<number, Token>;
  /**
   * This array's tokens above appliedUpTo that came from their primary (not only from the sequencer's
   * fan-out): with `tokens sync` only those can belong to writes a host saw acknowledged.
   */
  readonly fromPrimary: Set<number>;
  /** This array's entries' bytes above appliedUpTo. */
  readonly data: Map<number, Uint8Array | null>;
  /** When the last message from a primary arrived (for the report under `tokens ahead`). */
  lastMessageMs: number | null;
  /** After recovery the queue takes no more messages. */
  recoveredAt: number | null;
}

export const emptyDurable = (): SecondaryDurable => ({
  appliedUpTo: 0, appliedTimeMs: null, expected: new Map(), tokens: new Map(), fromPrimary: new Set(), data: new Map(), lastMessageMs: null, recoveredAt: null,
});

export type SecondaryEvent =
  | { readonly kind: 'message'; readonly message: JournalMessage }
  | { readonly kind: 'watermark'; readonly from: string; readonly completeUpTo: number }
  /** The app wrote the entries of the last `apply` to the volumes and made them durable. */
  | { readonly kind: 'applied'; readonly upTo: number };

export type SecondaryAction =
  /** Make the message's contribution durable (with the sender's next continuity) before anything after it. */
  | { readonly kind: 'persist'; readonly stream: string; readonly expected: number; readonly tokens: readonly Token[]; readonly fromPrimary: readonly number[]; readonly entries: readonly DataEntry[]; readonly lastMessageMs: number | null }
  | { readonly kind: 'send'; readonly to: string; readonly message: JournalMessage }
  /** Tell the other secondaries how far this queue is complete. */
  | { readonly kind: 'announce'; readonly completeUpTo: number }
  /** Write these entries (this array's, in sequence order) to the secondary volumes, flush, then report `applied`. */
  | { readonly kind: 'apply'; readonly upTo: number; readonly entries: readonly DataEntry[] }
  /** Record appliedUpTo durably and drop everything at or below it. */
  | { readonly kind: 'prune'; readonly upTo: number; readonly timeMs: number | null };

/** Deliberate bugs, for the test that shows the simulator's oracle catches them. */
export interface SecondaryBugs {
  /** Apply every own entry that has data, past gaps. */
  readonly applyPastGap?: boolean;
  /** Ignore the other secondaries' watermarks. */
  readonly ignorePeers?: boolean;
}

export class JournalSecondary {
  private completeHigh: number;
  private readonly peers = new Map<string, number>();
  private applying: number | undefined;
  private announcedHigh = -1;
  private announcedMs = -Infinity;
  private readonly actions: SecondaryAction[] = [];

  constructor(private readonly config: SecondaryConfig, readonly durable: SecondaryDurable, private readonly bugs: SecondaryBugs = {}) {
    assert(config.secondaries.includes(config.self), 'a secondary is one of the journal\'s secondaries');
    this.completeHigh = durable.appliedUpTo;
    this.advance();
  }

  /** Every number up to this one is complete here (durably). */
  get completeUpTo(): number {
    return this.completeHigh;
  }

  get appliedUpTo(): number {
    return this.durable.appliedUpTo;
  }

  /** The point every secondary can reach: this queue's and the others' watermarks' minimum. */
  get globalPoint(): number {
    let p = this.completeHigh;
    if (this.bugs.ignorePeers) return p;
    for (const s of this.config.secondaries) if (s !== this.config.self) p = Math.min(p, this.peers.get(s) ?? this.durable.appliedUpTo);
    return p;
  }

  /**
   * Why the queue is not complete further (undefined: nothing known beyond it): the first number
   * not complete, and its token if known (its data is missing) — for `journal show`.
   */
  get blockedAt(): { readonly sequence: number; readonly token: Token | undefined } | undefined {
    const next = this.completeHigh + 1;
    if (next > this.highestKnown) return undefined;
    return { sequence: next, token: this.durable.tokens.get(next) };
  }

  /** The point of the apply running now, if any. */
  get applyingUpTo(): number | undefined {
    return this.applying;
  }

  get queuedEntries(): number {
    return this.durable.data.size;
  }

  get queuedBytes(): number {
    let n = 0;
    for (const d of this.durable.data.values()) n += entryBytes(d);
    return n;
  }

  get highestKnown(): number {
    let h = this.durable.appliedUpTo;
    for (const s of this.durable.tokens.keys()) if (s > h) h = s;
    return h;
  }

  private advance(): void {
    const d = this.durable;
    for (;;) {
      const next = this.completeHigh + 1;
      const t = d.tokens.get(next);
      // A piece for a secondary this queue has not heard of yet (it joined a moment ago) waits
      // until it is a member: only then do the watermarks cover it.
      if (!t || !this.config.secondaries.includes(t.secondary) || (t.secondary === this.config.self && !d.data.has(next))) return;
      this.completeHigh = next;
    }
  }

  handle(event: SecondaryEvent, now: number): void {
    switch (event.kind) {
      case 'message': return this.onMessage(event.message, now);
      case 'watermark':
        if (event.from !== this.config.self && event.completeUpTo > (this.peers.get(event.from) ?? -1)) this.peers.set(event.from, event.completeUpTo);
        return;
      case 'applied': {
        assert(this.applying === event.upTo, `applied ${event.upTo} but ${this.applying ?? 'nothing'} was being applied`);
        this.applying = undefined;
        const d = this.durable;
        d.appliedTimeMs = d.tokens.get(event.upTo)?.timeMs ?? d.appliedTimeMs;
        d.appliedUpTo = event.upTo;
        for (const s of [...d.tokens.keys()]) if (s <= event.upTo) d.tokens.delete(s);
        for (const s of [...d.data.keys()]) if (s <= event.upTo) d.data.delete(s);
        for (const s of [...d.fromPrimary]) if (s <= event.upTo) d.fromPrimary.delete(s);
        this.actions.push({ kind: 'prune', upTo: event.upTo, timeMs: d.appliedTimeMs });
        return;
      }
      default: {
        const never: never = event;
        throw new Error(`unknown journal secondary event ${JSON.stringify(never)}`);
      }
    }
  }

  private onMessage(m: JournalMessage, now: number): void {
    if (this.durable.recoveredAt !== null) return; // recovered: the primary's stream is over
    const d = this.durable;
    const key = streamKey(m);
    const expected = d.expected.get(key) ?? 1;
    const accept = acceptContinuity(expected, m.continuity);
    if (accept === 'new') {
      const tokens: Token[] = [];
      const entries: DataEntry[] = [];
      const fromPrimary: number[] = [];
      for (const t of m.tokens) {
        if (t.sequence <= d.appliedUpTo) continue;
        if (m.role === 'primary' && t.secondary === this.config.self && !d.fromPrimary.has(t.sequence)) { d.fromPrimary.add(t.sequence); fromPrimary.push(t.sequence); }
        if (d.tokens.has(t.sequence)) continue;
        d.tokens.set(t.sequence, t);
        tokens.push(t);
      }
      for (const e of m.entries) {
        const s = e.token.sequence;
        if (s <= d.appliedUpTo || e.token.secondary !== this.config.self || d.data.has(s)) continue;
        if (!d.tokens.has(s)) { d.tokens.set(s, e.token); tokens.push(e.token); }
        if (!d.fromPrimary.has(s)) { d.fromPrimary.add(s); fromPrimary.push(s); }
        d.data.set(s, e.data);
        entries.push(e);
      }
      d.expected.set(key, expected + 1);
      // A primary's stream tells how fresh the queue is (writes after its last message may be unknown).
      if (m.role === 'primary') d.lastMessageMs = now;
      this.actions.push({ kind: 'persist', stream: key, expected: expected + 1, tokens, fromPrimary, entries, lastMessageMs: d.lastMessageMs });
      this.advance();
    }
    const ackUpTo = (d.expected.get(key) ?? 1) - 1;
    this.actions.push({ kind: 'send', to: m.from, message: { journal: this.config.journal, from: this.config.self, role: m.role, type: 'ack', continuity: 0, ...(m.incarnation === undefined ? {} : { incarnation: m.incarnation }), tokens: [], entries: [], ackUpTo } });
  }

  poll(now: number): SecondaryAction[] {
    const point = this.globalPoint;
    if (this.applying === undefined && this.durable.recoveredAt === null) {
      const upTo = this.bugs.applyPastGap ? this.highestWithData() : point;
      if (upTo > this.durable.appliedUpTo) this.startApply(upTo);
    }
    if (this.completeHigh !== this.announcedHigh || now - this.announcedMs >= this.config.announceMs) {
      this.announcedHigh = this.completeHigh;
      this.announcedMs = now;
      this.actions.push({ kind: 'announce', completeUpTo: this.completeHigh });
    }
    return this.actions.splice(0);
  }

  private highestWithData(): number {
    let h = this.durable.appliedUpTo;
    for (const s of this.durable.data.keys()) if (s > h) h = s;
    return h;
  }

  private startApply(upTo: number): void {
    const entries: DataEntry[] = [];
    for (const [s, data] of this.durable.data) {
      if (s > upTo) continue;
      entries.push({ token: this.durable.tokens.get(s)!, data });
    }
    entries.sort((a, b) => a.token.sequence - b.token.sequence);
    this.applying = upTo;
    this.actions.push({ kind: 'apply', upTo, entries });
  }

  /** What recovery needs of this queue (journal-recovery.ts). */
  queueState(): QueueState {
    const d = this.durable;
    return {
      secondary: this.config.self,
      appliedUpTo: d.appliedUpTo,
      appliedTimeMs: d.appliedTimeMs,
      tokens: [...d.tokens.values()].sort((a, b) => a.sequence - b.sequence),
      dataSequences: [...d.data.keys()].sort((a, b) => a - b),
      primaryTokens: [...d.fromPrimary].sort((a, b) => a - b),
      lastMessageMs: d.lastMessageMs,
    };
  }

  /**
   * Recovery: apply this queue's entries up to `point` (every secondary was asked for its state and
   * the point computed from all of them) and take no more messages. Returns the `apply` to run.
   */
  recover(point: number, now: number): SecondaryAction[] {
    assert(point >= this.durable.appliedUpTo, `recovery point ${point} below what is applied (${this.durable.appliedUpTo})`);
    assert(this.applying === undefined, 'recover while an apply is running');
    this.durable.recoveredAt = now;
    if (point > this.durable.appliedUpTo) this.startApply(point);
    return this.actions.splice(0);
  }

  nextDeadline(): number {
    return this.announcedMs + this.config.announceMs;
  }
}
