// One journal on one array, running the core machines this array holds for it — the sequencer (if
// it is the journal's sequencer), the primary position (if it has primary pairs), the secondary
// queue (if it has secondary pairs) — and carrying out what they ask: persist, send over the
// peer RPC, apply to volumes. The machines decide; this executes.
import { ErrorCode, TidemarkError } from '../../core/errors.js';
import { Sequencer, type Grant, type SequencerAction } from '../../core/journal/sequencer.js';
import { JournalPrimary, type PrimaryAction } from '../../core/journal/journal-primary.js';
import { JournalSecondary, type SecondaryAction, type SecondaryDurable } from '../../core/journal/journal-secondary.js';
import { splitWrite, streamKey, type DataEntry, type JournalMessage, type Token, type TokenSpec } from '../../core/journal/journal-types.js';
import type { Segment } from '../../core/replication/peer-messages.js';
import type { RequestOf } from '../../core/replication/peer-protocol.js';
import type { AppliedWrite } from '../volume/volume.js';
import type { Volume } from '../volume/volume.js';
import type { PeerRpc } from '../replication/peer-rpc.js';
import type { Timers } from '../../ports/timers.js';
import type { JournalQueueStore } from './journal-queue-store.js';
import type { JournalPairRecord, JournalRecord, JournalRecords } from './journal-records.js';
import type { PrimaryLogWriter } from './primary-log-writer.js';
import type { IssuedRecord, ReplayedLog } from '../../core/journal/primary-log.js';

export interface RuntimeDeps {
  readonly self: string;
  readonly rpc: PeerRpc;
  readonly records: JournalRecords;
  readonly timers: Timers;
  readonly nowMs: () => number;
  readonly volume: (name: string) => Volume;
  readonly onError: (error: unknown, context: Record<string, unknown>) => void;
  /** This boot of the machine (Linux: /proc/sys/kernel/random/boot_id); tells a process restart from a reboot. */
  readonly bootId?: string;
}

/** Sent again when unacknowledged this long (the link is reliable while up: this covers reconnects). */
const RETRANSMIT_MS = 1000;
const WINDOW_MESSAGES = 64;
const TICK_MS = 10;
/**
 * The sequencer persists a bound this far ahead of the numbers it hands out, not every number: a
 * grant costs no fsync (a restarted sequencer starts above the bound: numbers are never reused;
 * the skipped ones are never handed out).
 */
const RESERVE_NUMBERS = 1_000_000;

interface Deferred { readonly promise: Promise<void>; resolve(): void; reject(e: unknown): void }
function deferred(): Deferred {
  let resolve!: () => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<void>((res, rej) => { resolve = res; reject = rej; });
  promise.catch(() => undefined);
  return { promise, resolve, reject };
}

interface PendingWrite {
  readonly id: number;
  readonly tokens: Deferred;
  readonly done: Deferred;
  assigned: readonly Token[] | undefined;
}

export class JournalRuntime {
  sequencer: Sequencer | undefined;
  primary: JournalPrimary | undefined;
  secondary: JournalSecondary | undefined;
  /** Local pair halves by id. */
  readonly pairs = new Map<string, JournalPairRecord>();
  members: string[] = [];
  private readonly writes = new WeakMap<AppliedWrite, PendingWrite>();
  private readonly byId = new Map<number, PendingWrite>();
  private nextWriteId = 1;
  private pumpQueued = false;
  private secondaryWork: Promise<unknown> = Promise.resolve();
  private sequencerPersisted = 0;
  private cancelTick: (() => void) | undefined;
  private closed = false;
  /** Peer messages sent and bytes of data entries, for status and the bench. */
  sentMessages = 0;
  sentDataBytes = 0;
  /** The primary-side log (set by the manager when the array has a log store). */
  primaryLog: PrimaryLogWriter | undefined;
  /** The sequencer's log of grants (same store). */
  sequencerLog: PrimaryLogWriter | undefined;
  /** What an earlier process left in the log, until the primary machine takes it. */
  replayed: ReplayedLog | undefined;

  constructor(readonly record: JournalRecord, private readonly deps: RuntimeDeps, private readonly queue: JournalQueueStore, private readonly incarnation: number) {}

  start(): void {
    this.cancelTick ??= this.deps.timers.every(TICK_MS, () => this.pump());
  }

  /** clean: the array stops in order (its logs are made durable and marked whole), not abandoned. */
  close(clean = false): void {
    if (clean && !this.closed) {
      try {
        this.sequencerLog?.closeCleanly();
        this.primaryLog?.closeCleanly();
      } catch (e) {
        this.deps.onError(e, { journal: this.record.name, op: 'close log' });
      }
    }
    this.closed = true;
    this.cancelTick?.();
    this.cancelTick = undefined;
    for (const w of this.byId.values()) {
      const e = new TidemarkError(ErrorCode.ShuttingDown, 'array is shutting down');
      w.tokens.reject(e);
      w.done.reject(e);
    }
    this.byId.clear();
  }

  // ---- roles ----

  startSequencer(next: number, secondaries: readonly string[], logged: readonly IssuedRecord[] = []): void {
    this.sequencer = new Sequencer({
      journal: this.record.name, self: this.deps.self, secondaries, retransmitMs: RETRANSMIT_MS, windowMessages: WINDOW_MESSAGES,
      incarnation: this.incarnation, log: this.sequencerLog !== undefined,
    }, next, logged);
    this.sequencerPersisted = Math.max(next, this.sequencer.nextSequence);
  }

  /** The bound the sequencer's persisted next number must not fall below (it reserves ahead). */
  get sequencerBound(): number {
    return Math.max(this.sequencerPersisted, this.sequencer?.nextSequence ?? 1);
  }

  ensurePrimary(): JournalPrimary {
    this.primary ??= new JournalPrimary({
      journal: this.record.name, self: this.deps.self, sequencer: this.record.sequencer, tokens: this.record.tokens,
      intervalMs: this.record.intervalMs, batchBytes: this.record.batchBytes, retransmitMs: RETRANSMIT_MS, windowMessages: WINDOW_MESSAGES,
      incarnation: this.incarnation, maxPendingBytes: Math.min(64 * 1024 * 1024, 16 * this.record.batchBytes),
      log: this.primaryLog !== undefined,
    }, {}, this.replayed);
    this.replayed = undefined;
    return this.primary;
  }

  /** (Re)starts the secondary queue with the journal's current members (the durable state carries over). */
  startSecondary(durable: SecondaryDurable, members: readonly string[]): void {
    const all = members.includes(this.deps.self) ? [...members] : [...members, this.deps.self];
    this.members = all;
    this.secondary = new JournalSecondary({ journal: this.record.name, self: this.deps.self, secondaries: all, announceMs: 500 }, durable);
  }

  // ---- the write path (primary) ----

  primaryPairsOf(volume: string): JournalPairRecord[] {
    return [...this.pairs.values()].filter((p) => p.role === 'primary' && p.primaryVolume === volume);
  }

  /** Admission: the write waits for its numbers. Idempotent (admission may run twice for one write). */
  takeToken(volume: string, write: AppliedWrite): Promise<void> | undefined {
    const known = this.writes.get(write);
    if (known) return known.tokens.promise;
    const specs: TokenSpec[] = splitWrite(
      this.primaryPairsOf(volume).map((p) => ({ id: p.id, volume: p.primaryVolume, secondary: p.secondaryArray, extents: p.extents ?? undefined })),
      volume, write.offset, write.length);
    if (specs.length === 0 || this.closed) return undefined;
    const w: PendingWrite = { id: this.nextWriteId++, tokens: deferred(), done: deferred(), assigned: undefined };
    this.writes.set(write, w);
    this.byId.set(w.id, w);
    const data = specs.map((t) => (write.kind === 'write' && write.data ? write.data.slice(t.offset - write.offset, t.offset - write.offset + t.length) : null));
    this.ensurePrimary().handle({ kind: 'write', writeId: w.id, specs, data }, this.deps.nowMs());
    this.pump();
    return w.tokens.promise;
  }

  /** After the local write: the bytes go into the outgoing buffer; resolves when the token rule holds. */
  capture(write: AppliedWrite): Promise<void> | undefined {
    const w = this.writes.get(write);
    if (!w || !w.assigned || !this.primary) return undefined;
    this.writes.delete(write);
    const data = w.assigned.map((t) => (write.kind === 'write' && write.data
      ? write.data.slice(t.offset - write.offset, t.offset - write.offset + t.length)
      : null));
    this.primary.handle({ kind: 'captured', writeId: w.id, data }, this.deps.nowMs());
    this.pump();
    // FUA: the write is durable when it completes, and so must its log record be.
    if (write.fua && this.primaryLog) return Promise.all([w.done.promise, this.primaryLog.sync()]).then(() => undefined);
    return w.done.promise;
  }

  /** A host FLUSH of a primary volume: the log becomes as durable as the volume. */
  flushLog(): Promise<void> | undefined {
    return this.primaryLog?.sync();
  }

  /**
   * After a restart, before host I/O: the logged writes are written again to the primary volumes
   * in log order (a write whose number reached the log may not have reached the volume before the
   * kill; its entry will reach the secondaries, so the primary must hold it too).
   */
  async redoLogged(): Promise<void> {
    const touched = new Set<Volume>();
    for (const p of this.replayed?.redo ?? []) {
      const volume = this.deps.volume(p.spec.volume);
      touched.add(volume);
      if (p.data === null) await volume.internalZero(p.spec.offset, p.spec.length, { source: 'replica' });
      else await volume.internalWrite(p.spec.offset, p.data, { source: 'replica' });
    }
    for (const v of touched) await v.internalFlush();
  }

  // ---- the machines' actions ----

  /** Runs every machine's pending actions soon (coalesced into one turn). */
  pump(): void {
    if (this.pumpQueued || this.closed) return;
    this.pumpQueued = true;
    queueMicrotask(() => {
      this.pumpQueued = false;
      this.runPrimary();
      this.runSequencer();
      if (this.secondary) void this.drainSecondary();
    });
  }

  private runPrimary(): void {
    if (!this.primary) return;
    for (const a of this.primary.poll(this.deps.nowMs())) this.primaryAction(a);
    this.primaryLog?.maintain(this.primary.logFloor);
  }

  private primaryAction(a: PrimaryAction): void {
    switch (a.kind) {
      case 'request': {
        const request = { kind: 'request' as const, from: this.deps.self, incarnation: a.incarnation, requestId: a.requestId, specs: a.specs };
        if (a.to === this.deps.self) {
          void this.grantLocally(request).then((g) => { if (g) this.onGrant(g); }, (e: unknown) => this.deps.onError(e, { journal: this.record.name, op: 'grant' }));
          return;
        }
        const header: RequestOf<'journal.request'> = { op: 'journal.request', journal: this.record.name, incarnation: a.incarnation, requestId: a.requestId, specs: a.specs };
        this.deps.rpc.request(a.to, header, [], 10_000).then((r) => this.onGrant({ requestId: a.requestId, ...r.header }), () => undefined);
        return;
      }
      case 'tokens': {
        const w = this.byId.get(a.writeId);
        if (!w) return;
        w.assigned = a.tokens;
        w.tokens.resolve();
        return;
      }
      case 'token-done': {
        const w = this.byId.get(a.writeId);
        if (!w) return;
        this.byId.delete(a.writeId);
        w.done.resolve();
        return;
      }
      case 'send':
        return this.send(a.to, a.message);
      case 'log':
        // Synchronous: the record is in the page cache before the request or write it covers goes on.
        this.primaryLog?.append(a.record);
        return;
      default: {
        const never: never = a;
        throw new Error(`unknown primary action ${JSON.stringify(never)}`);
      }
    }
  }

  private onGrant(grant: Grant): void {
    this.primary?.handle({ kind: 'grant', grant }, this.deps.nowMs());
    this.pump();
  }

  /**
   * The sequencer's side of a request (from a peer, or this array's own primary): numbers are
   * durable before they leave, so a restarted sequencer never hands one out twice.
   */
  async grantLocally(request: { kind: 'request'; from: string; incarnation: number; requestId: number; specs: readonly TokenSpec[] }): Promise<Grant | undefined> {
    const s = this.sequencer;
    if (!s) throw new TidemarkError(ErrorCode.InvalidState, `${this.deps.self} is not the sequencer of journal ${this.record.name}`);
    s.handle(request, this.deps.nowMs());
    const actions = s.poll(this.deps.nowMs());
    if (s.nextSequence > this.sequencerPersisted) {
      const bound = s.nextSequence + RESERVE_NUMBERS;
      await this.deps.records.saveSequencer(this.record.name, { next: bound, secondaries: s.secondaries, ...(this.deps.bootId === undefined ? {} : { bootId: this.deps.bootId }) });
      this.sequencerPersisted = Math.max(this.sequencerPersisted, bound);
    }
    let mine: Grant | undefined;
    for (const a of actions) {
      if (a.kind === 'grant' && a.to === request.from && a.grant.requestId === request.requestId) mine = a.grant;
      else this.sequencerAction(a);
    }
    return mine;
  }

  private runSequencer(): void {
    if (!this.sequencer) return;
    for (const a of this.sequencer.poll(this.deps.nowMs())) this.sequencerAction(a);
    this.sequencerLog?.maintain(this.sequencer.logFloor);
  }

  private sequencerAction(a: SequencerAction): void {
    // A grant outside a request (a repeated one) goes back through the requester's retry.
    if (a.kind === 'send') this.send(a.to, a.message);
    // Synchronous, before the grant it covers leaves (grantLocally returns it after this loop).
    else if (a.kind === 'log') this.sequencerLog?.append(a.record);
  }

  private send(to: string, message: JournalMessage): void {
    this.sentMessages++;
    for (const e of message.entries) this.sentDataBytes += e.data?.length ?? 0;
    const onAck = (ackUpTo: number): void => {
      const event = { kind: 'ack' as const, from: to, ackUpTo };
      if (message.role === 'sequencer') this.sequencer?.handle(event, this.deps.nowMs());
      else this.primary?.handle(event, this.deps.nowMs());
      this.pump();
    };
    if (to === this.deps.self) {
      this.receive(to, message).then(onAck, (e: unknown) => this.deps.onError(e, { journal: this.record.name, op: 'local message' }));
      return;
    }
    const segments: Segment[] = message.entries.map((e) => (e.data === null
      ? { kind: 'zero', offset: e.token.offset, length: e.token.length }
      : { kind: 'data', offset: e.token.offset, data: e.data }));
    const header: RequestOf<'journal.message'> = {
      op: 'journal.message', journal: this.record.name,
      message: {
        from: message.from, role: message.role, type: message.type, continuity: message.continuity,
        ...(message.incarnation === undefined ? {} : { incarnation: message.incarnation }), tokens: message.tokens, entries: message.entries.map((e) => e.token),
      },
    };
    this.deps.rpc.request(to, header, segments, 30_000).then((r) => onAck(r.header.ackUpTo), () => undefined);
  }

  // ---- the secondary queue ----

  /** A message reached this array's queue: durable before the returned acknowledgement. */
  async receive(peer: string, message: JournalMessage): Promise<number> {
    const s = this.secondary;
    if (!s) throw new TidemarkError(ErrorCode.NotFound, `journal ${this.record.name} has no secondary here`);
    if (message.from !== peer) throw new TidemarkError(ErrorCode.Protocol, `journal message from ${peer} claims to come from ${message.from}`);
    for (const e of message.entries) {
      if (e.token.secondary !== this.deps.self) continue;
      if (!this.pairs.has(e.token.pair)) throw new TidemarkError(ErrorCode.NotFound, `journal ${this.record.name} has no pair ${e.token.pair} here`);
    }
    s.handle({ kind: 'message', message }, this.deps.nowMs());
    const acks = await this.drainSecondary();
    const mine = acks.find((a) => a.to === peer && a.message.role === message.role);
    return mine?.message.ackUpTo ?? (s.durable.expected.get(streamKey(message)) ?? 1) - 1;
  }

  /** Runs the queue's actions in order (a persist finishes before what follows); returns the acks. */
  drainSecondary(): Promise<Array<Extract<SecondaryAction, { kind: 'send' }>>> {
    const s = this.secondary;
    if (!s) return Promise.resolve([]);
    const actions = s.poll(this.deps.nowMs());
    // Message records are written at once, in parallel with earlier ones (different keys); what
    // follows a persist — its acknowledgement above all — still waits for it and for every earlier one.
    const persisted = actions.map((a) => (a.kind === 'persist' ? this.queue.persist(a) : undefined));
    for (const p of persisted) p?.catch(() => undefined);
    const run = this.secondaryWork.then(async () => {
      const acks: Array<Extract<SecondaryAction, { kind: 'send' }>> = [];
      for (const [i, a] of actions.entries()) {
        if (a.kind === 'send') acks.push(a);
        else if (a.kind === 'persist') await persisted[i];
        else await this.secondaryAction(s, a);
      }
      return acks;
    });
    this.secondaryWork = run.catch((e: unknown) => this.deps.onError(e, { journal: this.record.name, op: 'secondary' }));
    return run;
  }

  private async secondaryAction(s: JournalSecondary, a: Exclude<SecondaryAction, { kind: 'send' }>): Promise<void> {
    switch (a.kind) {
      case 'persist':
        return this.queue.persist(a);
      case 'announce':
        for (const m of this.members) {
          if (m === this.deps.self) continue;
          this.deps.rpc.request(m, { op: 'journal.watermark', journal: this.record.name, completeUpTo: a.completeUpTo }, [], 5_000).catch(() => undefined);
        }
        return;
      case 'apply':
        // Outside the queue's chain: new messages keep being persisted and acknowledged meanwhile.
        void this.apply(a.entries).then(() => {
          if (this.secondary !== s) return;
          s.handle({ kind: 'applied', upTo: a.upTo }, this.deps.nowMs());
          void this.drainSecondary();
        }, (e: unknown) => this.deps.onError(e, { journal: this.record.name, op: 'apply', upTo: a.upTo }));
        return;
      case 'prune':
        return this.queue.applied(a.upTo, a.timeMs, s.durable.recoveredAt);
      default: {
        const never: never = a;
        throw new Error(`unknown secondary action ${JSON.stringify(never)}`);
      }
    }
  }

  /** Writes entries to the secondary volumes in sequence order, then makes them durable. */
  private async apply(entries: readonly DataEntry[]): Promise<void> {
    const touched = new Set<Volume>();
    for (const e of entries) {
      const pair = this.pairs.get(e.token.pair);
      if (!pair) throw new TidemarkError(ErrorCode.NotFound, `journal ${this.record.name}: no pair ${e.token.pair} for sequence ${e.token.sequence}`);
      const volume = this.deps.volume(pair.secondaryVolume);
      touched.add(volume);
      // One after another: overlapping entries must land in sequence order.
      if (e.data === null) await volume.internalZero(e.token.offset, e.token.length, { source: 'replica' });
      else await volume.internalWrite(e.token.offset, e.data, { source: 'replica' });
    }
    for (const v of touched) await v.internalFlush();
  }

  /** Recovery: apply up to the point, then the queue is over and the volumes belong to their hosts. */
  async recover(point: number): Promise<number> {
    const s = this.secondary;
    if (!s) throw new TidemarkError(ErrorCode.NotFound, `journal ${this.record.name} has no secondary here`);
    await this.secondaryWork;
    while (s.applyingUpTo !== undefined) await new Promise((r) => setTimeout(r, 5));
    for (const a of s.recover(point, this.deps.nowMs())) {
      if (a.kind !== 'apply') continue;
      await this.apply(a.entries);
      s.handle({ kind: 'applied', upTo: a.upTo }, this.deps.nowMs());
    }
    s.poll(this.deps.nowMs());
    await this.queue.applied(s.appliedUpTo, s.durable.appliedTimeMs, s.durable.recoveredAt);
    for (const p of this.pairs.values()) {
      if (p.role === 'secondary') await this.deps.volume(p.secondaryVolume).setState('ready');
    }
    return s.appliedUpTo;
  }
}
