// One volume's I/O path: host access checks, write ordering, the activity log, mirror positions,
// and durability. It depends only on ports, so the daemon runs it on files and the simulator runs
// the same code on a faulty in-memory disk.
import { ActivityLog, DEFAULT_ACTIVITY_LOG, recoverLog, type ActivityLogConfig } from '../../core/bitmap/activity-log.js';
import { TrackBitmap } from '../../core/bitmap/track-bitmap.js';
import { ErrorCode, TidemarkError } from '../../core/errors.js';
import { assert } from '../../core/lib/assert.js';
import { makeGeometry, rangeInside, tracksOf, type Geometry } from '../../core/volume/geometry.js';
import {
  applyHostWrite, decodePositions, encodePositions, markRecovered, type MirrorPosition,
} from '../../core/volume/mirror-positions.js';
import { checkHostAccess, type HostAccess, type VolumeState } from '../../core/volume/state.js';
import type { VolumeRecord } from '../../core/volume/volume-record.js';
import type { AllocationExtent, BlockStore } from '../../ports/block-store.js';
import type { MetaStore, SlotJournal } from '../../ports/meta-store.js';

export type OpKind = 'read' | 'write' | 'zero' | 'trim' | 'flush';

export interface VolumeDeps {
  readonly store: BlockStore;
  readonly meta: MetaStore;
  readonly journal: SlotJournal;
  readonly activityLog?: ActivityLogConfig;
  /** Called after every completed host operation (for metrics). */
  readonly onOp?: (kind: OpKind, bytes: number, startedAtMs: number) => void;
  readonly nowMs: () => number;
}

interface InFlightWrite {
  readonly start: number;
  readonly end: number;
  readonly done: Promise<void>;
}

interface AlWaiter {
  readonly first: number;
  readonly last: number;
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
}

export const CHANGES_POSITION = 'changes';

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
  private readonly alWaiters: AlWaiter[] = [];
  private alPump: Promise<void> | undefined;
  private bitmapsDirty = false;
  private closed = false;
  private failure: TidemarkError | undefined;

  private constructor(
    private record: VolumeRecord,
    private readonly deps: VolumeDeps,
    private readonly log: ActivityLog,
    readonly positions: MirrorPosition[],
    readonly recovery: RecoveryReport,
  ) {
    this.geometry = makeGeometry(record.sizeBytes, record.trackBytes);
  }

  /** Opens a volume, recovering its bitmaps from the last clean state plus the activity log. */
  static async open(record: VolumeRecord, deps: VolumeDeps): Promise<Volume> {
    const geometry = makeGeometry(record.sizeBytes, record.trackBytes);
    const config = deps.activityLog ?? activityLogFor(geometry);
    const recovered = recoverLog(await deps.journal.readAll());
    if (recovered && recovered.extents.length > 0 && recovered.extentTracks !== config.extentTracks) {
      throw new TidemarkError(ErrorCode.MetadataCorrupt,
        `activity log of ${record.name} uses ${recovered.extentTracks}-track extents, expected ${config.extentTracks}`);
    }
    const stored = await deps.meta.read(bitmapsKey(record.name));
    let positions: MirrorPosition[];
    if (stored === undefined) {
      positions = [{ id: CHANGES_POSITION, kind: 'change-tracker', invalid: new TrackBitmap(geometry.trackCount) }];
    } else {
      const decoded = decodePositions(stored, geometry.trackCount);
      if (!decoded) throw new TidemarkError(ErrorCode.MetadataCorrupt, `bitmaps of volume ${record.name} do not decode`);
      positions = decoded;
    }
    const hot = recovered?.extents ?? [];
    const runs = hot.map((e) => ({
      first: e * config.extentTracks,
      last: Math.min(geometry.trackCount - 1, (e + 1) * config.extentTracks - 1),
    })).filter((r) => r.first < geometry.trackCount);
    const before = positions.map((p) => p.invalid.count());
    markRecovered(positions, runs);
    const tracksMarked = positions.reduce((n, p, i) => Math.max(n, p.invalid.count() - before[i]!), 0);
    const log = new ActivityLog(config, recovered);
    const volume = new Volume(record, deps, log, positions, { crashed: hot.length > 0, tracksMarked });
    if (hot.length > 0) {
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

  /** Changes the host-access state durably. */
  async setState(state: VolumeState): Promise<void> {
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
    if (length > 0) await this.deps.store.readInto(offset, length, buffer, 0);
    this.deps.onOp?.('read', length, started);
    return buffer;
  }

  write(offset: number, data: Uint8Array, fua = false): Promise<void> {
    return this.mutate('write', offset, data.length, fua, () => this.deps.store.write(offset, data));
  }

  /** Zeroes a range; `allocate` false allows punching a hole. */
  writeZeroes(offset: number, length: number, allocate: boolean, fua = false): Promise<void> {
    return this.mutate('zero', offset, length, fua, () => this.deps.store.writeZeroes(offset, length, allocate));
  }

  trim(offset: number, length: number, fua = false): Promise<void> {
    return this.mutate('trim', offset, length, fua, () => this.deps.store.trim(offset, length));
  }

  /** Every write completed before this call is durable when it resolves. */
  async flush(): Promise<void> {
    const started = this.deps.nowMs();
    this.checkAccess('read');
    await this.deps.store.flush();
    this.deps.onOp?.('flush', 0, started);
  }

  async allocation(offset: number, length: number): Promise<AllocationExtent[]> {
    this.checkAccess('read');
    this.checkRange(offset, length, ErrorCode.OutOfRange);
    return this.deps.store.allocation(offset, length);
  }

  get canFastZero(): boolean {
    return this.deps.store.canPunchHoles;
  }

  private async mutate(kind: OpKind, offset: number, length: number, fua: boolean, apply: () => Promise<void>): Promise<void> {
    const started = this.deps.nowMs();
    this.checkAccess('write');
    this.checkRange(offset, length, ErrorCode.NoSpace);
    if (length === 0) return;
    const { first, last } = tracksOf(this.geometry, offset, length);

    // Overlapping writes apply in arrival order: wait for every earlier one that overlaps.
    const earlier: Promise<void>[] = [];
    for (const w of this.inFlight) if (w.start < offset + length && offset < w.end) earlier.push(w.done);
    let finish!: () => void;
    const entry: InFlightWrite = { start: offset, end: offset + length, done: new Promise<void>((r) => { finish = r; }) };
    this.inFlight.add(entry);
    try {
      if (earlier.length > 0) await Promise.all(earlier);
      if (!this.log.admit(first, last)) await this.waitForActivityLog(first, last);
      this.checkAccess('write');
      applyHostWrite(this.positions, first, last);
      this.bitmapsDirty = true;
      await apply();
      if (fua) await this.deps.store.flush();
    } finally {
      this.inFlight.delete(entry);
      finish();
    }
    this.deps.onOp?.(kind, length, started);
  }

  private waitForActivityLog(first: number, last: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.log.request(first, last);
      this.alWaiters.push({ first, last, resolve, reject });
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
            if (txn.evicted.length > 0) await this.persistBitmaps();
            await this.deps.journal.writeSlot(txn.slotIndex, txn.bytes);
          } catch (error) {
            this.log.failed(txn.seq);
            this.fail(error);
            return;
          }
          this.log.durable(txn.seq);
          const waiting = this.alWaiters.splice(0);
          for (const w of waiting) {
            if (this.log.admit(w.first, w.last)) w.resolve();
            else {
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
  async persistBitmaps(): Promise<void> {
    this.bitmapsDirty = false;
    await this.deps.meta.write(bitmapsKey(this.name), encodePositions(this.positions));
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

  /** Waits for in-flight writes, makes data and bitmaps durable and empties the activity log. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight].map((w) => w.done));
    while (this.alPump) await this.alPump;
    if (!this.failure) {
      await this.deps.store.flush();
      await this.persistBitmaps();
      await this.writeCleanLog();
    }
    await this.deps.journal.close();
    await this.deps.store.close();
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
