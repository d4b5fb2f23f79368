// One volume's I/O path: host access checks, write ordering, the activity log, mirror positions,
// and durability. It depends only on ports, so the daemon runs it on files and the simulator runs
// the same code on a faulty in-memory disk.
import { ActivityLog, DEFAULT_ACTIVITY_LOG, encodeSlot, recoverLog, type ActivityLogConfig, type Transaction } from '../../core/bitmap/activity-log.js';
import { DeltaRing, deltasOf, encodeDelta, type PositionDelta } from '../../core/bitmap/bitmap-deltas.js';
import { TrackBitmap } from '../../core/bitmap/track-bitmap.js';
import { ErrorCode, TidemarkError } from '../../core/errors.js';
import { assert } from '../../core/lib/assert.js';
import { makeGeometry, rangeInside, tracksOf, type Geometry } from '../../core/volume/geometry.js';
import {
  applyDeltas, applyWrite, decodePositions, encodePositions, evictionDelta, markRecovered, type MirrorPosition, type WriteSource,
} from '../../core/volume/mirror-positions.js';
import { checkHostAccess, type HostAccess, type VolumeState } from '../../core/volume/state.js';
import {
  planAdmission, planApply, planFlush, planRead, type AdmissionScope, type AdmitStep, type ApplyPlan, type PlannedWrite, type PlanPosition, type PlanStep,
} from '../../core/volume/write-plan.js';
import type { VolumeRecord } from '../../core/volume/volume-record.js';
import type { WriteHold } from './write-holds.js';
import type { AllocationExtent, BlockStore } from '../../ports/block-store.js';
import type { MetaStore, SlotJournal } from '../../ports/meta-store.js';

export type OpKind = 'read' | 'write' | 'zero' | 'trim' | 'flush';

export interface VolumeDeps {
  readonly store: BlockStore;
  readonly meta: MetaStore;
  /**
   * The activity log's slots, then (any slots beyond the log's own) the ring of bitmap deltas. A
   * journal with no more slots than the log persists every bitmap on each eviction instead.
   */
  readonly journal: SlotJournal;
  readonly activityLog?: ActivityLogConfig;
  /** Called after every completed host operation (for metrics). */
  readonly onOp?: (kind: OpKind, bytes: number, startedAtMs: number) => void;
  readonly nowMs: () => number;
}

/**
 * A write (or locked range) holding its bytes. Its `done` promise is made only when something waits
 * for it: most writes overlap nothing, and a promise per write was measurable at 4 KiB.
 */
class InFlightWrite {
  private waiting: Promise<void> | undefined;
  private wake: (() => void) | undefined;
  private ended = false;

  constructor(readonly start: number, readonly end: number) {}

  /** Settles once finish() has been called. */
  get done(): Promise<void> {
    if (this.ended) return Promise.resolve();
    return this.waiting ??= new Promise<void>((resolve) => { this.wake = resolve; });
  }

  finish(): void {
    this.ended = true;
    this.wake?.();
  }
}

/** What to wait for before a write to offset..offset+length may take its place: the writes of `writes` it overlaps. */
function overlapping(writes: Iterable<InFlightWrite>, offset: number, length: number): Promise<void>[] {
  const end = offset + length;
  const done: Promise<void>[] = [];
  for (const w of writes) if (w.start < end && offset < w.end) done.push(w.done);
  return done;
}

interface AlWaiter {
  readonly first: number;
  readonly last: number;
  /** Marks the write's bitmap bits: called at admission, before anything can evict its extents. */
  readonly mark: () => void;
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
}

export const CHANGES_POSITION = 'changes';

/**
 * A feature that holds positions on a volume (clone sessions, pair halves) takes part in its I/O
 * this way: it describes its positions as values, the core's planner (core/volume/write-plan.ts)
 * decides the steps of each write, read and flush, and the feature carries out the steps named for
 * its positions. Steps may do I/O of their own on the volume (a clone copies a track into STD
 * before a host write or read lands on it).
 */
export interface WriteParticipant {
  /** Appends this feature's positions on the volume, as they are now. */
  positions(into: PlanPosition[]): void;
  /**
   * Carries out a step planned for `position` (one of the values it gave). `write`: the write, for
   * its admission and apply steps (a journal's token names its bytes); undefined for reads and
   * flushes. Returns the work when it is not done at once; a rejection fails the write (or read, or flush).
   */
  execute(step: PlanStep, position: PlanPosition, write: AppliedWrite | undefined): Promise<void> | undefined;
}

/** Sees writes go by without taking part (the simulator's tracing and oracles). */
export interface WriteObserver {
  /** The write starts being applied: admitted, ordered, bitmaps marked. */
  begin?(write: AppliedWrite): void;
  /** The write reached the store (and its FUA flush), still holding its place in the order. */
  applied?(write: AppliedWrite): void;
}

export type WriteKind = 'write' | 'zero' | 'trim';

export interface AppliedWrite {
  readonly kind: WriteKind;
  readonly source: WriteSource;
  readonly offset: number;
  readonly length: number;
  /** The bytes, for kind 'write'. */
  readonly data: Uint8Array | undefined;
  readonly fua: boolean;
  /** The position an internal write was told not to mark. */
  readonly skipPosition: string | undefined;
  /** What participants keep for this write between its steps (see WriteHold); starts empty. */
  holds: WriteHold | undefined;
}

export interface InternalWriteOptions {
  /** A position this write must not mark (a replica applying its own pair's data). */
  readonly skipPosition?: string;
  /** 'replica' for a remote mirror's writes (they mark what host writes mark); default 'copy'. */
  readonly source?: 'copy' | 'replica';
}

/** Persisted with the bitmaps, atomically: state of features that own some of the positions. */
export type ExtensionProvider = () => unknown;

export const bitmapsKey = (volume: string): string => `bitmaps/${volume}`;
export const volumeKey = (volume: string): string => `volume/${volume}`;

export function activityLogFor(geometry: Geometry, base: ActivityLogConfig = DEFAULT_ACTIVITY_LOG): ActivityLogConfig {
  return { ...base, extentTracks: Math.max(1, Math.floor((4 * 1024 * 1024) / geometry.trackBytes)) };
}

export interface RecoveryReport {
  /** True when the previous run did not shut down cleanly. */
  readonly crashed: boolean;
  /** Tracks marked changed because they lay in extents that were hot at the crash. */
  readonly tracksMarked: number;
}

export class Volume {
  readonly geometry: Geometry;
  private readonly inFlight = new Set<InFlightWrite>();
  /** Host writes whose admission waits (a step's work, a write window): not yet ordered, but ahead of later overlapping writes. */
  private readonly admitting = new Set<InFlightWrite>();
  private readonly alWaiters: AlWaiter[] = [];
  private alPump: Promise<void> | undefined;
  private bitmapsDirty = false;
  private persisting: Promise<void> | undefined;
  private closed = false;
  private failure: TidemarkError | undefined;
  /** While set, new writes wait here (a write window: split, restore start). */
  private gate: Promise<void> | undefined;
  private openGate: (() => void) | undefined;
  /** Write windows opened so far: an admission pass that saw one open (even briefly) runs again. */
  private windowsOpened = 0;
  /** Replica writes pass admission one at a time, in arrival order. */
  private replicaAdmission: Promise<void> = Promise.resolve();
  /** The features holding positions on this volume: the write plan is made from what they describe. */
  readonly participants: WriteParticipant[] = [];
  readonly observers: WriteObserver[] = [];
  /** Run before every bitmap persist (e.g. make copied data durable before its cleared bits are). */
  readonly beforePersist: Array<() => Promise<void>> = [];
  private readonly extensionProviders = new Map<string, ExtensionProvider>();
  /** Per position: bits persisted as set although clear in memory (see setPersistOverlay). */
  private readonly persistOverlays = new Map<string, () => TrackBitmap>();
  /**
   * Per position: its bits as durable now, the last full persist OR the deltas since (what a crash
   * restarts from before the hot extents; see writeEvicting). Empty until a record exists.
   */
  private durable = new Map<string, TrackBitmap>();
  /** The storage serving the volume: a migration's cutover exchanges it under open connections. */
  private store: BlockStore;

  private constructor(
    private record: VolumeRecord,
    private readonly deps: VolumeDeps,
    private readonly log: ActivityLog,
    private readonly deltas: DeltaRing,
    readonly positions: MirrorPosition[],
    readonly recovery: RecoveryReport,
    /** Extension state as last persisted (read once by the feature that owns it at start-up). */
    readonly loadedExtensions: Readonly<Record<string, unknown>>,
  ) {
    this.geometry = makeGeometry(record.sizeBytes, record.trackBytes);
    this.store = deps.store;
  }

  /** Opens a volume, recovering its bitmaps from the last clean state plus the activity log. */
  static async open(record: VolumeRecord, deps: VolumeDeps): Promise<Volume> {
    const geometry = makeGeometry(record.sizeBytes, record.trackBytes);
    const config = deps.activityLog ?? activityLogFor(geometry);
    const slots = await deps.journal.readAll();
    const stored = await deps.meta.read(bitmapsKey(record.name));
    let positions: MirrorPosition[];
    let extensions: Record<string, unknown> = {};
    let generation = 0;
    if (stored === undefined) {
      positions = [{ id: CHANGES_POSITION, kind: 'change-tracker', marksOn: 'all', invalid: new TrackBitmap(geometry.trackCount) }];
    } else {
      const decoded = decodePositions(stored, geometry.trackCount);
      if (!decoded) throw new TidemarkError(ErrorCode.MetadataCorrupt, `bitmaps of volume ${record.name} do not decode`);
      positions = decoded.positions;
      extensions = decoded.extensions;
      generation = decoded.generation;
    }
    // The bits evictions made durable since that record: deltas only add bits, in any order.
    const deltas = deltasOf(generation, slots.slice(config.slotCount), geometry.trackCount);
    applyDeltas(positions, deltas);
    const durable = new Map(positions.map((p) => [p.id, p.invalid.copy()]));
    // A transaction written with a delta stands only if the delta is whole (or an older generation's,
    // which the record covers).
    const recovered = recoverLog(slots.slice(0, config.slotCount), (ref) => ref.generation < generation ||
      deltas.some((d) => d.generation === ref.generation && d.seq === ref.seq));
    if (recovered && recovered.extents.length > 0 && recovered.extentTracks !== config.extentTracks) {
      throw new TidemarkError(ErrorCode.MetadataCorrupt,
        `activity log of ${record.name} uses ${recovered.extentTracks}-track extents, expected ${config.extentTracks}`);
    }
    const hot = recovered?.extents ?? [];
    const runs = hot.map((e) => ({
      first: e * config.extentTracks,
      last: Math.min(geometry.trackCount - 1, (e + 1) * config.extentTracks - 1),
    })).filter((r) => r.first < geometry.trackCount);
    const before = positions.map((p) => p.invalid.count());
    // Hosts write only to a ready volume (setState persists the bitmaps before it leaves 'ready').
    markRecovered(positions, runs, record.state === 'ready');
    const tracksMarked = positions.reduce((n, p, i) => Math.max(n, p.invalid.count() - before[i]!), 0);
    const log = new ActivityLog(config, recovered);
    const ring = new DeltaRing(Math.max(0, deps.journal.slotCount - config.slotCount), generation);
    const volume = new Volume(record, deps, log, ring, positions, { crashed: hot.length > 0, tracksMarked }, extensions);
    if (stored !== undefined) volume.durable = durable;
    if (hot.length > 0 || deltas.length > 0) {
      // Make the recovered bitmaps the new clean state, so a second crash does not depend on the old log.
      await volume.persistBitmaps();
      await volume.writeCleanLog();
    }
    return volume;
  }

  get name(): string {
    return this.record.name;
  }

  get state(): VolumeState {
    return this.record.state;
  }

  get definition(): VolumeRecord {
    return this.record;
  }

  get hotExtents(): number {
    return this.log.hotExtents().length;
  }

  get inFlightWrites(): number {
    return this.inFlight.size;
  }

  /**
   * The tracks (first..last) of the writes in flight now — ordered and not yet complete, range
   * locks included: a flush issued now need not cover their bytes (the local write may still be
   * running while work alongside it, a sync pair's ship, has finished).
   */
  trackRangesInFlight(): Array<{ readonly first: number; readonly last: number }> {
    const ranges: Array<{ first: number; last: number }> = [];
    for (const w of this.inFlight) if (w.end > w.start) ranges.push(tracksOf(this.geometry, w.start, w.end - w.start));
    return ranges;
  }

  /** NBD client names allowed to use the volume (empty: any). */
  get allowedClients(): readonly string[] {
    return this.record.allowedClients ?? [];
  }

  /** Replaces the NBD allow-list durably (empty: any client); later handshakes see it at once. */
  async setAllowedClients(names: readonly string[]): Promise<void> {
    const next: VolumeRecord = { ...this.record, allowedClients: [...names] };
    await this.deps.meta.write(volumeKey(this.name), new TextEncoder().encode(JSON.stringify(next)));
    this.record = next;
  }

  /** Changes the host-access state durably. */
  async setState(state: VolumeState): Promise<void> {
    // Crash recovery marks an R2's own bitmap only if the volume was ready (hosts may have written):
    // what its hosts wrote while it was ready must be on disk before the record says it no longer is.
    if (this.record.state === 'ready' && state !== 'ready' && this.positions.some((p) => p.kind === 'remote-own' && p.marksOn !== 'never')) {
      await this.persistBitmaps();
    }
    const next = { ...this.record, state };
    await this.deps.meta.write(volumeKey(this.name), new TextEncoder().encode(JSON.stringify(next)));
    this.record = next;
  }

  checkAccess(access: HostAccess): void {
    if (this.closed) throw new TidemarkError(ErrorCode.ShuttingDown, `volume ${this.name} is closed`);
    if (this.failure) throw this.failure;
    checkHostAccess(this.name, this.record.state, access);
  }

  private checkRange(offset: number, length: number, code: ErrorCode): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || length < 0 ||
        !rangeInside(this.geometry, offset, length)) {
      throw new TidemarkError(code, `range ${offset}+${length} is outside volume ${this.name} (${this.geometry.sizeBytes} bytes)`,
        { volume: this.name, offset, length });
    }
  }

  async read(offset: number, length: number, target?: Uint8Array): Promise<Uint8Array> {
    const started = this.deps.nowMs();
    this.checkAccess('read');
    this.checkRange(offset, length, ErrorCode.OutOfRange);
    const buffer = target ?? new Uint8Array(length);
    if (length > 0) {
      if (this.participants.length > 0) {
        const { first, last } = tracksOf(this.geometry, offset, length);
        const { positions, owners } = this.planPositions();
        for (const step of planRead(positions, first, last)) await owners[step.at]!.execute(step, positions[step.at]!, undefined);
      }
      await this.store.readInto(offset, length, buffer, 0);
    }
    this.deps.onOp?.('read', length, started);
    return buffer;
  }

  write(offset: number, data: Uint8Array, fua = false): Promise<void> {
    return this.mutate('write', 'host', offset, data.length, fua, data, undefined, () => this.store.write(offset, data));
  }

  /** Zeroes a range; `allocate` false allows punching a hole. */
  writeZeroes(offset: number, length: number, allocate: boolean, fua = false): Promise<void> {
    return this.inPieces(offset, length, (o, l, ordered) =>
      this.mutate('zero', 'host', o, l, fua, undefined, undefined, () => this.store.writeZeroes(o, l, allocate), ordered),
    { kind: 'zero', source: 'host', fua, skipPosition: undefined });
  }

  trim(offset: number, length: number, fua = false): Promise<void> {
    return this.inPieces(offset, length, (o, l, ordered) =>
      this.mutate('trim', 'host', o, l, fua, undefined, undefined, () => this.store.trim(o, l), ordered),
    { kind: 'trim', source: 'host', fua, skipPosition: undefined });
  }

  /**
   * Zeroes and trims may cover gigabytes (a whole-disk discard); the activity log can hold only so
   * many extents hot at once, so such a range is applied in extent-aligned pieces, one after another.
   */
  private async inPieces(offset: number, length: number,
    apply: (offset: number, length: number, ordered: boolean) => Promise<void>,
    admission?: { kind: WriteKind; source: WriteSource; fua: boolean; skipPosition: string | undefined }): Promise<void> {
    const extentBytes = this.log.config.extentTracks * this.geometry.trackBytes;
    const pieceBytes = extentBytes * Math.max(1, Math.floor(this.log.config.maxActiveExtents / 2));
    if (length <= pieceBytes || !Number.isSafeInteger(offset) || !Number.isSafeInteger(length)) return apply(offset, length, false);
    // Admission work that writes into this volume itself (a clone's copy-out, an import's fetch)
    // is done before the whole range takes its place: once it holds it, that work would wait for
    // the range forever.
    if (admission && admission.source !== 'copy' && this.participants.length > 0 && rangeInside(this.geometry, offset, length)) {
      if (admission.source === 'host') this.checkAccess('write');
      const { first, last } = tracksOf(this.geometry, offset, length);
      // Only that work (planAdmission's 'early' scope): the rest is each piece's own admission.
      await this.admit({ ...admission, first, last, fromPosition: admission.skipPosition },
        { ...admission, offset, length, data: undefined, holds: undefined }, 'early');
    }
    // The whole range takes its place in the write ordering now, as one write would (lockRange
    // registers it before it waits): a later overlapping write waits for every piece, and the
    // pieces, already ordered, wait for no one.
    const release = await this.lockRange(offset, length);
    try {
      let at = offset;
      const end = offset + length;
      while (at < end) {
        const next = Math.min(end, (Math.floor(at / extentBytes) * extentBytes) + pieceBytes);
        await apply(at, next - at, true);
        at = next;
      }
    } finally {
      release();
    }
  }

  /** fdatasync for internal work (no host-access check). */
  internalFlush(): Promise<void> {
    return this.store.flush();
  }

  /** Reads for internal copies: no host-access check, no plan. */
  async internalRead(offset: number, length: number, target?: Uint8Array): Promise<Uint8Array> {
    this.checkRange(offset, length, ErrorCode.OutOfRange);
    const buffer = target ?? new Uint8Array(length);
    if (length > 0) await this.store.readInto(offset, length, buffer, 0);
    return buffer;
  }

  /** Writes for internal copies: ordered, logged and planned like host writes, but no host-access check. */
  internalWrite(offset: number, data: Uint8Array, options: InternalWriteOptions = {}): Promise<void> {
    return this.mutate('write', options.source ?? 'copy', offset, data.length, false, data, options.skipPosition,
      () => this.store.write(offset, data));
  }

  /** Zeroes for internal copies (a zeroed range shipped as a marker); may punch a hole. */
  internalZero(offset: number, length: number, options: InternalWriteOptions = {}): Promise<void> {
    return this.inPieces(offset, length, (o, l, ordered) => this.mutate('zero', options.source ?? 'copy', o, l, false, undefined,
      options.skipPosition, () => this.store.writeZeroes(o, l, false), ordered),
    { kind: 'zero', source: options.source ?? 'copy', fua: false, skipPosition: options.skipPosition });
  }

  /**
   * Excludes writes to a byte range until the returned function is called (an internal copy reads a
   * track consistently). Waits for overlapping writes in flight, like a write would.
   */
  async lockRange(offset: number, length: number): Promise<() => void> {
    const earlier = overlapping(this.inFlight, offset, length);
    const entry = new InFlightWrite(offset, offset + length);
    this.inFlight.add(entry);
    if (earlier.length > 0) await Promise.all(earlier);
    return () => {
      this.inFlight.delete(entry);
      entry.finish();
    };
  }

  /**
   * Opens a write window: new writes wait until the returned function is called; resolves once every
   * write already in flight has completed. Used to make a state change atomic with respect to writes.
   */
  async holdWrites(): Promise<() => void> {
    while (this.gate) await this.gate;
    this.gate = new Promise<void>((resolve) => { this.openGate = resolve; });
    this.windowsOpened++;
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight].map((w) => w.done));
    return () => {
      const open = this.openGate;
      this.gate = undefined;
      this.openGate = undefined;
      open?.();
    };
  }

  /** Every write completed before this call is durable when it resolves. */
  async flush(): Promise<void> {
    const started = this.deps.nowMs();
    this.checkAccess('read');
    await this.store.flush();
    if (this.participants.length > 0) {
      // The mirrors are made durable together (a FLUSH to a volume with two sync mirrors costs one round trip).
      const { positions, owners } = this.planPositions();
      const steps = planFlush(positions);
      await allOf(steps.map((step) => owners[step.at]!.execute(step, positions[step.at]!, undefined)));
    }
    this.deps.onOp?.('flush', 0, started);
  }

  async allocation(offset: number, length: number, maxExtents?: number): Promise<AllocationExtent[]> {
    this.checkAccess('read');
    this.checkRange(offset, length, ErrorCode.OutOfRange);
    return this.store.allocation(offset, length, maxExtents);
  }

  /** The allocation map for internal work (no host-access check). */
  async internalAllocation(offset: number, length: number): Promise<AllocationExtent[]> {
    this.checkRange(offset, length, ErrorCode.OutOfRange);
    return this.store.allocation(offset, length);
  }

  get canFastZero(): boolean {
    return this.store.canPunchHoles;
  }

  private async mutate(
    kind: WriteKind, source: WriteSource, offset: number, length: number, fua: boolean,
    data: Uint8Array | undefined, skipPosition: string | undefined, apply: () => Promise<void>,
    /** A piece of a large zero/trim whose whole range is already ordered and admitted. */
    ordered = false,
  ): Promise<void> {
    const started = this.deps.nowMs();
    const host = source === 'host';
    if (host) this.checkAccess('write');
    this.checkRange(offset, length, ErrorCode.NoSpace);
    if (length === 0) return;
    const { first, last } = tracksOf(this.geometry, offset, length);
    // A write needing more extents than the activity log can hold hot would never be admitted
    // (the log would rewrite its slots forever): refuse it instead.
    if (this.log.extentOf(last) - this.log.extentOf(first) + 1 > this.log.config.maxActiveExtents) {
      throw new TidemarkError(ErrorCode.LimitExceeded,
        `a ${length}-byte write spans more than the activity log's ${this.log.config.maxActiveExtents} extents`,
        { volume: this.name, offset, length });
    }
    // Planned at each decision point only if some feature takes part then (one may attach while the
    // write waits: a pair created, a clone session established).
    let planned: PlannedWrite | undefined;
    // One value for the whole write: admission steps see it too (a journal's token names its bytes).
    const applied: AppliedWrite = { kind, source, offset, length, data, fua, skipPosition, holds: undefined };
    if (source !== 'copy') {
      /**
       * Admission: undefined when the write is let in at once — no write window, no step with work
       * to wait for (the common case, a pair shipping or capturing it included), so it is ordered
       * without a turn of the event loop; otherwise settles once it is let in.
       */
      const pass = (): Promise<void> | undefined => {
        if (this.gate && !ordered) return this.gate.then(pass);
        const windows = this.windowsOpened;
        if (this.participants.length > 0) planned ??= { source, kind, first, last, fua, fromPosition: skipPosition };
        const admitting = planned ? this.admit(planned, applied) : undefined;
        // A write window opened while the plan's steps were running: the write must not slip into
        // it (a group's switch relies on no write being admitted while its windows are open).
        // Wait for it to close and plan again (the steps are idempotent): the positions may have
        // changed in the window (a restore started, a pair stopped).
        const again = (): Promise<void> | undefined => (ordered || (!this.gate && windows === this.windowsOpened) ? undefined : pass());
        return admitting ? admitting.then(again) : again();
      };
      if (host) {
        // A host write still in admission holds its place against later overlapping ones: they
        // wait until it is ordered, as they would wait for it once ordered (found by pair seed
        // 1220047752: a write waiting for a fan-out async pair's spill was overtaken by a later
        // overlapping one let in at once, whose acknowledged bytes it then overwrote on both arrays).
        // A write waiting for one ahead holds its own place the same way (a later write may overlap
        // it and not the one ahead). Each waits only for writes registered before it: no cycles.
        let waiting: InFlightWrite | undefined;
        try {
          if (!ordered && this.admitting.size > 0) {
            const ahead = overlapping(this.admitting, offset, length);
            if (ahead.length > 0) {
              waiting = new InFlightWrite(offset, offset + length);
              this.admitting.add(waiting);
              await Promise.all(ahead);
            }
          }
          const admitting = pass();
          if (admitting) {
            if (!waiting) this.admitting.add(waiting = new InFlightWrite(offset, offset + length));
            await admitting;
          }
        } finally {
          // The later writes run on only after this one has taken its place below (it yields no
          // earlier than its first await there).
          if (waiting) {
            this.admitting.delete(waiting);
            waiting.finish();
          }
        }
      } else {
        // Replica writes wait at write windows and pass admission like host writes, one after
        // another: unlike a host's concurrent writes, their order is the source's and is kept.
        const admitted = this.replicaAdmission.then(pass);
        this.replicaAdmission = admitted.catch(() => undefined);
        await admitted;
      }
    }

    // Overlapping writes apply in arrival order: wait for every earlier one that overlaps. A piece of
    // a large zero/trim already waited, as a whole, for the writes before it (and later ones wait for it).
    // The plan's steps alongside and after the local write run while the write holds its place, so
    // a later overlapping write reaches every mirror after this one.
    const earlier = ordered ? [] : overlapping(this.inFlight, offset, length);
    const entry = new InFlightWrite(offset, offset + length);
    this.inFlight.add(entry);
    try {
      if (earlier.length > 0) await Promise.all(earlier);
      // Mark the bitmaps in the same step as admission: a transaction built right after may evict
      // these extents, and the bitmaps it persists first must already hold this write's bits.
      const mark = (): void => {
        applyWrite(this.positions, first, last, source, skipPosition);
        this.bitmapsDirty = true;
      };
      if (this.log.admit(first, last)) mark();
      else await this.waitForActivityLog(first, last, mark);
      if (host) this.checkAccess('write');
      if (this.participants.length > 0) planned ??= { source, kind, first, last, fua, fromPosition: skipPosition };
      if (!planned && this.observers.length === 0) {
        await apply();
        if (fua) await this.store.flush();
      } else {
        await this.applyPlanned(planned, applied, apply);
      }
    } finally {
      this.inFlight.delete(entry);
      entry.finish();
    }
    if (host) this.deps.onOp?.(kind, length, started);
  }

  /** The participants' positions as values, and which participant gave each. */
  private planPositions(): { positions: PlanPosition[]; owners: WriteParticipant[] } {
    const positions: PlanPosition[] = [];
    const owners: WriteParticipant[] = [];
    for (const participant of this.participants) {
      const from = positions.length;
      participant.positions(positions);
      for (let i = from; i < positions.length; i++) owners.push(participant);
    }
    return { positions, owners };
  }

  /**
   * One admission pass: the plan's steps before the write is ordered, each done before the next.
   * Undefined when there are none (the common case costs no extra turn of the event loop).
   */
  private admit(planned: PlannedWrite, write: AppliedWrite, scope: AdmissionScope = 'all'): Promise<void> | undefined {
    const { positions, owners } = this.planPositions();
    const steps = planAdmission(positions, planned, scope);
    if (steps.length === 0) return undefined;
    if (steps[0]!.kind === 'refuse') throw steps[0]!.error;
    for (let i = 0; i < steps.length; i++) {
      const step = steps[i]!;
      const work = owners[step.at]!.execute(step, positions[step.at]!, write);
      if (work) return this.admitAfter(work, steps.slice(i + 1), positions, owners, write);
    }
    return undefined;
  }

  /** The rest of an admission pass, once a step's work is done: each step done before the next. */
  private async admitAfter(work: Promise<void>, steps: readonly AdmitStep[], positions: PlanPosition[],
    owners: WriteParticipant[], write: AppliedWrite): Promise<void> {
    await work;
    for (const step of steps) {
      const next = owners[step.at]!.execute(step, positions[step.at]!, write);
      if (next) await next;
    }
  }

  /**
   * Runs the write's apply plan (see ApplyPlan for the rules) around the local write: `apply`
   * writes the store, and a FUA write's flush follows it as part of the local write.
   */
  private async applyPlanned(planned: PlannedWrite | undefined, write: AppliedWrite, apply: () => Promise<void>): Promise<void> {
    for (const o of this.observers) o.begin?.(write);
    let plan: ApplyPlan | undefined;
    let positions: PlanPosition[] = [];
    let owners: WriteParticipant[] = [];
    if (planned) {
      ({ positions, owners } = this.planPositions());
      plan = planApply(positions, planned);
    }
    const steps = plan?.steps ?? [];
    // 'apply-local' is the volume's own step; every other names a position.
    const run = (step: PlanStep): Promise<void> | undefined =>
      step.kind === 'apply-local' ? undefined : owners[step.at]!.execute(step, positions[step.at]!, write);
    const alongside: Array<Promise<void>> = [];
    let i = 0;
    for (; i < steps.length && steps[i]!.kind !== 'apply-local'; i++) {
      const started = run(steps[i]!);
      if (started) {
        // Handled now (it may reject while the local write is still running); awaited below.
        started.catch(() => undefined);
        alongside.push(started);
      }
    }
    try {
      await apply();
      if (write.fua) await this.store.flush();
    } catch (error) {
      for (const step of plan?.ifLocalFails ?? []) {
        const work = run(step);
        if (work) await work;
      }
      await Promise.allSettled(alongside);
      throw error;
    }
    // The bytes are in the store now, whether or not work alongside failed the write: every
    // position still learns of them (a volume in several pairs: one pair refusing the write must
    // not keep the others from owing or capturing it — found by pair seed 53 with fan-out).
    const settled = alongside.length > 0 ? await Promise.allSettled(alongside) : [];
    for (const o of this.observers) o.applied?.(write);
    for (i++; i < steps.length; i++) {
      const work = run(steps[i]!);
      if (work) await work;
    }
    for (const s of settled) if (s.status === 'rejected') throw s.reason;
  }

  private waitForActivityLog(first: number, last: number, mark: () => void): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.log.request(first, last);
      this.alWaiters.push({ first, last, mark, resolve, reject });
      this.pumpActivityLog();
    });
  }

  private pumpActivityLog(): void {
    if (this.alPump) return;
    this.alPump = (async () => {
      try {
        while (this.log.hasWork) {
          const txn = this.log.nextTransaction();
          if (!txn) break;
          try {
            if (txn.evicted.length > 0) await this.writeEvicting(txn);
            else await this.deps.journal.writeSlot(txn.slotIndex, txn.bytes);
          } catch (error) {
            this.log.failed(txn.seq);
            this.fail(error);
            return;
          }
          this.log.durable(txn.seq);
          const waiting = this.alWaiters.splice(0);
          for (const w of waiting) {
            if (this.log.admit(w.first, w.last)) {
              w.mark();
              w.resolve();
            } else {
              this.log.request(w.first, w.last);
              this.alWaiters.push(w);
            }
          }
        }
      } finally {
        this.alPump = undefined;
      }
      if (this.log.hasWork) this.pumpActivityLog();
    })();
  }

  /** Metadata I/O failed: the volume stops taking writes rather than risk an unrecorded change. */
  private fail(error: unknown): void {
    this.failure = new TidemarkError(ErrorCode.Io, `volume ${this.name} failed: ${(error as Error).message}`);
    for (const w of this.alWaiters.splice(0)) w.reject(this.failure);
  }

  /** Persists every position's bitmap as the new durable baseline. */
  persistBitmaps(): Promise<void> {
    return this.persistInTurn(() => this.writeBitmaps());
  }

  /**
   * Writes a transaction that drops extents from the hot set, their bits durable by the time it is:
   * with the bitmap delta they need, one sync for both (the slot names the delta, and recovery
   * ignores a slot whose delta is torn), or after a persist of every bitmap.
   */
  private writeEvicting(txn: Transaction): Promise<void> {
    return this.persistInTurn(async () => {
      const delta = this.deltaFor(txn.evicted);
      if (delta === 'none-needed') return this.deps.journal.writeSlot(txn.slotIndex, txn.bytes);
      if (delta === undefined) {
        await this.writeBitmaps();
        return this.deps.journal.writeSlot(txn.slotIndex, txn.bytes);
      }
      const { config } = this.log;
      const slot = encodeSlot(txn.seq, config.extentTracks, txn.extents, config.slotBytes, { generation: this.deltas.baseGeneration, seq: delta.seq });
      try {
        await this.deps.journal.writeSlots([{ index: config.slotCount + delta.seq, data: delta.bytes }, { index: txn.slotIndex, data: slot }]);
      } catch (error) {
        this.deltas.deltaFailed();
        throw error;
      }
      this.deltas.deltaDone();
      for (const { id, runs } of delta.entries) {
        const image = this.durable.get(id)!;
        for (const run of runs) image.setRange(run.start, run.end - 1);
      }
    });
  }

  /**
   * One persist at a time, each reading the bitmaps when it starts: concurrent writes of one record
   * may complete in any order, and a slow older snapshot landing last would lose bits (an eviction's
   * bits overwritten by an earlier reset's snapshot); a delta is computed against the record before it.
   */
  private persistInTurn(work: () => Promise<void>): Promise<void> {
    const previous = this.persisting;
    const run = (async () => {
      await previous;
      await work();
    })();
    this.persisting = run.catch(() => undefined);
    return run;
  }

  private async writeBitmaps(): Promise<void> {
    for (const prepare of this.beforePersist) await prepare();
    this.bitmapsDirty = false;
    // Extension state whose owner has not registered yet (recovery persists before features load)
    // is carried over as it was loaded, never dropped.
    const extensions: Record<string, unknown> = { ...this.loadedExtensions };
    for (const [key, provide] of this.extensionProviders) extensions[key] = provide();
    const snapshot = this.positions.map((p) => {
      const bits = p.invalid.copy();
      const extra = this.persistOverlays.get(p.id)?.();
      return { ...p, invalid: extra === undefined ? bits : bits.or(extra) };
    });
    const generation = this.deltas.fullStarted();
    try {
      await this.deps.meta.write(bitmapsKey(this.name), encodePositions(snapshot, extensions, generation));
    } catch (error) {
      this.deltas.fullFailed();
      throw error;
    }
    this.deltas.fullDone(generation);
    this.durable = new Map(snapshot.map((p) => [p.id, p.invalid]));
  }

  /**
   * The bitmap delta that makes the bits of `extents` durable: the tracks set there (in memory or
   * in an overlay) that the durable image lacks; no flush needed (it adds no cleared bit).
   * 'none-needed' when the durable image has them all; undefined when no delta can (the ring is
   * full, it does not fit a slot, a position is newer than the record): persist everything.
   */
  private deltaFor(extents: readonly number[]): { seq: number; bytes: Uint8Array; entries: PositionDelta[] } | 'none-needed' | undefined {
    const entries = evictionDelta(this.positions, extents,
      { extentTracks: this.log.config.extentTracks, trackCount: this.geometry.trackCount, hostWrites: this.record.state === 'ready' },
      (id) => this.persistOverlays.get(id)?.(), (id) => this.durable.get(id));
    if (!entries) return undefined;
    if (entries.length === 0) return 'none-needed';
    const seq = this.deltas.nextDelta();
    if (seq === undefined) return undefined;
    const bytes = encodeDelta({ generation: this.deltas.baseGeneration, seq, positions: entries }, this.deps.journal.slotBytes);
    if (!bytes) {
      this.deltas.deltaSkipped();
      return undefined;
    }
    return { seq, bytes, entries };
  }

  /**
   * Bits of a position to persist as set although they are clear in memory: work done whose data is
   * not durable yet (a clone copy that finished after the flush before this persist began). Read
   * after the beforePersist hooks ran; undefined removes it.
   */
  setPersistOverlay(positionId: string, overlay: (() => TrackBitmap) | undefined): void {
    if (overlay) this.persistOverlays.set(positionId, overlay);
    else this.persistOverlays.delete(positionId);
  }

  /** Registers state persisted atomically with this volume's bitmaps under `key`. */
  setExtension(key: string, provider: ExtensionProvider | undefined): void {
    if (provider) this.extensionProviders.set(key, provider);
    else this.extensionProviders.delete(key);
  }

  addPosition(position: MirrorPosition): void {
    assert(position.invalid.size === this.geometry.trackCount, 'position bitmap size');
    if (this.positions.some((p) => p.id === position.id)) {
      throw new TidemarkError(ErrorCode.AlreadyExists, `volume ${this.name} already has position ${position.id}`);
    }
    this.positions.push(position);
  }

  removePosition(id: string): void {
    const i = this.positions.findIndex((p) => p.id === id);
    if (i >= 0) this.positions.splice(i, 1);
  }

  /**
   * A position's set bits as durable now, record and deltas (undefined: never persisted). After a
   * crash the volume restarts from this figure plus the tracks of the activity log's hot extents.
   */
  persistedInvalid(id: string): number | undefined {
    return this.durable.get(id)?.count();
  }

  findPosition(id: string): MirrorPosition | undefined {
    return this.positions.find((p) => p.id === id);
  }

  private async writeCleanLog(): Promise<void> {
    while (this.alPump) await this.alPump;
    const txn = this.log.cleanTransaction();
    try {
      await this.deps.journal.writeSlot(txn.slotIndex, txn.bytes);
    } catch (error) {
      this.log.failed(txn.seq);
      throw error;
    }
    this.log.durable(txn.seq);
  }

  position(id: string): MirrorPosition {
    const p = this.positions.find((x) => x.id === id);
    if (!p) throw new TidemarkError(ErrorCode.NotFound, `volume ${this.name} has no position ${id}`);
    return p;
  }

  /**
   * Starts a new change-tracking interval: clears the tracker, keeping the tracks of writes still in
   * flight (they may land after the reset), and makes that durable.
   */
  async resetChanges(): Promise<void> {
    const tracker = this.position(CHANGES_POSITION).invalid;
    tracker.clearAll();
    for (const w of this.inFlight) {
      const { first, last } = tracksOf(this.geometry, w.start, w.end - w.start);
      tracker.setRange(first, last);
    }
    await this.persistBitmaps();
  }

  /**
   * Exchanges storage with `other` (a migration's cutover): hosts keep their connections to this
   * volume and read and write the other storage from the next operation on. Call it inside both
   * volumes' write windows (`holdWrites`), with no read of either in flight that must see the old one.
   */
  exchangeStore(other: Volume): void {
    assert(other.geometry.sizeBytes === this.geometry.sizeBytes && other.geometry.trackBytes === this.geometry.trackBytes,
      'stores exchanged between volumes of one geometry');
    assert(this.inFlight.size === 0 && other.inFlight.size === 0, 'stores exchanged with writes in flight');
    [this.store, other.store] = [other.store, this.store];
  }

  /** Waits for in-flight writes, makes data and bitmaps durable and empties the activity log. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight].map((w) => w.done));
    while (this.alPump) await this.alPump;
    if (!this.failure) {
      await this.store.flush();
      await this.persistBitmaps();
      await this.writeCleanLog();
    }
    await this.deps.journal.close();
    await this.store.close();
    assert(this.inFlight.size === 0, 'writes in flight after close');
  }

  /** Abandons the volume without any clean-up I/O (the simulator's crash). */
  abandon(): void {
    this.closed = true;
  }

  get needsBitmapPersist(): boolean {
    return this.bitmapsDirty;
  }
}

/** One promise for several positions' work (undefined when none has any). */
function allOf(started: ReadonlyArray<Promise<void> | undefined>): Promise<void> | undefined {
  const pending = started.filter((p): p is Promise<void> => p !== undefined);
  if (pending.length <= 1) return pending[0];
  // Each is handled: one rejecting must not leave the others' rejections unobserved.
  for (const p of pending) p.catch(() => undefined);
  return Promise.all(pending).then(() => undefined);
}
