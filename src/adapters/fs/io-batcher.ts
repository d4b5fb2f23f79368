// Collects the small reads or writes that arrive in one event-loop turn and hands them to the
// thread pool as one job (native/tidemark_fs.c batch ops). One cross-thread hand-off per request
// costs more CPU than the pwrite itself on small machines; one per batch does not.
//
// A lone small write with nothing of this file in the pool is written on the event loop instead
// (direct): a pwrite into the page cache takes microseconds, while the hand-off there and back
// wakes two threads — on a 2-vCPU machine most of a QD1 write's time (bench/replication: unpaired
// 4 KiB QD1 mean 215 → 155 µs). The kernel may make a write wait (dirty-page throttling, a full
// journal): a direct write that took longer than DIRECT_SLOW_MS sends every write to the pool for
// DIRECT_BACKOFF_MS, so a slow disk stalls the event loop at most once per backoff.
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
/** Largest write done directly on the event loop. */
export const DIRECT_MAX_BYTES = 16 * 1024;
export const DIRECT_SLOW_MS = 2;
export const DIRECT_BACKOFF_MS = 1000;

export interface IoBatcherOptions {
  /** Write lone small requests on the event loop (see above); reads always go to the pool. */
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
    if (batch.length === 1 && this.goesDirect(batch[0]!)) return this.writeDirect(batch[0]!);
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

  private goesDirect(p: Pending): boolean {
    return this.options.direct === true && this.kind === 'write' && this.inPool === 0 &&
      p.buffer.length <= DIRECT_MAX_BYTES && this.nowMs() >= this.directAfterMs;
  }

  private writeDirect(p: Pending): void {
    const started = this.nowMs();
    try {
      for (let done = 0; done < p.buffer.length;) {
        const n = writeSync(this.fd, p.buffer, done, p.buffer.length - done, p.offset + done);
        if (n <= 0) throw new Error(`pwrite at ${p.offset + done} wrote nothing`);
        done += n;
      }
    } catch (error) {
      p.reject(error);
      return;
    } finally {
      const ended = this.nowMs();
      if (ended - started > DIRECT_SLOW_MS) this.directAfterMs = ended + DIRECT_BACKOFF_MS;
    }
    this.directWrites++;
    p.resolve();
  }
}
