// R1's spill of one async pair's cycles (SPEC §5: cycles that outgrow memory spill to disk): the
// SpillWrites and SpillReads of R1Cycles performed on a SpillStore, one file per cycle with record r
// at r × recordBytes. Each file has one queue, so the writes and reads of a slot happen in the
// order the machine asked for them (a slot spilled twice and then read back must see both writes).
// A spill batch goes to the store as one write of its pieces; adjacent slots are read as one read.
//
// A failed store operation is reported once (onError: the pair falls back to its bitmaps) and
// everything after it is dropped; nothing here is ever needed after the cycles stop.
import type { SpillRead, SpillWrite } from '../../core/replication/cycles/r1-cycles.js';
import type { SpillStore } from '../../ports/spill-store.js';

/** Bytes per coalesced read. */
const MAX_READ_BYTES = 1024 * 1024;

export class CycleSpill {
  private readonly queues = new Map<number, Promise<void>>();
  /** Cycles with a file not yet deleted (at release, or at close). */
  private readonly files = new Set<number>();
  private stopped = false;
  private closing: Promise<void> | undefined;
  /** Bytes taken out of the cycles and not yet written: still in memory until the store has them. */
  queuedBytes = 0;
  private readonly drainWaiters: Array<{ below: number; resolve: () => void }> = [];

  constructor(
    private readonly store: SpillStore,
    private readonly pairId: string,
    private readonly recordBytes: number,
    private readonly onError: (error: unknown) => void,
    /** The record buffers of a batch once the store wrote them (nothing here refers to them any more). */
    private readonly onWritten?: (buffers: Uint8Array[]) => void,
  ) {}

  /** Writes what R1Cycles.takeSpill returned into the slots (cycle, record), in order per cycle. */
  write(writes: readonly SpillWrite[]): void {
    if (this.stopped || writes.length === 0) return;
    const byCycle = new Map<number, SpillWrite[]>();
    for (const w of writes) {
      let list = byCycle.get(w.cycle);
      if (!list) byCycle.set(w.cycle, list = []);
      list.push(w);
    }
    for (const [cycle, list] of byCycle) {
      // One takeSpill names a slot at most once, so the pieces of one call never overlap: the store
      // writes them all in one operation (in file order).
      const pieces = list.flatMap((w) => w.ranges.map((r) => ({ offset: w.record * this.recordBytes + r.start, data: w.data.subarray(r.start, r.end) })))
        .sort((a, b) => a.offset - b.offset);
      let bytes = 0;
      for (const p of pieces) bytes += p.data.length;
      this.queuedBytes += bytes;
      this.files.add(cycle);
      let written = false;
      void this.enqueue(cycle, async () => {
        await this.store.write(this.pairId, cycle, pieces);
        written = true;
      }).then(() => {
        this.queuedBytes -= bytes;
        this.wakeDrainWaiters();
        if (written && !this.stopped) this.onWritten?.(list.map((w) => w.data as Uint8Array));
      });
    }
  }

  /**
   * Reads the slots R1Cycles.nextToSend asked for (all of one cycle), after every earlier write of
   * that cycle; resolves to one record-sized slot per read, in order, or undefined once stopped.
   */
  read(reads: readonly SpillRead[]): Promise<Uint8Array[] | undefined> {
    if (this.stopped || reads.length === 0) return Promise.resolve(this.stopped ? undefined : []);
    const cycle = reads[0]!.cycle;
    const rb = this.recordBytes;
    let result: Uint8Array[] | undefined;
    return this.enqueue(cycle, async () => {
      const slots: Uint8Array[] = new Array<Uint8Array>(reads.length);
      const order = reads.map((r, i) => ({ record: r.record, i })).sort((a, b) => a.record - b.record);
      // The runs of one call are read together (nothing else of this file runs meanwhile: the queue).
      const runs: Promise<void>[] = [];
      for (let k = 0; k < order.length;) {
        let n = 1;
        while (k + n < order.length && order[k + n]!.record === order[k]!.record + n && (n + 1) * rb <= MAX_READ_BYTES) n++;
        const from = k;
        runs.push(this.store.read(this.pairId, cycle, order[from]!.record * rb, n * rb).then((bytes) => {
          for (let j = 0; j < n; j++) slots[order[from + j]!.i] = bytes.subarray(j * rb, (j + 1) * rb);
        }));
        k += n;
      }
      await Promise.all(runs);
      result = slots;
    }).then(() => (this.stopped ? undefined : result));
  }

  /** Resolves once the queued bytes are below `below` (or the spill stopped). */
  drained(below: number): Promise<void> {
    if (this.queuedBytes < below || this.stopped) return Promise.resolve();
    return new Promise<void>((resolve) => this.drainWaiters.push({ below, resolve }));
  }

  private wakeDrainWaiters(): void {
    for (let i = this.drainWaiters.length - 1; i >= 0; i--) {
      const w = this.drainWaiters[i]!;
      if (this.queuedBytes < w.below || this.stopped) {
        this.drainWaiters.splice(i, 1);
        w.resolve();
      }
    }
  }

  /** The cycles' data is no longer needed (R1Cycles.takeReleasedSpill): their files go. */
  release(cycles: readonly number[]): void {
    for (const cycle of cycles) {
      if (this.stopped || !this.files.has(cycle)) continue;
      void this.enqueue(cycle, async () => {
        await this.store.removeCycle(this.pairId, cycle);
        this.files.delete(cycle);
      });
    }
  }

  /** The cycles stopped: once what is queued has settled, every file still there is deleted. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.stopped = true;
      this.wakeDrainWaiters();
      await Promise.all([...this.queues.values()]);
      for (const cycle of this.files) await this.store.removeCycle(this.pairId, cycle).catch(() => undefined);
      this.files.clear();
    })();
    return this.closing;
  }

  /** Runs work after everything queued for the cycle's file; a failure stops the spill for good. */
  private enqueue(cycle: number, work: () => Promise<void>): Promise<void> {
    const run = (this.queues.get(cycle) ?? Promise.resolve()).then(async () => {
      if (!this.stopped) await work(); // once stopped, close() deletes whatever files there are
    });
    const tail = run.catch((error: unknown) => {
      if (this.stopped) return;
      this.stopped = true;
      this.wakeDrainWaiters();
      this.onError(error);
    });
    this.queues.set(cycle, tail);
    void tail.then(() => { if (this.queues.get(cycle) === tail) this.queues.delete(cycle); });
    return tail;
  }
}
