// A journal's position on one primary array (seed 004's serializer and data mover): host writes of
// the journal's volumes wait for sequence numbers (all writes waiting when no request is out go in
// one request: one round trip serves many writes), their bytes are captured after the local write,
// and messages — the tokens since the previous message, then token+data entries — leave for each
// secondary when `batchBytes` fill or `intervalMs` has passed since the oldest unsent entry.
//
// `tokens: 'ahead'` (the source's behaviour): a write may complete once its token is assigned;
// the token rides in the next message. `tokens: 'sync'`: the token leaves at once and the write
// completes only when its secondary has made it durable, so nothing acknowledged to a host can be
// unknown to the secondary (the loss report is exact). The app completes the host write when the
// local write is done too.
import { assert } from '../lib/assert.js';
import { OutStream } from './stream.js';
import type { Grant } from './sequencer.js';
import { entryBytes, type DataEntry, type JournalMessage, type Token, type TokenSpec } from './journal-types.js';
import { MAX_JOURNAL_ENTRIES } from './journal-wire.js';
import type { LoggedPiece, PrimaryLogRecord, ReplayedLog } from './primary-log.js';

export type TokenMode = 'ahead' | 'sync';

export interface PrimaryConfig {
  readonly journal: string;
  readonly self: string;
  readonly sequencer: string;
  readonly tokens: TokenMode;
  readonly intervalMs: number;
  readonly batchBytes: number;
  readonly retransmitMs: number;
  readonly windowMessages: number;
  /** Tells this process's requests apart from an earlier one's (the sequencer re-grants a repeated request). */
  readonly incarnation: number;
  /**
   * Captured bytes not yet acknowledged by their secondaries (buffered or in flight) beyond which
   * new writes wait for their numbers: the host is slowed instead of the buffer growing.
   */
  readonly maxPendingBytes: number;
  /**
   * Keep the primary-side log (primary-log.ts): writes carry their bytes and the machine emits
   * `log` actions, which the app makes reach the log before any action after them.
   */
  readonly log?: boolean;
}

export type PrimaryEvent =
  /** A host write of the journal arrived (after clone work): it needs one number per piece. */
  | { readonly kind: 'write'; readonly writeId: number; readonly specs: readonly TokenSpec[]; readonly data?: readonly (Uint8Array | null)[] }
  | { readonly kind: 'grant'; readonly grant: Grant }
  /** The write reached the local store: its bytes, one buffer per piece in spec order. */
  | { readonly kind: 'captured'; readonly writeId: number; readonly data: readonly (Uint8Array | null)[] }
  /** A secondary made the stream durable up to this continuity. */
  | { readonly kind: 'ack'; readonly from: string; readonly ackUpTo: number; readonly incarnation?: number };

export type PrimaryAction =
  | { readonly kind: 'request'; readonly to: string; readonly incarnation: number; readonly requestId: number; readonly specs: readonly TokenSpec[] }
  /** The write has its tokens: it may be applied locally now. */
  | { readonly kind: 'tokens'; readonly writeId: number; readonly tokens: readonly Token[] }
  /** The token condition for completing the write holds (ahead: assigned; sync: durable at every secondary). */
  | { readonly kind: 'token-done'; readonly writeId: number }
  | { readonly kind: 'send'; readonly to: string; readonly message: JournalMessage }
  /** Append to the primary-side log before running anything after it. */
  | { readonly kind: 'log'; readonly record: PrimaryLogRecord };

/** Deliberate bugs, for the test that shows the simulator's oracle catches them. */
export interface PrimaryBugs {
  /** `tokens sync` completes the write as soon as its token is assigned, like `ahead`. */
  readonly syncDoneAtGrant?: boolean;
  /** A restarted primary starts empty instead of from its log. */
  readonly forgetLog?: boolean;
  /** A restarted primary resends its logged entries but not the request whose grant it never logged. */
  readonly dropPendingRequest?: boolean;
}

interface OutBuffer {
  readonly stream: OutStream;
  tokens: Token[];
  entries: DataEntry[];
  bytes: number;
  /** Data bytes of messages sent and not yet acknowledged. */
  unackedBytes: number;
  oldestMs: number;
  /** sync: continuity of the message that carried each waiting write's token. */
  readonly syncWaits: Array<{ continuity: number; writeId: number }>;
}

interface WaitingWrite {
  /** 0: a piece of the log's pending request, resent after a restart (no host waits for it). */
  readonly writeId: number;
  readonly specs: readonly TokenSpec[];
  readonly data: readonly (Uint8Array | null)[] | undefined;
}

interface InflightRequest {
  readonly incarnation: number;
  readonly requestId: number;
  readonly writes: WaitingWrite[];
  sentMs: number;
}

export class JournalPrimary {
  private waiting: WaitingWrite[] = [];
  private inflight: InflightRequest | undefined;
  private requestIds = 0;
  private readonly tokensOf = new Map<number, Token[]>();
  /** sync: secondaries still to make the write's tokens durable. */
  private readonly syncPending = new Map<number, number>();
  private readonly out = new Map<string, OutBuffer>();
  private readonly actions: PrimaryAction[] = [];
  /** Counters for status. */
  issuedHigh = 0;
  sentHigh = 0;

  constructor(private readonly config: PrimaryConfig, private readonly bugs: PrimaryBugs = {}, replayed?: ReplayedLog) {
    assert(config.batchBytes > 0 && config.intervalMs >= 0, 'batch bytes and interval must be positive');
    if (!replayed || bugs.forgetLog) return;
    // After a restart: every logged entry goes out again on this incarnation's new streams (a
    // secondary drops the ones it holds, by sequence number); the request whose grant was never
    // logged is asked for again under its old identity, so the sequencer repeats the grant.
    this.requestIds = replayed.highestRequestId;
    for (const e of replayed.entries) {
      const b = this.buffer(e.token.secondary);
      if (b.entries.length === 0) b.oldestMs = -Infinity;
      b.entries.push(e);
      b.bytes += entryBytes(e.data);
      this.issuedHigh = Math.max(this.issuedHigh, e.token.sequence);
    }
    const p = replayed.pending;
    if (p && !bugs.dropPendingRequest) {
      this.inflight = {
        incarnation: p.incarnation, requestId: p.requestId, sentMs: -Infinity,
        writes: [{ writeId: 0, specs: p.pieces.map((x: LoggedPiece) => x.spec), data: p.pieces.map((x: LoggedPiece) => x.data) }],
      };
    }
  }

  /** A request is out whose grant is not logged yet (the app rotates its log only between requests). */
  get requestPending(): boolean {
    return this.inflight !== undefined;
  }

  /**
   * The lowest sequence number whose entry a secondary may still need from this array's log:
   * granted and not yet acknowledged by its secondary. Log records of lower numbers may go.
   */
  get logFloor(): number {
    let f = this.issuedHigh + 1;
    for (const tokens of this.tokensOf.values()) for (const t of tokens) f = Math.min(f, t.sequence);
    for (const b of this.out.values()) {
      for (const e of b.entries) f = Math.min(f, e.token.sequence);
      for (const m of b.stream.pending) for (const e of m.entries) f = Math.min(f, e.token.sequence);
    }
    return f;
  }

  private buffer(to: string): OutBuffer {
    let b = this.out.get(to);
    if (!b) {
      b = { stream: new OutStream(this.config.retransmitMs, this.config.windowMessages), tokens: [], entries: [], bytes: 0, unackedBytes: 0, oldestMs: 0, syncWaits: [] };
      this.out.set(to, b);
    }
    return b;
  }

  get waitingWrites(): number {
    return this.waiting.length + (this.inflight?.writes.length ?? 0);
  }

  get bufferedBytes(): number {
    let n = 0;
    for (const b of this.out.values()) n += b.bytes;
    return n;
  }

  /** Captured bytes buffered or sent and not yet acknowledged. */
  get pendingBytes(): number {
    let n = 0;
    for (const b of this.out.values()) n += b.bytes + b.unackedBytes;
    return n;
  }

  get unackedMessages(): number {
    let n = 0;
    for (const b of this.out.values()) n += b.stream.inFlight;
    return n;
  }

  handle(event: PrimaryEvent, now: number): void {
    switch (event.kind) {
      case 'write':
        assert(event.specs.length > 0, 'a journal write has at least one piece');
        assert(!this.config.log || event.data?.length === event.specs.length, 'a logged journal write carries its bytes, one buffer per piece');
        this.waiting.push({ writeId: event.writeId, specs: event.specs, data: event.data });
        return;
      case 'grant': {
        const req = this.inflight;
        if (!req || req.requestId !== event.grant.requestId) return; // a repeated grant
        const specCount = req.writes.reduce((n, w) => n + w.specs.length, 0);
        assert(event.grant.count === specCount, `grant of ${event.grant.count} numbers for ${specCount} pieces`);
        this.inflight = undefined;
        if (this.config.log) this.actions.push({ kind: 'log', record: { kind: 'grant', incarnation: req.incarnation, requestId: req.requestId, first: event.grant.first, timeMs: event.grant.timeMs } });
        let seq = event.grant.first;
        for (const w of req.writes) {
          const tokens = w.specs.map((s) => ({ ...s, sequence: seq++, timeMs: event.grant.timeMs }));
          if (w.writeId === 0) {
            // The restored request: its bytes are in the log and its local writes were redone.
            tokens.forEach((token, i) => {
              const b = this.buffer(token.secondary);
              if (b.entries.length === 0) b.oldestMs = now;
              b.entries.push({ token, data: w.data![i]! });
              b.bytes += entryBytes(w.data![i]!);
            });
            this.issuedHigh = Math.max(this.issuedHigh, seq - 1);
            continue;
          }
          this.tokensOf.set(w.writeId, tokens);
          this.issuedHigh = Math.max(this.issuedHigh, seq - 1);
          const secondaries = new Set<string>();
          for (const t of tokens) {
            const b = this.buffer(t.secondary);
            b.tokens.push(t);
            secondaries.add(t.secondary);
          }
          this.actions.push({ kind: 'tokens', writeId: w.writeId, tokens });
          if (this.config.tokens === 'ahead' || this.bugs.syncDoneAtGrant) this.actions.push({ kind: 'token-done', writeId: w.writeId });
          else this.syncPending.set(w.writeId, secondaries.size);
        }
        if (this.config.tokens === 'sync') this.sendTokensNow(req.writes, now);
        return;
      }
      case 'captured': {
        const tokens = this.tokensOf.get(event.writeId);
        assert(tokens !== undefined, `write ${event.writeId} captured without tokens`);
        assert(event.data.length === tokens.length, 'one buffer per piece');
        this.tokensOf.delete(event.writeId);
        tokens.forEach((token, i) => {
          const data = event.data[i]!;
          assert(data === null || data.length === token.length, 'captured bytes match the token');
          const b = this.buffer(token.secondary);
          if (b.entries.length === 0) b.oldestMs = now;
          b.entries.push({ token, data });
          b.bytes += entryBytes(data);
        });
        return;
      }
      case 'ack': {
        const b = this.out.get(event.from);
        if (!b || (event.incarnation !== undefined && event.incarnation !== this.config.incarnation)) return;
        for (const m of b.stream.ack(event.ackUpTo)) for (const e of m.entries) b.unackedBytes -= entryBytes(e.data);
        while (b.syncWaits.length > 0 && b.syncWaits[0]!.continuity <= event.ackUpTo) {
          const { writeId } = b.syncWaits.shift()!;
          if (!this.syncPending.has(writeId)) continue;
          const left = this.syncPending.get(writeId)! - 1;
          if (left === 0) { this.syncPending.delete(writeId); this.actions.push({ kind: 'token-done', writeId }); } else this.syncPending.set(writeId, left);
        }
        return;
      }
      default: {
        const never: never = event;
        throw new Error(`unknown journal primary event ${JSON.stringify(never)}`);
      }
    }
  }

  /** sync: every secondary named by these writes gets their tokens in a message of its own now. */
  private sendTokensNow(writes: readonly WaitingWrite[], now: number): void {
    for (const [to, b] of this.out) {
      if (b.tokens.length === 0) continue;
      const message = this.emit(to, b, false, now);
      for (const w of writes) if (w.specs.some((s) => s.secondary === to)) b.syncWaits.push({ continuity: message.continuity, writeId: w.writeId });
    }
  }

  private emit(to: string, b: OutBuffer, withEntries: boolean, now: number): JournalMessage {
    const entries = withEntries ? this.takeEntries(b) : [];
    const message = b.stream.send({ journal: this.config.journal, from: this.config.self, role: 'primary', type: 'data', incarnation: this.config.incarnation, tokens: b.tokens, entries }, now);
    b.tokens = [];
    for (const e of entries) {
      this.sentHigh = Math.max(this.sentHigh, e.token.sequence);
      b.unackedBytes += entryBytes(e.data);
    }
    this.actions.push({ kind: 'send', to, message });
    return message;
  }

  private takeEntries(b: OutBuffer): DataEntry[] {
    let bytes = 0;
    let n = 0;
    while (n < b.entries.length && n < MAX_JOURNAL_ENTRIES && (n === 0 || bytes + entryBytes(b.entries[n]!.data) <= this.config.batchBytes)) bytes += entryBytes(b.entries[n++]!.data);
    const taken = b.entries.splice(0, n);
    b.bytes -= bytes;
    return taken;
  }

  poll(now: number): PrimaryAction[] {
    if (this.inflight === undefined && this.waiting.length > 0 && this.pendingBytes < this.config.maxPendingBytes) {
      const writes = this.waiting;
      this.waiting = [];
      this.inflight = { incarnation: this.config.incarnation, requestId: ++this.requestIds, writes, sentMs: now };
      if (this.config.log) {
        const pieces: LoggedPiece[] = [];
        for (const w of writes) w.specs.forEach((spec, i) => pieces.push({ spec, data: w.data![i]! }));
        this.actions.push({ kind: 'log', record: { kind: 'request', incarnation: this.config.incarnation, requestId: this.inflight.requestId, pieces } });
      }
      this.actions.push(this.requestAction());
    } else if (this.inflight !== undefined && (this.inflight.sentMs === -Infinity || now - this.inflight.sentMs >= this.config.retransmitMs)) {
      this.inflight.sentMs = now;
      this.actions.push(this.requestAction());
    }
    for (const [to, b] of this.out) {
      // Resent messages first, so a new message never overtakes an older one it depends on.
      for (const message of b.stream.due(now)) this.actions.push({ kind: 'send', to, message });
      while (b.stream.hasRoom && b.entries.length > 0 &&
        (b.bytes >= this.config.batchBytes || b.entries.length >= MAX_JOURNAL_ENTRIES || now - b.oldestMs >= this.config.intervalMs)) {
        this.emit(to, b, true, now);
        if (b.entries.length > 0) b.oldestMs = now;
      }
    }
    return this.actions.splice(0);
  }

  private requestAction(): PrimaryAction {
    const req = this.inflight!;
    return { kind: 'request', to: this.config.sequencer, incarnation: req.incarnation, requestId: req.requestId, specs: req.writes.flatMap((w) => w.specs) };
  }

  /** When poll has something to do next without any event (an interval, a retransmit). */
  nextDeadline(): number | undefined {
    let d: number | undefined;
    const take = (t: number | undefined): void => { if (t !== undefined && (d === undefined || t < d)) d = t; };
    if (this.inflight) take(this.inflight.sentMs + this.config.retransmitMs);
    for (const b of this.out.values()) {
      take(b.stream.nextDeadline());
      if (b.entries.length > 0) take(b.oldestMs + this.config.intervalMs);
    }
    return d;
  }
}
