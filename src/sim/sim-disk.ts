// A simulated disk (BlockStore) with a volatile write cache. A completed write is visible to reads
// at once but durable only after a later flush() completes. Operations complete after seeded
// latencies, out of order. crash() decides, per unflushed or in-flight write and per 4 KiB sector,
// whether it reached the media (lost, kept or torn), then drops every pending completion.
import type { Prng } from '../core/lib/prng.js';
import type { AllocationExtent, BlockStore } from '../ports/block-store.js';
import { drawLatency, FAST_DEVICE, type LatencyProfile } from './latency.js';
import type { Scheduler } from './scheduler.js';

export const SECTOR_BYTES = 4096;

interface PendingWrite {
  readonly offset: number;
  readonly length: number;
  /** undefined: zeroes; `punch` says whether fully covered sectors become holes. */
  readonly data: Uint8Array | undefined;
  readonly punch: boolean;
}

type Sectors = (Uint8Array | undefined)[];

export interface SimDiskOptions {
  readonly latency?: LatencyProfile;
  readonly flushLatency?: LatencyProfile;
  /** Called when a mutation (write, zeroes, trim) is submitted: its bytes may change from now on. */
  readonly onMutate?: (offset: number, length: number) => void;
}

export interface CrashReport {
  readonly lost: number;
  readonly kept: number;
  readonly torn: number;
}

export class SimDisk implements BlockStore {
  readonly canPunchHoles = true;
  private visible: Sectors;
  private durable: Sectors;
  /** Completed but not yet durable, in completion order. */
  private unflushed: PendingWrite[] = [];
  /** Submitted, not yet completed. */
  private readonly inFlight = new Set<PendingWrite>();
  private epoch = 0;
  private closed = false;
  private readonly latency: LatencyProfile;
  private readonly flushLatency: LatencyProfile;

  constructor(
    readonly sizeBytes: number,
    private readonly scheduler: Scheduler,
    private readonly prng: Prng,
    private readonly options: SimDiskOptions = {},
  ) {
    const sectors = Math.ceil(sizeBytes / SECTOR_BYTES);
    this.visible = new Array<Uint8Array | undefined>(sectors).fill(undefined);
    this.durable = new Array<Uint8Array | undefined>(sectors).fill(undefined);
    this.latency = options.latency ?? FAST_DEVICE;
    this.flushLatency = options.flushLatency ?? { minMs: 0.2, maxMs: 3, slowChance: 0.05, slowMs: 20 };
  }

  /** Completes `work` after a seeded delay unless the disk crashes first. */
  private later<T>(profile: LatencyProfile, work: () => T): Promise<T> {
    if (this.closed) return Promise.reject(new Error('simulated disk is closed'));
    const epoch = this.epoch;
    return new Promise<T>((resolve, reject) => {
      this.scheduler.at(drawLatency(this.prng, profile), () => {
        if (epoch !== this.epoch) return; // crashed: the caller never hears back
        try {
          resolve(work());
        } catch (error) {
          reject(error);
        }
      });
    });
  }

  private checkRange(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 ||
        offset + length > this.sizeBytes) {
      throw new RangeError(`range ${offset}+${length} outside simulated disk of ${this.sizeBytes} bytes`);
    }
  }

  readInto(offset: number, length: number, target: Uint8Array, targetOffset = 0): Promise<void> {
    this.checkRange(offset, length);
    return this.later(this.latency, () => {
      copyOut(this.visible, offset, length, target, targetOffset);
    });
  }

  write(offset: number, data: Uint8Array): Promise<void> {
    this.checkRange(offset, data.length);
    return this.mutate({ offset, length: data.length, data: data.slice(), punch: false });
  }

  writeZeroes(offset: number, length: number, allocate: boolean): Promise<void> {
    this.checkRange(offset, length);
    return this.mutate({ offset, length, data: undefined, punch: !allocate });
  }

  trim(offset: number, length: number): Promise<void> {
    this.checkRange(offset, length);
    return this.mutate({ offset, length, data: undefined, punch: true });
  }

  private mutate(write: PendingWrite): Promise<void> {
    if (this.closed) return Promise.reject(new Error('simulated disk is closed'));
    if (write.length === 0) return Promise.resolve();
    this.options.onMutate?.(write.offset, write.length);
    this.inFlight.add(write);
    return this.later(this.latency, () => {
      this.inFlight.delete(write);
      apply(this.visible, write, 0, write.length);
      this.unflushed.push(write);
    });
  }

  flush(): Promise<void> {
    const covered = this.unflushed.length;
    return this.later(this.flushLatency, () => {
      // Writes completed before this flush was issued are the first `covered` entries still listed,
      // less any that another flush made durable meanwhile (flushes drain from the front).
      const done = this.unflushed.splice(0, Math.min(covered, this.unflushed.length));
      for (const w of done) apply(this.durable, w, 0, w.length);
    });
  }

  allocation(offset: number, length: number, maxExtents = Infinity): Promise<AllocationExtent[]> {
    this.checkRange(offset, length);
    return this.later(this.latency, () => allocationOf(this.visible, offset, length).slice(0, maxExtents));
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  /** Lets a new owner use the disk after close() or crash(). */
  reopen(): void {
    this.closed = false;
  }

  /**
   * Power loss: every unflushed write (completed or in flight) is lost, kept or torn per sector,
   * applied in the order it was completed/submitted; pending completions never fire.
   */
  crash(): CrashReport {
    let lost = 0;
    let kept = 0;
    let torn = 0;
    for (const w of [...this.unflushed, ...this.inFlight]) {
      const roll = this.prng.next();
      if (roll < 0.35) {
        lost++;
      } else if (roll < 0.7) {
        kept++;
        apply(this.durable, w, 0, w.length);
      } else {
        torn++;
        let at = w.offset;
        const end = w.offset + w.length;
        while (at < end) {
          const pieceEnd = Math.min(end, (Math.floor(at / SECTOR_BYTES) + 1) * SECTOR_BYTES);
          if (this.prng.chance(0.5)) apply(this.durable, w, at - w.offset, pieceEnd - w.offset);
          at = pieceEnd;
        }
      }
    }
    this.unflushed = [];
    this.inFlight.clear();
    this.epoch++;
    this.visible = this.durable.map((s) => s?.slice());
    return { lost, kept, torn };
  }

  /**
   * The process died but the machine did not: each write the process had handed to the kernel
   * either completed or never started (none lands later, after a new process has begun writing);
   * completed data stays in the cache, not yet durable. Pending completions never fire.
   */
  processExit(): void {
    for (const w of this.inFlight) {
      if (!this.prng.chance(0.5)) continue;
      apply(this.visible, w, 0, w.length);
      this.unflushed.push(w);
    }
    this.inFlight.clear();
    this.epoch++;
  }

  /** Mutations handed to the disk and not yet completed (their bytes may still change). */
  mutationsInFlight(): { offset: number; length: number }[] {
    return [...this.inFlight].map((w) => ({ offset: w.offset, length: w.length }));
  }

  /** Bytes as a reader sees them now, durable or not (for oracles). */
  visibleBytes(offset: number, length: number): Uint8Array {
    const out = new Uint8Array(length);
    copyOut(this.visible, offset, length, out, 0);
    return out;
  }

  /** Bytes as they are on the media now (for tests). */
  durableBytes(offset: number, length: number): Uint8Array {
    const out = new Uint8Array(length);
    copyOut(this.durable, offset, length, out, 0);
    return out;
  }
}

function copyOut(sectors: Sectors, offset: number, length: number, target: Uint8Array, targetOffset: number): void {
  let at = offset;
  const end = offset + length;
  while (at < end) {
    const index = Math.floor(at / SECTOR_BYTES);
    const within = at - index * SECTOR_BYTES;
    const n = Math.min(SECTOR_BYTES - within, end - at);
    const sector = sectors[index];
    const dest = targetOffset + (at - offset);
    if (sector) target.set(sector.subarray(within, within + n), dest);
    else target.fill(0, dest, dest + n);
    at += n;
  }
}

/** Applies bytes [from, to) of a write (relative to its offset) to a sector array. */
function apply(sectors: Sectors, w: PendingWrite, from: number, to: number): void {
  let at = w.offset + from;
  const end = w.offset + to;
  while (at < end) {
    const index = Math.floor(at / SECTOR_BYTES);
    const within = at - index * SECTOR_BYTES;
    const n = Math.min(SECTOR_BYTES - within, end - at);
    if (w.data) {
      const sector = sectors[index] ?? (sectors[index] = new Uint8Array(SECTOR_BYTES));
      sector.set(w.data.subarray(at - w.offset, at - w.offset + n), within);
    } else if (w.punch && n === SECTOR_BYTES) {
      sectors[index] = undefined;
    } else {
      const sector = sectors[index];
      if (sector) sector.fill(0, within, within + n);
      else if (!w.punch) sectors[index] = new Uint8Array(SECTOR_BYTES);
    }
    at += n;
  }
}

function allocationOf(sectors: Sectors, offset: number, length: number): AllocationExtent[] {
  const out: AllocationExtent[] = [];
  let at = offset;
  const end = offset + length;
  while (at < end) {
    const index = Math.floor(at / SECTOR_BYTES);
    const n = Math.min((index + 1) * SECTOR_BYTES, end) - at;
    const kind = sectors[index] ? 'data' : 'hole';
    const last = out[out.length - 1];
    if (last && last.kind === kind) out[out.length - 1] = { offset: last.offset, length: last.length + n, kind };
    else out.push({ offset: at, length: n, kind });
    at += n;
  }
  return out;
}
