// Ordered asynchronous replication of one pair (SPEC §5, `--mode async`): the pure cycle machines
// (src/core/replication/cycles) driven by the volume's write plan, timers, the peer RPC and the
// metadata store. R1 starts cycles only from a synchronized pair, inside a write window; before
// that, and after a fall-back, the pair's bitmaps carry the changes as in the other modes.
import { R1Cycles, type SpillRead, type WriteToken } from '../../core/replication/cycles/r1-cycles.js';
import { R2Cycles, type PersistedCycle, type R2Action } from '../../core/replication/cycles/r2-cycles.js';
import type { CycleRecord, R1Message, R2Message } from '../../core/replication/cycles/cycle-messages.js';
import { decodeMessage, encodeMessage, type Segment } from '../../core/replication/peer-messages.js';
import type { ByteRange } from '../../core/replication/cycles/record-ranges.js';
import { ErrorCode, TidemarkError, isTidemarkError } from '../../core/errors.js';
import { decodeJson, encodeJson } from '../../core/lib/checksummed-record.js';
import type { MetaStore } from '../../ports/meta-store.js';
import type { AppliedWrite, Volume } from '../volume/volume.js';
import { addHold, dropHold, findHold, type WriteHold } from '../volume/write-holds.js';
import type { MemberRecoveryInput, RecoveryAction } from '../../core/group/group-recovery.js';
import type { PeerRpc } from './peer-rpc.js';
import type { RequestOf } from '../../core/replication/peer-protocol.js';
import type { SpillStore } from '../../ports/spill-store.js';
import { CycleSpill } from './cycle-spill.js';
import { DEFAULT_CYCLE_MEMORY_BYTES, DEFAULT_SPILL_LIMIT_BYTES } from '../../core/replication/pair-record.js';

export const DEFAULT_CYCLE_MS = 1000;
export const MIN_CYCLE_MS = 100;
/** After a spill, memory is back to this share of the budget: spills come in batches, not per write. */
const SPILL_DOWN_TO = 0.75;
const RETRANSMIT_AFTER_MS = 2000;

// ---- messages on the link ----

/** A cycle message's metadata as it travels in a pair.cycle / pair.cycle-r2 header (schemas: core/replication/peer-protocol.ts). */
export type R1WireMessage = RequestOf<'pair.cycle'>['msg'];
export type R2WireMessage = RequestOf<'pair.cycle-r2'>['msg'];

/** A cycle message as an RPC header (metadata as JSON) and segments (record data). */
export function cycleMessageToWire(message: R1Message): { header: { msg: R1WireMessage }; segments: Segment[] };
export function cycleMessageToWire(message: R2Message): { header: { msg: R2WireMessage }; segments: Segment[] };
export function cycleMessageToWire(message: R1Message | R2Message): { header: { msg: R1WireMessage | R2WireMessage }; segments: Segment[] } {
  if (message.kind !== 'records') return { header: { msg: message }, segments: [] };
  const records = message.records.map((r) => ({ record: r.record, version: r.version, ranges: r.ranges }));
  return {
    header: { msg: { kind: 'records', cycle: message.cycle, records } },
    segments: message.records.map((r) => ({ kind: 'data', offset: r.record, data: r.data })),
  };
}

/** Joins a validated header's records to their data segments (the machines then validate the protocol). */
export function cycleMessageFromWire(msg: R1WireMessage, segments: readonly Segment[]): R1Message;
export function cycleMessageFromWire(msg: R2WireMessage, segments: readonly Segment[]): R2Message;
export function cycleMessageFromWire(msg: R1WireMessage | R2WireMessage, segments: readonly Segment[]): R1Message | R2Message {
  if (msg.kind !== 'records') return msg;
  const bad = (): TidemarkError => new TidemarkError(ErrorCode.Protocol, 'bad cycle message: one data segment per record');
  if (msg.records.length !== segments.length) throw bad();
  const records: CycleRecord[] = msg.records.map((r, i) => {
    const s = segments[i]!;
    if (s.kind !== 'data') throw bad();
    return { record: r.record, version: r.version, ranges: r.ranges, data: s.data.slice() };
  });
  return { kind: 'records', cycle: msg.cycle, records };
}

// ---- R1 ----

/** A write's place in one R1Async's cycles, from begin to finish (or abandon). */
interface CaptureHold extends WriteHold {
  readonly token: WriteToken;
  readonly first: number;
  readonly last: number;
  /** The other writes begun and not finished (R1Async.open). */
  prevOpen: CaptureHold | undefined;
  nextOpen: CaptureHold | undefined;
}

export interface R1AsyncHost {
  readonly volume: Volume;
  readonly rpc: PeerRpc;
  readonly peer: string;
  readonly pairId: string;
  readonly cycleMs: number;
  /** A consistency group member: its coordinator switches the cycles, starting at this tag. */
  readonly groupTag?: number;
  /** Record buffers kept in memory before spilling (default DEFAULT_CYCLE_MEMORY_BYTES). */
  readonly memoryBudgetBytes?: number;
  /** Bytes the cycles may spill before they fall back (default DEFAULT_SPILL_LIMIT_BYTES). */
  readonly spillLimitBytes?: number;
  /** Where cycles that outgrow memory spill; without one they fall back at the memory budget. */
  readonly spill?: SpillStore;
  nowMs(): number;
  /** The cycles fell back (over the capture limit): these tracks are owed through the bitmaps. */
  fellBack(tracks: readonly number[], reason: CyclesFallBackReason): void;
  /**
   * A cycle's commit is acknowledged (R2 holds it durably and will apply it): its tracks may clear
   * unless `busy` says a later cycle or a write still in progress holds them.
   */
  committed(tracks: ReadonlySet<number>, busy: (track: number) => boolean): void;
}

/**
 * Why R1's cycles gave up (their tracks went to the bitmaps): 'stopped' on purpose (mode change,
 * suspend, a resync); the others are the ones an operator needs to see.
 */
export type CyclesFallBackReason = 'stopped' | 'capture-limit' | 'spill-failed' | 'peer-stopped';

export class R1Async {
  readonly cycles: R1Cycles;
  /**
   * Writes begun and not finished, linked through their holds (a queue depth's worth, asked about
   * only when a cycle commits or the cycles fall back): no table updated per track of every write.
   */
  private open: CaptureHold | undefined;
  /** Tracks written per cycle, to clear R1's bits once R2 holds the cycle. */
  private readonly tracksOf = new Map<number, Set<number>>();
  private lastCommitAcked: number;
  private lastRetransmitMs = 0;
  stopped = false;

  constructor(private readonly host: R1AsyncHost, firstCycle: number) {
    const g = host.volume.geometry;
    this.memoryBudgetBytes = host.memoryBudgetBytes ?? DEFAULT_CYCLE_MEMORY_BYTES;
    this.spillLimitBytes = host.spill ? host.spillLimitBytes ?? DEFAULT_SPILL_LIMIT_BYTES : 0;
    this.spill = this.spillLimitBytes > 0 ? new CycleSpill(host.spill!, host.pairId, g.recordBytes, () => this.fallBack('spill-failed'),
      (buffers) => { if (!this.stopped) this.cycles.recycle(buffers); }) : undefined;
    // Records sent and being read back stay in memory: a share of the budget, so a spill frees some.
    const inflight = Math.max(16, Math.min(1024, Math.floor(this.memoryBudgetBytes / g.recordBytes / 4)));
    this.cycles = new R1Cycles({
      volumeBytes: g.sizeBytes, trackBytes: g.trackBytes, recordBytes: g.recordBytes, cycleMs: host.cycleMs,
      mode: host.groupTag === undefined ? 'standalone' : 'group',
      memoryBudgetBytes: this.memoryBudgetBytes, captureLimitBytes: this.memoryBudgetBytes + this.spillLimitBytes,
      maxBatchRecords: 64, maxInflightRecords: inflight,
    }, { cycle: firstCycle, nowMs: host.nowMs(), ...(host.groupTag === undefined ? {} : { tag: host.groupTag }) });
    this.lastCommitAcked = firstCycle - 1;
    if (host.groupTag !== undefined) this.groupFromCycle = firstCycle;
    this.cycleStartMs.set(firstCycle, host.nowMs());
  }

  /** When each cycle began capturing: R2's image is as old as the first cycle it does not hold. */
  private readonly cycleStartMs = new Map<number, number>();

  /** Seconds R2's image is behind R1 (0 when R2 holds every write). */
  lagSeconds(nowMs: number): number {
    const st = this.cycles.stats();
    const holds = (c: { records: number; openWrites: number } | null): boolean => c !== null && (c.records > 0 || c.openWrites > 0);
    const behind = holds(st.capture) || holds(st.transmit) || holds(st.committing);
    if (!behind) return 0;
    const since = this.cycleStartMs.get(this.lastCommitAcked + 1);
    return since === undefined ? 0 : Math.max(0, (nowMs - since) / 1000);
  }

  get appliedCycle(): number {
    return this.lastCommitAcked;
  }

  /** At admission: the write belongs to the cycle open now (returned). */
  begin(write: AppliedWrite, offset: number, length: number): number {
    const token = this.cycles.writeBegun();
    const first = this.trackOf(offset);
    const last = this.trackOf(offset + length - 1);
    // Kept on the write until finish or abandon (a write begun here and not finished holds it).
    const hold: CaptureHold = { owner: this, next: undefined, token, first, last, prevOpen: undefined, nextOpen: this.open };
    addHold(write, hold);
    if (this.open) this.open.prevOpen = hold;
    this.open = hold;
    return token.cycle;
  }

  /** A write in progress or a cycle not yet committed holds the track. */
  holds(track: number): boolean {
    if (this.writing(track)) return true;
    for (const set of this.tracksOf.values()) if (set.has(track)) return true;
    return false;
  }

  /** A write begun and not finished covers the track. */
  private writing(track: number): boolean {
    for (let h = this.open; h !== undefined; h = h.nextOpen) if (h.first <= track && track <= h.last) return true;
    return false;
  }

  owns(write: AppliedWrite): boolean {
    return findHold(write, this) !== undefined;
  }

  private trackOf(offset: number): number {
    return Math.floor(offset / this.host.volume.geometry.trackBytes);
  }

  /** After the local write: (part of) its bytes are captured; false when the cycles fell back. */
  capture(write: AppliedWrite, offset: number, length: number, data: Uint8Array | null): boolean {
    const held = findHold<CaptureHold>(write, this);
    if (!held || this.stopped) return false;
    const kept = this.cycles.write(held.token, offset, length, data);
    if (kept) {
      let set = this.tracksOf.get(held.token.cycle);
      if (!set) this.tracksOf.set(held.token.cycle, set = new Set());
      for (let t = this.trackOf(offset); t <= this.trackOf(offset + length - 1); t++) set.add(t);
    }
    if (kept && this.spill && this.cycles.overBudget) this.spillNow();
    if (!kept || this.cycles.overLimit || this.spilledBytes > this.spillLimitBytes) this.fallBack('capture-limit');
    return kept;
  }

  /** The write is complete (captured, or its local write failed). */
  finish(write: AppliedWrite): void {
    const held = findHold<CaptureHold>(write, this);
    if (!held) return;
    dropHold(write, held);
    if (!this.stopped) this.cycles.writeDone(held.token);
    if (held.prevOpen) held.prevOpen.nextOpen = held.nextOpen;
    else this.open = held.nextOpen;
    if (held.nextOpen) held.nextOpen.prevOpen = held.prevOpen;
    held.prevOpen = held.nextOpen = undefined;
  }

  abandon(write: AppliedWrite): void {
    this.finish(write);
  }

  /** The pair leaves async mode or stops replicating: the cycles' data is owed through the bitmaps. */
  fallBackNow(): void {
    this.fallBack('stopped');
  }

  private fallBack(reason: CyclesFallBackReason): void {
    if (this.stopped) return;
    this.stopped = true;
    const { tracks } = this.cycles.fallBackToBitmaps();
    void this.spill?.close();
    const all = new Set<number>(tracks);
    for (const set of this.tracksOf.values()) for (const t of set) all.add(t);
    for (let h = this.open; h !== undefined; h = h.nextOpen) for (let t = h.first; t <= h.last; t++) all.add(t);
    this.host.fellBack([...all], reason);
  }

  /** The first cycle tagged by the group's coordinator (null: not in a group). */
  get groupFrom(): number | null {
    return this.groupFromCycle;
  }

  private groupFromCycle: number | null = null;

  /** The pair joined a group mid-stream (no group window is open); returns the first group-tagged cycle. */
  enterGroup(tag: number): number {
    this.groupFromCycle = this.cycles.enterGroup(tag);
    return this.groupFromCycle;
  }

  leaveGroup(): void {
    this.groupFromCycle = null;
    this.cycles.leaveGroup();
  }

  /** Group member: the coordinator's switch (inside the member's write window). Idempotent per tag. */
  switchTo(tag: number): void {
    if (this.stopped) throw new TidemarkError(ErrorCode.InvalidState, 'the cycles fell back to bitmaps');
    if (this.cycles.captureTag >= tag) return;
    const now = this.host.nowMs();
    const switched = this.cycles.switchCycle(now, tag);
    this.cycleStartMs.set(switched.captureCycle, now);
    this.pump();
  }

  /** Switches when allowed (standalone) and sends what is due; called by a timer and after every answer. */
  pump(): void {
    if (this.stopped) return;
    const now = this.host.nowMs();
    if (this.cycles.switchMode === 'standalone' && this.cycles.canSwitch(now)) {
      const switched = this.cycles.switchCycle(now);
      this.cycleStartMs.set(switched.captureCycle, now);
    }
    if (now - this.lastRetransmitMs >= RETRANSMIT_AFTER_MS) {
      this.lastRetransmitMs = now;
      this.cycles.retransmit(now, RETRANSMIT_AFTER_MS);
    }
    if (!this.host.rpc.isUp(this.host.peer)) return;
    const { messages, spillReads } = this.cycles.nextToSend(now);
    this.restore(spillReads);
    for (const message of messages) {
      const { header, segments } = cycleMessageToWire(message);
      // One-way: R2 answers with messages of its own; a lost one is sent again by retransmit().
      this.host.rpc.request(this.host.peer, { op: 'pair.cycle', pair: this.host.pairId, ...header }, segments, 30_000)
        .catch((error: unknown) => {
          // R2 runs no cycles (they were stopped there): carry on through the bitmaps, restart later.
          if (isTidemarkError(error, ErrorCode.InvalidState)) this.fallBack('peer-stopped');
        });
    }
  }

  receive(message: R2Message): void {
    if (this.stopped) return;
    this.cycles.receive(message);
    this.spill?.release(this.cycles.takeReleasedSpill());
    if (message.kind === 'commit-ack' && message.cycle > this.lastCommitAcked) {
      this.lastCommitAcked = message.cycle;
      const done = this.tracksOf.get(message.cycle) ?? new Set<number>();
      this.tracksOf.delete(message.cycle);
      const later = new Set<number>();
      for (const [c, set] of this.tracksOf) if (c > message.cycle) for (const t of set) later.add(t);
      for (const c of [...this.tracksOf.keys()]) if (c < message.cycle) this.tracksOf.delete(c);
      for (const c of [...this.cycleStartMs.keys()]) if (c <= message.cycle) this.cycleStartMs.delete(c);
      this.host.committed(done, (t) => later.has(t) || this.writing(t));
    }
    this.pump();
  }

  // ---- spill: cycles that outgrow memory go to disk, up to spillLimitBytes ----

  readonly memoryBudgetBytes: number;
  /** 0: this pair does not spill (no store, or the limit is 0); it falls back at the memory budget. */
  readonly spillLimitBytes: number;
  private readonly spill: CycleSpill | undefined;

  /** Cycle data in memory: the record buffers, plus spilled bytes not yet written. */
  /**
   * Before a host write is admitted: when the spill disk falls behind the host (its queue holds
   * more than the memory budget), the write waits until the queue is down to half of it — the
   * budget holds without the pair falling back. Undefined: go ahead.
   */
  admission(): Promise<void> | undefined {
    if (!this.spill || this.stopped || this.spill.queuedBytes <= this.memoryBudgetBytes) return undefined;
    return this.spill.drained(this.memoryBudgetBytes / 2);
  }

  get memoryBytes(): number {
    return this.cycles.memoryBytes + (this.spill?.queuedBytes ?? 0);
  }

  /** Record slots on disk (a record partly written takes a whole slot). */
  get spilledBytes(): number {
    return this.cycles.spilledRecords * this.host.volume.geometry.recordBytes;
  }

  private spillNow(): void {
    const excess = this.cycles.memoryBytes - Math.floor(this.memoryBudgetBytes * SPILL_DOWN_TO);
    this.spill!.write(this.cycles.takeSpill(excess));
  }

  /** Spilled records of the transmit cycle are read back, then sent (pump). */
  private restore(reads: readonly SpillRead[]): void {
    if (reads.length === 0) return;
    void this.spill!.read(reads).then((slots) => {
      if (!slots || this.stopped) return;
      for (let i = 0; i < reads.length; i++) this.cycles.spillRestored(reads[i]!, slots[i]!);
      this.pump();
    });
  }
}

// ---- R2 ----

const cycleKey = (pairId: string, cycle: number): string => `cycles/${pairId}/${String(cycle).padStart(16, '0')}`;
const appliedKey = (pairId: string): string => `cycles/${pairId}/applied`;
/** A commit is a small marker beside the cycle: the cycle itself is not written again. */
const COMMIT_SUFFIX = '.committed';
const commitKey = (pairId: string, cycle: number): string => `${cycleKey(pairId, cycle)}${COMMIT_SUFFIX}`;

/** R2's image is R1's at the end of `appliedCycle`; cycles from `groupFrom` on carry a group's tags. */
interface AppliedRecord {
  readonly appliedCycle: number;
  readonly appliedTag: number | null;
  readonly groupFrom?: number | null;
}

const writeApplied = (host: Pick<R2AsyncHost, 'meta' | 'pairId'>, record: AppliedRecord): Promise<void> =>
  host.meta.write(appliedKey(host.pairId), encodeJson(record));

export interface R2AsyncHost {
  readonly volume: Volume;
  readonly meta: MetaStore;
  readonly rpc: PeerRpc;
  readonly peer: string;
  readonly pairId: string;
  /** Position the applied writes must not mark (R2's own changes). */
  readonly ownPosition: string;
  onError(error: unknown): void;
}

/** R2's cycle state, kept in the metadata store so a crash mid-apply re-applies the cycle. */
export class R2Async {
  private readonly persisted = new Map<number, PersistedCycle>();
  private busy: Promise<void> = Promise.resolve();
  stopped = false;
  /** A group recovery is deciding: R1's messages are ignored so the state it reads stays put. */
  private frozen = false;
  /** A cycle is being written to the volume: R2's image is between two boundaries. */
  applying = false;

  private constructor(
    private readonly host: R2AsyncHost,
    readonly cycles: R2Cycles,
    /** The first cycle tagged by a consistency group's coordinator (null: not a group member). */
    private groupFromCycle: number | null,
  ) {}

  /** A fresh start at R1's first cycle: whatever earlier cycles left is dropped. */
  static async start(host: R2AsyncHost, firstCycle: number, groupFrom: number | null = null): Promise<R2Async> {
    await R2Async.dropAll(host);
    await writeApplied(host, { appliedCycle: firstCycle - 1, appliedTag: null, groupFrom });
    const g = host.volume.geometry;
    return new R2Async(host, new R2Cycles({ volumeBytes: g.sizeBytes, recordBytes: g.recordBytes }, { appliedCycle: firstCycle - 1, appliedTag: null }), groupFrom);
  }

  /** After a restart: undefined when the pair never ran cycles. */
  static async recover(host: R2AsyncHost): Promise<R2Async | undefined> {
    const appliedBytes = await host.meta.read(appliedKey(host.pairId));
    if (!appliedBytes) return undefined;
    const applied = decodeJson(appliedBytes, appliedKey(host.pairId)) as AppliedRecord;
    const cycles: PersistedCycle[] = [];
    const keys = await host.meta.list(`cycles/${host.pairId}/`);
    const markers = new Set(keys.filter((k) => k.endsWith(COMMIT_SUFFIX)));
    for (const marker of markers) {
      // Left by a crash after the cycle was applied (or discarded) and before the marker went.
      if (!keys.includes(marker.slice(0, -COMMIT_SUFFIX.length))) await host.meta.delete(marker);
    }
    for (const key of keys) {
      if (key === appliedKey(host.pairId) || markers.has(key)) continue;
      const bytes = await host.meta.read(key);
      if (!bytes) continue;
      const m = decodeMessage(bytes);
      const h = m.header as { cycle: number; tag: number; complete: boolean; committed: boolean; records: Array<{ record: number; version: number; ranges: ByteRange[] }> };
      // Applied already (the crash came between the applied marker and the clean-up).
      if (h.cycle <= applied.appliedCycle) {
        await host.meta.delete(key);
        if (markers.has(commitKey(host.pairId, h.cycle))) await host.meta.delete(commitKey(host.pairId, h.cycle));
        continue;
      }
      cycles.push({
        cycle: h.cycle, tag: h.tag, complete: h.complete, committed: h.committed || markers.has(commitKey(host.pairId, h.cycle)),
        records: h.records.map((r, i) => ({ ...r, data: (m.segments[i] as Extract<Segment, { kind: 'data' }>).data.slice() })),
      });
    }
    const g = host.volume.geometry;
    const r2 = new R2Async(host, R2Cycles.recover({ volumeBytes: g.sizeBytes, recordBytes: g.recordBytes },
      { appliedCycle: applied.appliedCycle, appliedTag: applied.appliedTag, cycles }), applied.groupFrom ?? null);
    for (const c of cycles) r2.persisted.set(c.cycle, c);
    r2.drain();
    return r2;
  }

  static async dropAll(host: Pick<R2AsyncHost, 'meta' | 'pairId'>): Promise<void> {
    for (const key of await host.meta.list(`cycles/${host.pairId}/`)) await host.meta.delete(key);
  }

  get appliedCycle(): number {
    return this.cycles.appliedCycle;
  }

  /** A committed cycle is not applied yet (it must be, before R2 takes anything else). */
  get committedPending(): boolean {
    return [...this.persisted.values()].some((c) => c.committed);
  }

  /** Stops taking messages and waits for the action in progress. */
  async halt(): Promise<void> {
    this.stopped = true;
    await this.busy;
  }

  handle(message: R1Message): void {
    if (this.stopped || this.frozen) return;
    this.cycles.handle(message);
    this.drain();
  }

  /** Performs the machine's actions one after another (persistence and applies are ordered). */
  private drain(): void {
    const actions = this.cycles.poll();
    if (actions.length === 0) return;
    this.busy = this.busy.then(async () => {
      for (const action of actions) {
        if (this.stopped) return;
        await this.perform(action);
      }
    }).catch((error: unknown) => this.host.onError(error));
  }

  private async perform(action: R2Action): Promise<void> {
    const { host } = this;
    switch (action.kind) {
      case 'send': {
        const { header, segments } = cycleMessageToWire(action.message);
        host.rpc.request(host.peer, { op: 'pair.cycle-r2', pair: host.pairId, ...header }, segments, 30_000).catch(() => undefined);
        return;
      }
      case 'persist-cycle': {
        const cycle: PersistedCycle = { cycle: action.cycle, tag: action.tag, complete: true, committed: false, records: action.records };
        await this.write(cycle);
        this.cycles.cyclePersisted(action.cycle);
        break;
      }
      case 'persist-commit': {
        const cycle = this.persisted.get(action.cycle);
        if (cycle) {
          this.persisted.set(action.cycle, { ...cycle, committed: true });
          await host.meta.write(commitKey(host.pairId, action.cycle), new Uint8Array(0));
        }
        this.cycles.commitPersisted(action.cycle);
        break;
      }
      case 'apply': {
        const options = { source: 'replica' as const, skipPosition: host.ownPosition };
        this.applying = true;
        await Promise.all(action.records.flatMap((r) => r.ranges.map((range) =>
          host.volume.internalWrite(r.record * host.volume.geometry.recordBytes + range.start, r.data.slice(range.start, range.end), options))));
        await host.volume.internalFlush();
        await writeApplied(host, { appliedCycle: action.cycle, appliedTag: action.tag, groupFrom: this.groupFromCycle });
        await host.meta.delete(cycleKey(host.pairId, action.cycle));
        await host.meta.delete(commitKey(host.pairId, action.cycle));
        this.persisted.delete(action.cycle);
        this.applying = false;
        this.cycles.applyDone(action.cycle);
        break;
      }
      case 'discard': {
        await host.meta.delete(cycleKey(host.pairId, action.cycle));
        await host.meta.delete(commitKey(host.pairId, action.cycle));
        this.persisted.delete(action.cycle);
        break;
      }
    }
    this.drain();
  }

  // ---- consistency groups ----

  /** R1 joined (or left: null) a group: cycles from `cycle` on carry the coordinator's tags. */
  setGroupFrom(cycle: number | null): Promise<void> {
    this.groupFromCycle = cycle;
    // Through the action chain: an apply writes the same record and must not write an older value after it.
    const done = this.busy.then(() => writeApplied(this.host,
      { appliedCycle: this.cycles.appliedCycle, appliedTag: this.cycles.appliedTag, groupFrom: this.groupFromCycle }));
    this.busy = done.catch((error: unknown) => this.host.onError(error));
    return done;
  }

  /** Group recovery, step 1: stop taking R1's messages and finish what is in progress. */
  async freeze(): Promise<void> {
    this.frozen = true;
    await this.settle();
  }

  unfreeze(): void {
    this.frozen = false;
  }

  /** What the group decision needs; cycles before the member joined carry no group tag. */
  groupRecoveryInput(member: string): MemberRecoveryInput {
    const s = this.cycles.recoveryState();
    const from = this.groupFromCycle;
    const grouped = (cycle: number): boolean => from !== null && cycle >= from;
    const r = s.received;
    return {
      member,
      committedTag: grouped(s.committedCycle) ? s.committedTag : null,
      received: r === null ? null : grouped(r.cycle) && r.complete ? { tag: r.tag, complete: true } : { tag: r.tag !== null && grouped(r.cycle) ? r.tag : null, complete: false },
    };
  }

  /** Group recovery, step 2: apply or discard the complete received cycle, finish applying, take nothing more from R1. */
  async resolveForGroup(action: RecoveryAction): Promise<void> {
    this.cycles.resolveAfterDisaster(action);
    this.drain();
    await this.settle();
  }

  private async settle(): Promise<void> {
    for (;;) {
      const b = this.busy;
      await b;
      if (b === this.busy) return;
    }
  }

  private async write(cycle: PersistedCycle): Promise<void> {
    this.persisted.set(cycle.cycle, cycle);
    const header = {
      cycle: cycle.cycle, tag: cycle.tag, complete: cycle.complete, committed: cycle.committed,
      records: cycle.records.map((r) => ({ record: r.record, version: r.version, ranges: r.ranges })),
    };
    const segments: Segment[] = cycle.records.map((r) => ({ kind: 'data', offset: r.record, data: r.data }));
    await this.host.meta.write(cycleKey(this.host.pairId, cycle.cycle), encodeMessage({ type: 'request', id: 0, header, segments }));
  }
}

