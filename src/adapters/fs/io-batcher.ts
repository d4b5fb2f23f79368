// Collects the small reads or writes that arrive in one event-loop turn and hands them to the
// thread pool as one job (native/tidemark_fs.c batch ops). One cross-thread hand-off per request
// costs more CPU than the pwrite itself on small machines; one per batch does not.
//
// Small writes with nothing of this file in the pool are written on the event loop instead
// (direct): a pwrite into the page cache takes a few microseconds, while the hand-off there and
// back wakes two threads — on a 2-vCPU machine most of a QD1 write's time (bench/replication:
// unpaired 4 KiB QD1 mean 215 → 155 µs), and at QD32 more CPU than the writes themselves (4 KiB
// random writes: 13.3 → 11.2 µs of CPU per write, +20 % IOPS, once a turn's batch went direct
// rather than only a lone write). The kernel may make a write wait (dirty-page throttling, a full
// journal): once a turn's direct writes have taken longer than DIRECT_SLOW_MS the rest go to the
// pool, and so does every write for a backoff, so a slow disk stalls the event loop at most once
// per backoff, for about DIRECT_SLOW_MS. A turn also looks slow when the process was merely
// descheduled (two arrays and a host on two vCPUs): the backoff starts short and doubles only
// while turns after it are slow again, up to DIRECT_BACKOFF_MAX_MS.
import { writeSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { nativeFs } from './native.js';

interface Pending {
  readonly buffer: Uint8Array;
  readonly offset: number;
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
}

/**
 * Most requests one thread-pool job carries. Small enough that a turn's requests still spread over
 * several pool threads (file-system block allocation runs in parallel), large enough to amortise
 * the hand-off.
 */
const MAX_BATCH_ITEMS = 8;
const MAX_BATCH_BYTES = 4 * 1024 * 1024;
/**
 * Largest write done directly on the event loop. Large NBD writes too: a 256 KiB pwrite into the
 * page cache takes tens of microseconds, less than handing it to a pool thread and back on two
 * vCPUs (bench/nbd's 256 KiB sequential writes, fio at QD8, five rounds: 74-94 us of server CPU
 * per write through the pool, 59-89 direct; in the two with the server on a core of its own,
 * 0.88x nbdkit's IOPS through the pool, 1.07x direct). Larger ones (a streamed piece of a huge write) still go to the pool.
 */
export const DIRECT_MAX_BYTES = 1024 * 1024;
export const DIRECT_SLOW_MS = 2;
export const DIRECT_BACKOFF_MIN_MS = 50;
export const DIRECT_BACKOFF_MAX_MS = 1000;

export interface IoBatcherOptions {
  /** Write a turn's small requests on the event loop (see above); reads always go to the pool. */
  readonly direct?: boolean;
  /** Monotonic ms (tests replace it to make a direct write look slow). */
  readonly nowMs?: () => number;
}

export class IoBatcher {
  private pending: Pending[] = [];
  private pendingBytes = 0;
  private scheduled = false;
  /** Pool jobs of this batcher not yet completed. */
  private inPool = 0;
  private directAfterMs = 0;
  private backoffMs = DIRECT_BACKOFF_MIN_MS;
  /** The last direct turn was slow: another slow one doubles the backoff. */
  private slow = false;
  /** Writes done on the event loop so far (tests). */
  directWrites = 0;
  private readonly nowMs: () => number;

  constructor(private readonly fd: number, private readonly kind: 'read' | 'write', private readonly options: IoBatcherOptions = {}) {
    this.nowMs = options.nowMs ?? (() => performance.now());
  }

  /** Transfers `buffer` (all of it) at `offset`; resolves when that item's batch has completed. */
  submit(buffer: Uint8Array, offset: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.pending.push({ buffer, offset, resolve, reject });
      this.pendingBytes += buffer.length;
      if (this.pending.length >= MAX_BATCH_ITEMS || this.pendingBytes >= MAX_BATCH_BYTES) this.dispatch();
      else if (!this.scheduled) {
        // After this turn's microtasks: whatever a write plan starts alongside the write (a
        // forward to a mirror) leaves first, and the turn's other requests join the batch.
        this.scheduled = true;
        setImmediate(() => {
          this.scheduled = false;
          this.dispatch();
        });
      }
    });
  }

  private dispatch(): void {
    if (this.pending.length === 0) return;
    const batch = this.pending;
    this.pending = [];
    this.pendingBytes = 0;
    const rest = this.options.direct === true && this.kind === 'write' ? this.writeDirect(batch) : batch;
    if (rest.length > 0) this.toPool(rest);
  }

  private toPool(batch: Pending[]): void {
    this.inPool++;
    const run = this.kind === 'write' ? nativeFs.writeBatch : nativeFs.readBatch;
    run(this.fd, batch.map((p) => p.buffer), batch.map((p) => p.offset)).then(
      () => {
        this.inPool--;
        for (const p of batch) p.resolve();
      },
      (error: unknown) => {
        this.inPool--;
        for (const p of batch) p.reject(error);
      },
    );
  }

  /**
   * Writes the batch's leading small items on the event loop, in order, while direct writes are
   * allowed; returns the items left for the pool (from the first large one, or from where the
   * turn's direct writes became slow).
   */
  private writeDirect(batch: Pending[]): Pending[] {
    // A write to a range a pool job is still writing must not overtake it: direct only when the pool holds nothing of this file.
    if (this.inPool > 0) return batch;
    const started = this.nowMs();
    if (started < this.directAfterMs) return batch;
    let i = 0;
    for (; i < batch.length && batch[i]!.buffer.length <= DIRECT_MAX_BYTES; i++) {
      this.writeOne(batch[i]!);
      const now = this.nowMs();
      if (now - started > DIRECT_SLOW_MS) {
        this.backoffMs = this.slow ? Math.min(this.backoffMs * 2, DIRECT_BACKOFF_MAX_MS) : DIRECT_BACKOFF_MIN_MS;
        this.slow = true;
        this.directAfterMs = now + this.backoffMs;
        return batch.slice(i + 1);
      }
    }
    this.slow = false;
    return i === batch.length ? [] : batch.slice(i);
  }

  private writeOne(p: Pending): void {
    try {
      for (let done = 0; done < p.buffer.length;) {
        const n = writeSync(this.fd, p.buffer, done, p.buffer.length - done, p.offset + done);
        if (n <= 0) throw new Error(`pwrite at ${p.offset + done} wrote nothing`);
        done += n;
      }
    } catch (error) {
      p.reject(error);
      return;
    }
    this.directWrites++;
    p.resolve();
  }
}
