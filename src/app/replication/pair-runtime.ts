// One pair half in memory: its record, its bitmaps, and on R1 the write path to the remote mirror
// (sync/semi-sync forwarding, adaptive marking), the background push of owed tracks (establish,
// resync, adaptive copy) and the pull of R2's image (failback, restore).
import { TrackBitmap } from '../../core/bitmap/track-bitmap.js';
import { ErrorCode, TidemarkError } from '../../core/errors.js';
import { OwedTracks, type RecordSelection } from '../../core/replication/owed-tracks.js';
import { CleanRound, DEFAULT_CLEAN_ROUND, type CleanRoundConfig } from '../../core/replication/clean-round.js';
import type { PairRecord } from '../../core/replication/pair-record.js';
import { pairState, volumeStateFor, type PairState } from '../../core/replication/pair-rules.js';
import { clipToExtents, extentTracks } from '../../core/replication/pair-extents.js';
import type { Segment } from '../../core/replication/peer-messages.js';
import { PairLifecycle, type LifecycleRecord, type PairFacts } from '../../core/replication/pair-lifecycle.js';
import { trackRange, tracksOf, tracksRange } from '../../core/volume/geometry.js';
import type { PlanPosition, PlanStep } from '../../core/volume/write-plan.js';
import type { AppliedWrite, Volume } from '../volume/volume.js';
import type { PeerRpc } from './peer-rpc.js';
import { DIGEST_BYTES, digestEqual, isAllZero, recordDigests } from './record-digests.js';
import { holeTracks } from './hole-tracks.js';
import type { R1Async, R2Async } from './async-cycles.js';
import type { CyclesFallbackView as CyclesFallback } from '../../adapters/http/replication-routes.js';

export const positionIds = (pairId: string): { out: string; own: string; pull: string } => ({
  out: `pair:${pairId}:out`, own: `pair:${pairId}:own`, pull: `pair:${pairId}:pull`,
});

/** Tracks per background batch, and batches in flight at once: ~4 MiB of 64 KiB tracks on the wire. */
const BATCH_TRACKS = 16;
const BATCHES_IN_FLIGHT = 4;
/**
 * A push over at least this many owed tracks first takes the runs of holes both halves hold (see
 * takeHoleRuns), this many tracks per request to R2: 16 MiB of reads there when R2 holds data
 * where R1 has a hole, an unusual case for an initial copy.
 */
const HOLE_RUN_TRACKS = 256;
/** Forwarded writes sent as one message at most: bounded so one message never waits on a huge one. */
const FORWARD_BATCH_SEGMENTS = 64;
const FORWARD_BATCH_BYTES = 1024 * 1024;

export interface PairTimeouts {
  /** How long a forwarded host write waits for R2 before the pair counts the link as failed. */
  readonly writeAckMs: number;
  readonly copyAckMs: number;
  /** When R1 makes R2 durable on its own and clears the bits (default: DEFAULT_CLEAN_ROUND). */
  readonly cleanRound?: CleanRoundConfig;
  /** Tracks per run of holes a push takes first, and the owed tracks it needs to (default HOLE_RUN_TRACKS). */
  readonly holeRunTracks?: number;
}

export const DEFAULT_PAIR_TIMEOUTS: PairTimeouts = { writeAckMs: 10_000, copyAckMs: 30_000 };

export interface PairCounters {
  /** Host writes forwarded synchronously / semi-synchronously and acknowledged by R2. */
  writesForwarded: number;
  /** Records and bytes shipped by the background copy (establish, resync, adaptive). */
  recordsShipped: number;
  bytesShipped: number;
  /** Zeroed ranges sent as markers instead of bytes. */
  zeroMarkers: number;
  /** Records not shipped because R2 already held identical data. */
  recordsIdentical: number;
  tracksCopied: number;
  /**
   * Tracks the background push compared with R2's copy record by record (R2's digests), because
   * which records changed was unknown: after R1 restarted (crash: its persisted bits plus the
   * activity log's hot extents), an establish, a lost link session. What a resync examined.
   */
  tracksCompared: number;
  /** Flush rounds R1 started on its own to make R2 durable and clear the bits (see clean-round.ts). */
  flushRounds: number;
  /** R2 → R1 (failback, restore). */
  recordsPulled: number;
  bytesPulled: number;
  /** async: times the cycles fell back to bitmaps on their own (limit reached, spill failed, R2 stopped). */
  cycleFallbacks: number;
}

export class PairRuntime {
  /** R1: tracks R2 may lack (persisted). R2: tracks R2's own hosts changed (persisted). */
  readonly bits: TrackBitmap;
  /** R1: what the background push still has to ship. */
  readonly owed: OwedTracks;
  /** R1 while restoring: tracks still to pull from R2 (persisted). */
  pull: TrackBitmap | undefined;
  private readonly syncInFlight = new Map<number, number>();
  /** Tracks taken by the background push and not yet acknowledged by R2. */
  private readonly pushInFlight = new Set<number>();
  /** R1: tracks whose bit was cleared because R2 acknowledged, before R2 made that data durable. */
  private readonly clearedNotDurable: TrackBitmap;
  /** Async: tracks of cycles R2 committed (durable there), to clear once R1's copy is durable. */
  private readonly committedClears: TrackBitmap;
  /** Failback/restore: tracks pulled from R2, to clear (pull and bits) once R1 made them durable. */
  private readonly pulledClears: TrackBitmap;
  /** The tracks of the pair's extents; undefined when the whole volume replicates. */
  readonly scope: TrackBitmap | undefined;
  private semiPrevious: Promise<void> = Promise.resolve();
  private forwardBatch: { segments: Segment[]; bytes: number; fua: boolean; done: Promise<void> } | undefined;
  private pushing = false;
  private pulling = false;
  /** R2's invalid-track count as last reported (for show). */
  remoteTracks: number | undefined;
  /** Async: R2's applied cycle as last reported. */
  remoteAppliedCycle: number | undefined;
  /** Async: R2's recoverable point (last committed cycle) as last reported. */
  remoteRecoverableCycle: number | undefined;
  lastError: string | undefined;
  readonly counters: PairCounters = {
    writesForwarded: 0, recordsShipped: 0, bytesShipped: 0, zeroMarkers: 0, recordsIdentical: 0, tracksCopied: 0, tracksCompared: 0,
    flushRounds: 0, recordsPulled: 0, bytesPulled: 0, cycleFallbacks: 0,
  };
  /** Set when the pair is torn down or its role changes (retire()): loops stop and the write plan skips it. */
  retired = false;
  /** Async mode: the ordered cycles, once started from a synchronized pair. */
  asyncR1: R1Async | undefined;
  /** Async: the cycles' last unplanned fall back (shown until they run again). */
  cyclesFallback: CyclesFallback | undefined;
  /** R2 in async mode: the cycles it receives and applies. */
  asyncR2: R2Async | undefined;
  /** R2: a graceful stop of its cycles in progress (apply what was committed, drop the rest). */
  stoppingR2: Promise<void> | undefined;
  /**
   * R1 in a consistency group: the coordinator switches its cycles. `tag` is the group's capture tag
   * as last heard from the coordinator; unknown after a restart until it asks again, and cycles do
   * not start before (they must begin with the group's current tag).
   */
  group: { readonly name: string; tag: number | undefined } | undefined;

  /** The first cycle of the next start (cycle numbers never repeat within a process). */
  get nextCycle(): number {
    return (this.asyncR1?.cycles.captureCycle ?? this.lastCycle) + 1;
  }

  private lastCycle = 0;
  /** Grows when the peer's link session ends for good (it restarted). */
  private sessionEpoch = 0;
  /** When to run a flush round (bits of shipped tracks clear only in one). */
  private readonly cleaner: CleanRound;
  private cleaning = false;

  get hasUndurableClears(): boolean {
    return !this.clearedNotDurable.isEmpty();
  }

  /** Tracks the background copy still has to ship or has in flight (a cascade asks: is R2 being resynced?). */
  get backgroundTracks(): number {
    return this.owed.count + this.pushInFlight.size;
  }

  /** Nothing owed, shipped or forwarded and not yet acknowledged: R2 equals R1 now. */
  get quiet(): boolean {
    return this.owed.count === 0 && this.syncInFlight.size === 0 && this.pushInFlight.size === 0 && !this.pushing;
  }
  /** What the half should do next (reconcile, protection, cycle start): decided in the core. */
  readonly lifecycle: PairLifecycle;

  /** A resync waits until R2's protection clone is split (nothing is shipped meanwhile). */
  get needsProtection(): boolean {
    return this.lifecycle.needsProtection;
  }

  get peerMissing(): boolean {
    return this.lifecycle.peerMissing;
  }

  /** What the lifecycle needs to know of the write path now. */
  facts(): PairFacts {
    return {
      quiet: this.quiet, owedTracks: this.owed.count, capturing: this.capturing,
      groupReady: this.group === undefined || this.group.tag !== undefined,
    };
  }

  /** R2 acknowledged everything R1 has, if nothing is owed or in flight (see PairLifecycle). */
  noteR2WholeIfQuiet(): void {
    this.lifecycle.handle({ type: 'r2-whole', facts: this.facts() }, this.nowMs());
  }

  private current: PairRecord;

  get record(): PairRecord {
    return this.current;
  }

  set record(record: PairRecord) {
    this.current = record;
    this.lifecycle.handle({ type: 'record', record: lifecycleRecord(record) }, this.nowMs());
  }

  /** Torn down or replaced: loops and the write path leave it alone from now on. */
  retire(): void {
    this.retired = true;
    this.lifecycle.handle({ type: 'retire' }, this.nowMs());
  }

  constructor(
    record: PairRecord,
    readonly volume: Volume,
    private readonly rpc: PeerRpc,
    private readonly timeouts: PairTimeouts,
    private readonly nowMs: () => number,
    /** Made in an exchange with the peer just now (create, swap): no reconcile needed first. */
    live: boolean,
  ) {
    this.current = record;
    this.lifecycle = new PairLifecycle(lifecycleRecord(record), { linkUp: rpc.isUp(record.peer), live });
    const ids = positionIds(record.id);
    const trackCount = volume.geometry.trackCount;
    const mine = record.role === 'R1' ? ids.out : ids.own;
    const existing = volume.findPosition(mine);
    if (existing) {
      this.bits = existing.invalid;
    } else {
      // No bitmap for a pair the record names (first start after create, or lost): assume every track.
      this.bits = record.role === 'R1' ? TrackBitmap.full(trackCount) : new TrackBitmap(trackCount);
      volume.addPosition({
        id: mine, kind: record.role === 'R1' ? 'remote-out' : 'remote-own', marksOn: record.role === 'R1' ? 'all' : 'host', invalid: this.bits,
      });
    }
    const pullPosition = volume.findPosition(ids.pull);
    if (pullPosition) this.pull = pullPosition.invalid;
    if (record.extents !== null) {
      // Only the extents replicate: the pair's bitmaps never mark, nor keep, tracks outside them.
      this.scope = extentTracks(record.extents, volume.geometry);
      for (const id of [mine, ids.pull]) {
        const p = volume.findPosition(id);
        if (!p) continue;
        p.scope = this.scope;
        p.invalid.and(this.scope);
      }
    }
    this.owed = new OwedTracks(volume.geometry, record.role === 'R1' ? this.bits : new TrackBitmap(trackCount), nowMs());
    this.clearedNotDurable = new TrackBitmap(trackCount);
    this.committedClears = new TrackBitmap(trackCount);
    this.pulledClears = new TrackBitmap(trackCount);
    this.cleaner = new CleanRound(timeouts.cleanRound ?? DEFAULT_CLEAN_ROUND);
  }

  /** `ids` as last built, with the pair id they were built for. */
  private idsOf: { readonly pairId: string; readonly ids: { out: string; own: string; pull: string } } | undefined;

  /** The volume positions' ids of this pair (built once per pair id: planPosition runs for every write). */
  get ids(): { out: string; own: string; pull: string } {
    if (this.idsOf?.pairId !== this.record.id) this.idsOf = { pairId: this.record.id, ids: positionIds(this.record.id) };
    return this.idsOf.ids;
  }

  get linkUp(): boolean {
    return this.rpc.isUp(this.record.peer);
  }

  /** The cycles fell back or the mode changed: what they held becomes owed through the bitmaps. */
  stopAsync(): void {
    if (this.asyncR1) this.lastCycle = this.asyncR1.cycles.captureCycle;
    this.asyncR1?.fallBackNow();
    this.asyncR1 = undefined;
  }

  /** Called by the cycles: their tracks are owed again (the bitmaps take over). */
  cyclesFellBack(tracks: readonly number[]): void {
    for (const t of tracks) {
      this.bits.set(t);
      this.owed.markWhole(t, t, this.nowMs());
    }
  }

  /**
   * Cycle committed at R2 (persisted there): its tracks may clear at the next persist, once R1's own
   * copy is durable too, unless a later cycle or write holds them then.
   */
  cyclesCommitted(tracks: ReadonlySet<number>, busy: (track: number) => boolean): void {
    let any = false;
    for (const t of tracks) {
      if (busy(t)) continue;
      this.committedClears.set(t);
      any = true;
    }
    if (any) this.noteUnflushed(0);
  }

  state(): PairState {
    const owedTracks = this.record.intent === 'restoring' ? (this.pull?.count() ?? 0) : this.owed.count + this.syncInFlight.size + this.pushInFlight.size;
    return pairState(this.record, { linkUp: this.linkUp && !this.peerMissing, tracksOwed: owedTracks });
  }

  /** Bytes R1 still owes R2: known dirty records, whole tracks where which records changed is unknown. */
  bytesOwed(): number {
    return this.owed.count * this.volume.geometry.trackBytes;
  }

  lagSeconds(): number {
    if (this.capturing) return this.asyncR1!.lagSeconds(this.nowMs());
    const oldest = this.owed.oldestAtMs();
    return oldest === undefined ? 0 : Math.max(0, (this.nowMs() - oldest) / 1000);
  }

  private get replicatingNow(): boolean {
    return this.lifecycle.mayShip;
  }

  // ---- R1 host write path ----

  /**
   * This half as a position of its volume's write plan (core/volume/write-plan.ts decides what a
   * write does here; the methods below carry out its steps). An R2 replicating some extents refuses
   * host writes into them (the rest of the volume is its hosts'); an R1 set to fail writes it
   * cannot replicate refuses them while it cannot.
   */
  planPosition(): PlanPosition {
    const r = this.record;
    if (r.role === 'R2') {
      return {
        kind: 'pair-r2', id: r.name, peer: r.peer, volume: r.localVolume,
        refused: this.scope && volumeStateFor('R2', r.intent) === 'write-disabled' ? this.scope : undefined,
      };
    }
    return {
      kind: 'pair-r1', id: r.name, peer: r.peer, outPosition: this.ids.out, mode: r.mode, replicating: r.intent === 'replicating',
      failWrites: r.onLinkFailure === 'fail-writes', linkUp: this.linkUp && !this.peerMissing, canShip: this.replicatingNow,
      capturing: this.capturing, scope: this.scope, live: !this.retired,
    };
  }

  /** Carries out a step of the write plan made for this half. */
  execute(step: PlanStep, write: AppliedWrite | undefined): Promise<void> | undefined {
    if (step.kind === 'wait-admission') return this.capturing ? this.asyncR1!.admission() : undefined;
    if (step.kind === 'flush-mirror') return this.afterHostFlush();
    // The half may have been torn down, or its role changed, since the plan was made.
    if (this.record.role !== 'R1' || this.retired || !write) return undefined;
    switch (step.kind) {
      case 'begin-capture':
        // Async: the write belongs to the cycle open at its admission; its bytes are captured after it.
        this.asyncR1?.begin(write, write.offset, write.length);
        return undefined;
      case 'ship':
        return this.ship(write, step.mode);
      case 'owe':
        this.markOwed(write);
        return undefined;
      case 'fail':
        return Promise.reject(step.error);
      case 'capture':
        this.capture(write);
        return undefined;
      case 'owe-whole':
        this.localWriteFailed(write);
        return undefined;
      default:
        throw new Error(`a pair does not execute ${step.kind} steps`);
    }
  }

  /** Capturing into ordered cycles (async mode, started). */
  get capturing(): boolean {
    return this.asyncR1 !== undefined && !this.asyncR1.stopped;
  }

  /**
   * Owes a range: in `owed` (what the push ships) and in the persisted bits. The bits were set when
   * the write was admitted, but a shipment acknowledged while the write was still running may have
   * cleared them since (found by pair seed 33808): the bits must always cover what is owed.
   */
  private oweRange(offset: number, length: number): void {
    const { first, last } = tracksOf(this.volume.geometry, offset, length);
    this.bits.setRange(first, last);
    this.owed.markWrite(offset, length, this.nowMs());
  }

  /** Marks the parts of a write inside the pair's extents as owed. */
  private markOwed(write: AppliedWrite): void {
    for (const part of clipToExtents(this.record.extents, write.offset, write.length)) this.oweRange(part.offset, part.length);
  }

  /** Sync: ship alongside the local write; the host's write completes when both are done. */
  private ship(write: AppliedWrite, mode: 'sync' | 'semisync'): Promise<void> {
    if (mode === 'sync') return this.forward(write);
    // Semi-sync: the host's write completes at once, but not before the previous one was acknowledged.
    // Its tracks count as in flight from now (found by pair seed 32845: a previous write's
    // acknowledgement cleared the bit of a track this write had still to ship).
    const tracks = this.inFlightTracks(write);
    for (const t of tracks) this.syncInFlight.set(t, (this.syncInFlight.get(t) ?? 0) + 1);
    const previous = this.semiPrevious;
    return previous.then(() => {
      this.semiPrevious = this.forward(write, tracks).catch(() => undefined);
    });
  }

  private localWriteFailed(write: AppliedWrite): void {
    this.asyncR1?.abandon(write);
    // R2 may get bytes R1 could not store: R1's real content is owed.
    for (const part of clipToExtents(this.record.extents, write.offset, write.length)) {
      const { first, last } = tracksOf(this.volume.geometry, part.offset, part.length);
      this.bits.setRange(first, last);
      this.owed.markWhole(first, last, this.nowMs());
    }
  }

  /** Async, after the local write: its bytes go into the cycle it began in (owed if the cycles stopped since). */
  private capture(write: AppliedWrite): void {
    if (!this.asyncR1?.owns(write)) {
      this.markOwed(write);
      return;
    }
    if (this.record.extents === null) {
      // The whole volume (the common case): no clipping.
      if (!this.asyncR1.capture(write, write.offset, write.length, write.data ?? null)) this.oweRange(write.offset, write.length);
      this.asyncR1.finish(write);
      return;
    }
    for (const part of clipToExtents(this.record.extents, write.offset, write.length)) {
      const data = write.data ? write.data.subarray(part.offset - write.offset, part.offset - write.offset + part.length) : null;
      if (!this.asyncR1.capture(write, part.offset, part.length, data)) this.oweRange(part.offset, part.length);
    }
    this.asyncR1.finish(write);
  }

  /**
   * Ships one write to R2. Writes begun in the same turn of the event loop travel as one message
   * (one header, one acknowledgement): at queue depth 32 that is most of the per-write cost.
   */
  private inFlightTracks(write: AppliedWrite): number[] {
    const tracks: number[] = [];
    for (const part of clipToExtents(this.record.extents, write.offset, write.length)) {
      const { first, last } = tracksOf(this.volume.geometry, part.offset, part.length);
      for (let t = first; t <= last; t++) tracks.push(t);
    }
    return tracks;
  }

  /** `counted`: the tracks already counted in flight (semi-sync counts them when the write begins). */
  private async forward(write: AppliedWrite, counted?: number[]): Promise<void> {
    const parts = clipToExtents(this.record.extents, write.offset, write.length);
    const tracks = counted ?? this.inFlightTracks(write);
    if (!counted) for (const t of tracks) this.syncInFlight.set(t, (this.syncInFlight.get(t) ?? 0) + 1);
    const segments: Segment[] = parts.map((part) => (write.kind === 'write'
      ? { kind: 'data', offset: part.offset, data: write.data!.subarray(part.offset - write.offset, part.offset - write.offset + part.length) }
      : { kind: 'zero', offset: part.offset, length: part.length }));
    try {
      await Promise.all(segments.map((segment) => this.enqueueForward(segment, write.fua)));
      this.counters.writesForwarded++;
    } catch (error) {
      this.markOwed(write);
      this.noteFailure(error);
      // Only the volume's hosts get a refusal; a replica write from upstream is owed instead.
      if (this.record.onLinkFailure === 'fail-writes' && write.source === 'host') throw error;
    } finally {
      for (const t of tracks) {
        const n = (this.syncInFlight.get(t) ?? 1) - 1;
        if (n > 0) this.syncInFlight.set(t, n);
        else {
          this.syncInFlight.delete(t);
          this.noteShipped(t);
        }
      }
      this.noteUnflushed(write.kind === 'write' ? write.length : 0);
    }
  }

  private enqueueForward(segment: Segment, fua: boolean): Promise<void> {
    let batch = this.forwardBatch;
    if (!batch || batch.segments.length >= FORWARD_BATCH_SEGMENTS || batch.bytes >= FORWARD_BATCH_BYTES) {
      batch = { segments: [], bytes: 0, fua: false, done: undefined! };
      const current = batch;
      batch.done = new Promise<void>((resolve, reject) => {
        // Closed in the check phase, after this turn's callbacks and their microtasks: a host's
        // writes join one message however they were started (one NBD read's requests at once, or
        // one after another as earlier writes complete).
        setImmediate(() => {
          if (this.forwardBatch === current) this.forwardBatch = undefined;
          this.rpc.request(this.record.peer, { op: 'pair.apply', pair: this.record.id, fua: current.fua }, current.segments,
            this.timeouts.writeAckMs).then(() => resolve(), reject);
        });
      });
      this.forwardBatch = batch;
    }
    batch.segments.push(segment);
    batch.bytes += segment.kind === 'data' ? segment.data.length : 0;
    batch.fua ||= fua;
    return batch.done;
  }

  /** Makes R2 durable after a host FLUSH on a synchronous pair (best effort: failures keep bits set). */
  async afterHostFlush(): Promise<void> {
    if (!this.replicatingNow || (this.record.mode !== 'sync' && this.record.mode !== 'semisync')) return;
    try {
      await this.rpc.request(this.record.peer, { op: 'pair.flush', pair: this.record.id }, [], this.timeouts.writeAckMs);
    } catch (error) {
      this.noteFailure(error);
    }
  }

  /**
   * R2 acknowledged data of this track. It is not durable there until R2 flushes, so the track is
   * only remembered here; beforePersist clears its bit after both flushes, if nothing touched it since.
   */
  private noteShipped(track: number): void {
    // The bit clears only at the next persist, after both copies were flushed (found by pair seed
    // 32326: a persist already past its flush wrote a bit cleared just after it). Hosts that never
    // flush would leave it set for ever: the cleaner starts such a persist (kickClean).
    this.clearedNotDurable.set(track);
  }

  /** R2 holds data it may not have flushed yet: a round falls due by age, or now if the bytes add up. */
  private noteUnflushed(bytes: number): void {
    this.cleaner.handle({ type: 'shipped', bytes }, this.nowMs());
    this.kickClean();
  }

  /**
   * A flush round, if one is due: R1 persists its bitmaps, and the persist (beforePersist) flushes
   * both copies and clears what it may. Called on a timer; returns at once.
   */
  kickClean(): void {
    if (this.cleaning || this.record.role !== 'R1' || this.retired || !this.linkUp || this.peerMissing) return;
    const onDisk = this.persistedInvalidTracks;
    if (onDisk !== null && onDisk > this.bits.count()) this.cleaner.handle({ type: 'stale-on-disk' }, this.nowMs());
    if (!this.cleaner.due(this.nowMs())) return;
    this.cleaning = true;
    this.counters.flushRounds++;
    void this.volume.persistBitmaps().catch((error: unknown) => this.noteFailure(error)).finally(() => { this.cleaning = false; });
  }

  /** The local invalid-track figure as last persisted (null: not persisted by this process yet). */
  get persistedInvalidTracks(): number | null {
    return this.volume.persistedInvalid(this.record.role === 'R1' ? this.ids.out : this.ids.own) ?? null;
  }

  /** Whether anything still owes, ships or captures the track (its bit must stay set). */
  private busyTrack(track: number): boolean {
    return this.owed.owed.test(track) || this.syncInFlight.has(track) || this.pushInFlight.has(track) ||
      (this.asyncR1 !== undefined && !this.asyncR1.stopped && this.asyncR1.holds(track));
  }

  /**
   * Before R1 persists its bitmaps: a cleared bit must mean both copies are durable. R1 flushes (a
   * power loss must not take back data R2 keeps: the images would differ under a clean bit), and R2
   * is asked to flush; if it cannot, the tracks are owed again.
   */
  async beforePersist(): Promise<void> {
    if (this.record.role !== 'R1') return;
    // Whoever started this persist, it takes every pending clear: the cleaner's clock restarts.
    this.cleaner.handle({ type: 'taken' }, this.nowMs());
    let ok = false;
    try {
      ok = await this.clearDurable();
    } finally {
      this.cleaner.handle({ type: 'ended', ok }, this.nowMs());
    }
  }

  /** Returns false when R2 could not be made durable (its tracks are owed again). */
  private async clearDurable(): Promise<boolean> {
    const pulled = this.pulledClears.copy();
    this.pulledClears.clearAll();
    const committed = this.committedClears.copy();
    this.committedClears.clearAll();
    const cleared = this.clearedNotDurable.copy();
    this.clearedNotDurable.clearAll();
    if (pulled.isEmpty() && committed.isEmpty() && cleared.isEmpty()) return true;
    // A sync write's ship may finish before its local write: the flush below need not cover the
    // local bytes of writes in flight now, so their tracks wait for a later round (pair seed
    // 22757042: R2 acknowledged, the round cleared the track, R1's own write was still running and
    // a power loss of R1 then took it back while R2 kept it, under a clean bit).
    const writing = this.volume.trackRangesInFlight();
    // R1's own copy first: a power loss must not take back data R2 keeps (pair seed 28).
    try {
      await this.volume.internalFlush();
    } catch (error) {
      this.pulledClears.or(pulled);
      this.committedClears.or(committed);
      this.clearedNotDurable.or(cleared);
      throw error;
    }
    for (let t = pulled.nextSet(0); t >= 0; t = pulled.nextSet(t + 1)) {
      this.pull?.clear(t);
      this.bits.clear(t);
    }
    // A track shipped, committed or written again since the snapshot keeps its bit: the flushes
    // above may not cover its newest data (pair seed 31760).
    for (let t = committed.nextSet(0); t >= 0; t = committed.nextSet(t + 1)) {
      if (!this.busyTrack(t) && !this.committedClears.test(t)) this.bits.clear(t);
    }
    if (cleared.isEmpty()) return true;
    // The flush must be answered by the R2 that received the data: if its session ends meanwhile
    // (it restarted, maybe losing what it had not flushed), a new R2's flush proves nothing.
    const session = this.sessionEpoch;
    try {
      await this.rpc.request(this.record.peer, { op: 'pair.flush', pair: this.record.id }, [], this.timeouts.copyAckMs);
      if (this.sessionEpoch !== session) throw new TidemarkError(ErrorCode.LinkDown, `the link session with ${this.record.peer} ended during the flush`);
    } catch (error) {
      this.owed.markWholeBitmap(cleared, this.nowMs());
      this.noteFailure(error);
      return false;
    }
    let later = false;
    for (let t = cleared.nextSet(0); t >= 0; t = cleared.nextSet(t + 1)) {
      if (writing.some((r) => r.first <= t && t <= r.last)) {
        this.noteShipped(t);
        later = true;
      } else if (!this.busyTrack(t) && !this.clearedNotDurable.test(t)) {
        this.bits.clear(t);
      }
    }
    if (later) this.noteUnflushed(0);
    return true;
  }

  /**
   * R2's link session ended for good (it restarted): anything it acknowledged but had not made
   * durable may be gone, and anything in flight is lost. Every such track is owed again.
   */
  sessionReset(): void {
    this.sessionEpoch++;
    this.lifecycle.handle({ type: 'session-reset' }, this.nowMs());
    if (this.record.role !== 'R1') return;
    if (this.capturing) {
      // R2 keeps its cycles durably (it recovers them); only tracks shipped before the cycles
      // started and not yet flushed there may be gone — those need a resync, which ends the cycles.
      if (this.clearedNotDurable.isEmpty()) return;
      this.stopAsync();
    }
    this.bits.or(this.clearedNotDurable);
    this.clearedNotDurable.clearAll();
    this.owed.markWholeBitmap(this.bits, this.nowMs());
  }

  private noteFailure(error: unknown): void {
    this.lastError = error instanceof Error ? error.message : String(error);
  }

  // ---- R1 background push: owed tracks → R2 ----

  /** Starts the push if there is work and nothing stops it; returns at once. */
  kickPush(): void {
    if (this.pushing || !this.replicatingNow || this.owed.count === 0) return;
    this.pushing = true;
    void this.push().finally(() => {
      this.pushing = false;
      this.noteR2WholeIfQuiet();
    });
  }

  private async push(): Promise<void> {
    try {
      await this.takeHoleRuns();
    } catch (error) {
      this.noteFailure(error);
      return;
    }
    let cursor = 0;
    // Tracks in another worker's batch: still owed until that worker takes them after R2's digests
    // arrive, so without this a worker wrapping round the bitmap asked R2 for them again.
    const claimed = new Set<number>();
    // Adaptive copy with a minimum age: a track whose oldest unshipped change is younger waits for a
    // later push (the manager's kick starts one every quarter second), so rewrites coalesce.
    const minAgeMs = this.record.mode === 'adaptive' ? this.record.minAgeMs : 0;
    const nextBatch = (): number[] => {
      const cutoffMs = this.nowMs() - minAgeMs;
      const owed = this.owed.owed;
      const batch: number[] = [];
      const start = cursor;
      let wrapped = false;
      let t = owed.nextSet(start);
      while (batch.length < BATCH_TRACKS) {
        if (t < 0 || (wrapped && t >= start)) {
          if (wrapped || start === 0) break;
          wrapped = true;
          t = owed.nextSet(0);
          continue;
        }
        if (!claimed.has(t) && (minAgeMs === 0 || this.owed.dueBy(t, cutoffMs))) {
          batch.push(t);
          cursor = t + 1;
        }
        t = owed.nextSet(t + 1);
      }
      for (const b of batch) claimed.add(b);
      return batch;
    };
    const worker = async (): Promise<void> => {
      while (this.replicatingNow) {
        const batch = nextBatch();
        if (batch.length === 0) return;
        try {
          await this.pushBatch(batch);
        } finally {
          for (const b of batch) claimed.delete(b);
        }
      }
    };
    try {
      await Promise.all(Array.from({ length: BATCHES_IN_FLIGHT }, () => worker()));
    } catch (error) {
      this.noteFailure(error);
    }
  }

  private async pushBatch(batch: number[]): Promise<void> {
    const { geometry } = this.volume;
    const recordsPerTrack = geometry.trackBytes / geometry.recordBytes;
    // Which records R2 holds, for tracks whose dirty records are unknown (asked before locking).
    const unknown = batch.filter((t) => this.owed.owed.test(t) && !this.owed.hasMask(t));
    const remote = new Map<number, Uint8Array | 'zero'>();
    if (unknown.length > 0) {
      try {
        const reply = await this.rpc.request(this.record.peer, { op: 'pair.digests', pair: this.record.id, tracks: unknown }, [],
          this.timeouts.copyAckMs);
        reply.segments.forEach((s, i) => {
          const t = unknown[i];
          if (t === undefined) return;
          if (s.kind === 'zero') remote.set(t, 'zero');
          else if (s.data.length === recordsPerTrack * DIGEST_BYTES) remote.set(t, s.data);
        });
        this.counters.tracksCompared += remote.size;
      } catch (error) {
        this.noteFailure(error);
        return;
      }
    }
    // Tracks that are holes here and all zeros on R2 are already equal: nothing to read or ship.
    const holes = await holeTracks(this.volume, batch.filter((t) => remote.get(t) === 'zero'));
    const equal = await this.takeEqualHoles([...holes]);
    await Promise.all(batch.filter((t) => !equal.has(t)).map((t) => this.pushTrack(t, remote.get(t))));
  }

  /**
   * Before a push over many owed tracks (an initial copy, a full resync): the owed tracks that are
   * holes here go to R2 in runs of `holeRunTracks`, and those R2 answers are zeros there too are
   * taken under one lock per run. The batches of the push would find them too, 16 tracks per round
   * trip and a lock per track: establishing a sparse 64 GiB volume spent ~10 s on that.
   */
  private async takeHoleRuns(): Promise<void> {
    const runTracks = this.timeouts.holeRunTracks ?? HOLE_RUN_TRACKS;
    // Only tracks owed whole are compared with R2 (an establish, a full resync, after a restart);
    // without enough of them the push's own batches do, and the allocation map is not read.
    if (this.owed.wholeCount < runTracks) return;
    const g = this.volume.geometry;
    const owed = this.owed;
    const holes = (await this.volume.internalAllocation(0, g.sizeBytes)).filter((e) => e.kind === 'hole');
    function* runs(): Generator<number[]> {
      for (const hole of holes) {
        // The tracks the hole covers whole (the last track may be short: the volume ends there).
        const first = Math.ceil(hole.offset / g.trackBytes);
        const end = hole.offset + hole.length >= g.sizeBytes ? g.trackCount : Math.floor((hole.offset + hole.length) / g.trackBytes);
        let run: number[] = [];
        for (let t = owed.owed.nextSet(first); t >= 0 && t < end; t = owed.owed.nextSet(t + 1)) {
          if (owed.hasMask(t)) continue;
          run.push(t);
          if (run.length === runTracks) {
            yield run;
            run = [];
          }
        }
        if (run.length > 0) yield run;
      }
    }
    const next = runs();
    await Promise.all(Array.from({ length: BATCHES_IN_FLIGHT }, async () => {
      for (let r = next.next(); !r.done && this.replicatingNow; r = next.next()) await this.takeHoleRun(r.value);
    }));
  }

  /** Asks R2 about `tracks` (holes here, ascending) and takes those it holds as zeros. */
  private async takeHoleRun(tracks: number[]): Promise<void> {
    const reply = await this.rpc.request(this.record.peer, { op: 'pair.digests', pair: this.record.id, tracks }, [], this.timeouts.copyAckMs);
    this.counters.tracksCompared += reply.segments.length;
    await this.takeEqualHoles(tracks.filter((_, i) => reply.segments[i]?.kind === 'zero'), 'span');
  }

  /**
   * Of tracks found to be holes here and zeros on R2, takes those still holes once each is locked
   * (a write may have landed since): R1 and R2 both read zeros there. One allocation query for them
   * all: asked track by track, an initial copy of a sparse volume spent most of its time on it
   * (a thread-pool round trip per track, ~1M for 64 GiB). Locked track by track, or (`span`, for
   * runs of nearby tracks) as one range from the first to the last: host writes there wait for one
   * allocation query.
   */
  private async takeEqualHoles(candidates: readonly number[], lock: 'tracks' | 'span' = 'tracks'): Promise<Set<number>> {
    const taken = new Set<number>();
    const tracks = candidates.filter((t) => !this.owed.hasMask(t));
    if (tracks.length === 0) return taken;
    const { geometry } = this.volume;
    const ranges = lock === 'tracks' ? tracks.map((t) => trackRange(geometry, t)) : [tracksRange(geometry, tracks[0]!, tracks[tracks.length - 1]!)];
    const unlocks = await Promise.all(ranges.map((range) => this.volume.lockRange(range.offset, range.length)));
    try {
      const stillHoles = await holeTracks(this.volume, tracks);
      for (const track of tracks) {
        if (!stillHoles.has(track) || !this.owed.owed.test(track) || this.owed.hasMask(track) || !this.replicatingNow) continue;
        this.owed.take(track);
        this.counters.recordsIdentical += geometry.trackBytes / geometry.recordBytes;
        this.counters.tracksCopied++;
        this.noteShipped(track);
        taken.add(track);
      }
      if (taken.size > 0) this.noteUnflushed(0);
    } finally {
      for (const unlock of unlocks) unlock();
    }
    return taken;
  }

  private async pushTrack(track: number, remote: Uint8Array | 'zero' | undefined): Promise<void> {
    const { geometry } = this.volume;
    const range = trackRange(geometry, track);
    const unlock = await this.volume.lockRange(range.offset, range.length);
    let selection: RecordSelection | undefined;
    let reply: Promise<unknown> | undefined;
    let shipped = 0;
    let records = 0;
    try {
      if (!this.owed.owed.test(track) || !this.replicatingNow) return;
      selection = this.owed.take(track);
      this.pushInFlight.add(track);
      const data = await this.volume.internalRead(range.offset, range.length);
      const local = selection === 'all' && remote !== undefined && remote !== 'zero' ? recordDigests(data, geometry.recordBytes) : undefined;
      const segments: Segment[] = [];
      for (const r of this.owed.recordsOf(selection)) {
        const start = r * geometry.recordBytes;
        if (start >= data.length) break;
        const bytes = data.subarray(start, Math.min(data.length, start + geometry.recordBytes));
        const zero = isAllZero(bytes);
        // Identical to what R2 holds: R2 all zeros and this record zeros, or equal digests.
        if (selection === 'all' && ((remote === 'zero' && zero) || (local && remote instanceof Uint8Array && digestEqual(local, remote, r)))) {
          this.counters.recordsIdentical++;
          continue;
        }
        appendSegment(segments, range.offset + start, bytes, zero);
        records++;
        if (!zero) shipped += bytes.length;
      }
      if (segments.length > 0) {
        const sent = this.rpc.send(this.record.peer, { op: 'pair.apply', pair: this.record.id, fua: false }, segments, this.timeouts.copyAckMs);
        // Queued on the link before the lock is released: a later write to this track reaches R2 after it.
        await sent.queued;
        reply = sent.reply;
        this.counters.zeroMarkers += segments.filter((s) => s.kind === 'zero').length;
      }
    } catch (error) {
      if (selection !== undefined) this.owed.giveBack(track, selection, this.nowMs());
      selection = undefined;
      this.pushInFlight.delete(track);
      this.noteFailure(error);
    } finally {
      unlock();
    }
    if (selection === undefined) return;
    try {
      if (reply) await reply;
      this.counters.recordsShipped += records;
      this.counters.bytesShipped += shipped;
      this.counters.tracksCopied++;
      this.pushInFlight.delete(track);
      this.noteShipped(track);
      this.noteUnflushed(shipped);
    } catch (error) {
      this.owed.giveBack(track, selection, this.nowMs());
      this.pushInFlight.delete(track);
      this.noteFailure(error);
    }
  }

  // ---- R1 pull: R2's image → R1 (failback, restore) ----

  kickPull(onDone: () => Promise<void>): void {
    if (this.pulling || this.record.role !== 'R1' || this.record.intent !== 'restoring' || !this.pull || !this.linkUp || this.retired) return;
    this.pulling = true;
    void this.pullAll(onDone).catch((error: unknown) => this.noteFailure(error)).finally(() => { this.pulling = false; });
  }

  private async pullAll(onDone: () => Promise<void>): Promise<void> {
    const pull = this.pull!;
    const { geometry } = this.volume;
    const worker = async (claimed: Set<number>): Promise<void> => {
      for (;;) {
        if (!this.linkUp || this.retired || this.record.intent !== 'restoring') return;
        const batch: number[] = [];
        for (let t = pull.nextSet(0); t >= 0 && batch.length < BATCH_TRACKS; t = pull.nextSet(t + 1)) {
          if (!claimed.has(t) && !this.pulledClears.test(t)) batch.push(t);
        }
        if (batch.length === 0) return;
        for (const t of batch) claimed.add(t);
        try {
          const digests: Segment[] = [];
          for (const t of batch) {
            const range = trackRange(geometry, t);
            digests.push({ kind: 'data', offset: t, data: recordDigests(await this.volume.internalRead(range.offset, range.length), geometry.recordBytes) });
          }
          const reply = await this.rpc.request(this.record.peer, { op: 'pair.read', pair: this.record.id, tracks: batch }, digests,
            this.timeouts.copyAckMs);
          await Promise.all(reply.segments.map((s) => {
            this.counters.recordsPulled++;
            const options = { source: 'replica' as const, skipPosition: this.ids.out };
            if (s.kind === 'zero') return this.volume.internalZero(s.offset, s.length, options);
            this.counters.bytesPulled += s.data.length;
            return this.volume.internalWrite(s.offset, s.data.slice(), options);
          }));
          for (const t of batch) this.pulledClears.set(t);
        } finally {
          for (const t of batch) claimed.delete(t);
        }
      }
    };
    const claimed = new Set<number>();
    await Promise.all(Array.from({ length: BATCHES_IN_FLIGHT }, () => worker(claimed)));
    if (!this.pulledClears.isEmpty()) await this.volume.persistBitmaps(); // makes the pulled tracks durable and clears them
    if (pull.isEmpty() && this.record.intent === 'restoring' && !this.retired) await onDone();
  }
}

/** Adds a record to the segment list, merging it with the previous segment of the same kind when adjacent. */
function appendSegment(segments: Segment[], offset: number, bytes: Uint8Array, zero: boolean): void {
  const last = segments[segments.length - 1];
  if (zero) {
    if (last?.kind === 'zero' && last.offset + last.length === offset) segments[segments.length - 1] = { ...last, length: last.length + bytes.length };
    else segments.push({ kind: 'zero', offset, length: bytes.length });
    return;
  }
  if (last?.kind === 'data' && last.offset + last.data.length === offset) {
    const merged = new Uint8Array(last.data.length + bytes.length);
    merged.set(last.data);
    merged.set(bytes, last.data.length);
    segments[segments.length - 1] = { kind: 'data', offset: last.offset, data: merged };
  } else {
    segments.push({ kind: 'data', offset, data: bytes });
  }
}

function lifecycleRecord(record: PairRecord): LifecycleRecord {
  return { role: record.role, intent: record.intent, mode: record.mode, generation: record.generation, protects: record.protectWith !== null };
}
