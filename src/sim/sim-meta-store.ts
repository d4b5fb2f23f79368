// Simulated metadata: a MetaStore whose record writes replace atomically (a write in flight at a
// crash leaves the old record or the new one, never a mix) and a SlotJournal whose slot writes go
// in place (a write in flight at a crash may leave a slot torn, old and new 512-byte sectors mixed).
// Completions arrive after seeded latencies, out of order; a crash drops every pending completion.
import type { Prng } from '../core/lib/prng.js';
import type { MetaStore, SlotJournal, SlotWrite } from '../ports/meta-store.js';
import { drawLatency, type LatencyProfile } from './latency.js';
import type { Scheduler } from './scheduler.js';

const META_LATENCY: LatencyProfile = { minMs: 0.2, maxMs: 3, slowChance: 0.05, slowMs: 20 };
const JOURNAL_SECTOR_BYTES = 512;

/** Shared plumbing: seeded completion that a crash cancels. */
class SimDevice {
  protected epoch = 0;

  constructor(
    protected readonly scheduler: Scheduler,
    protected readonly prng: Prng,
    protected readonly latency: LatencyProfile = META_LATENCY,
  ) {}

  protected later<T>(work: () => T): Promise<T> {
    const epoch = this.epoch;
    return new Promise<T>((resolve, reject) => {
      this.scheduler.at(drawLatency(this.prng, this.latency), () => {
        if (epoch !== this.epoch) return;
        try {
          resolve(work());
        } catch (error) {
          reject(error);
        }
      });
    });
  }
}

interface MetaWrite {
  readonly key: string;
  /** undefined: a delete. */
  readonly data: Uint8Array | undefined;
}

export class SimMetaStore extends SimDevice implements MetaStore {
  private readonly records = new Map<string, Uint8Array>();
  private readonly inFlight = new Set<MetaWrite>();

  read(key: string): Promise<Uint8Array | undefined> {
    return this.later(() => this.records.get(key)?.slice());
  }

  write(key: string, data: Uint8Array): Promise<void> {
    return this.change({ key, data: data.slice() });
  }

  delete(key: string): Promise<void> {
    return this.change({ key, data: undefined });
  }

  list(prefix: string): Promise<string[]> {
    return this.later(() => [...this.records.keys()].filter((k) => k.startsWith(prefix)).sort());
  }

  private change(op: MetaWrite): Promise<void> {
    this.inFlight.add(op);
    return this.later(() => {
      this.inFlight.delete(op);
      this.applyOp(op);
    });
  }

  private applyOp(op: MetaWrite): void {
    if (op.data) this.records.set(op.key, op.data);
    else this.records.delete(op.key);
  }

  /** Power loss: each change in flight either happened (atomically) or did not. */
  crash(): void {
    for (const op of this.inFlight) if (this.prng.chance(0.5)) this.applyOp(op);
    this.inFlight.clear();
    this.epoch++;
  }

  /** The durable record (for tests and the oracle's reports). */
  peek(key: string): Uint8Array | undefined {
    return this.records.get(key);
  }
}

export class SimSlotJournal extends SimDevice implements SlotJournal {
  private readonly slots: Uint8Array[];
  private readonly inFlight = new Set<SlotWrite>();
  private closed = false;

  constructor(
    readonly slotCount: number,
    readonly slotBytes: number,
    scheduler: Scheduler,
    prng: Prng,
    latency?: LatencyProfile,
  ) {
    super(scheduler, prng, latency);
    this.slots = Array.from({ length: slotCount }, () => new Uint8Array(slotBytes));
  }

  writeSlot(index: number, data: Uint8Array): Promise<void> {
    return this.writeSlots([{ index, data }]);
  }

  /** Every slot of the call is in flight until its one completion: a crash treats each on its own. */
  writeSlots(writes: readonly SlotWrite[]): Promise<void> {
    if (this.closed) return Promise.reject(new Error('simulated journal is closed'));
    for (const { index, data } of writes) {
      if (!Number.isInteger(index) || index < 0 || index >= this.slotCount || data.length !== this.slotBytes) {
        return Promise.reject(new RangeError(`slot ${index} write of ${data.length} bytes`));
      }
    }
    const ops = writes.map((w): SlotWrite => ({ index: w.index, data: w.data.slice() }));
    for (const op of ops) this.inFlight.add(op);
    return this.later(() => {
      for (const op of ops) {
        this.inFlight.delete(op);
        this.slots[op.index]!.set(op.data);
      }
    });
  }

  readAll(): Promise<Uint8Array[]> {
    if (this.closed) return Promise.reject(new Error('simulated journal is closed'));
    return this.later(() => this.slots.map((s) => s.slice()));
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  reopen(): void {
    this.closed = false;
  }

  /** Power loss: a slot write in flight is lost, complete, or torn sector by sector. */
  crash(): { torn: number } {
    let torn = 0;
    for (const op of this.inFlight) {
      const roll = this.prng.next();
      if (roll < 0.3) continue;
      const slot = this.slots[op.index]!;
      if (roll < 0.6) {
        slot.set(op.data);
        continue;
      }
      torn++;
      for (let at = 0; at < this.slotBytes; at += JOURNAL_SECTOR_BYTES) {
        if (this.prng.chance(0.5)) slot.set(op.data.subarray(at, Math.min(this.slotBytes, at + JOURNAL_SECTOR_BYTES)), at);
      }
    }
    this.inFlight.clear();
    this.epoch++;
    return { torn };
  }
}
