// Collects the small reads or writes that arrive in one event-loop turn and hands them to the
// thread pool as one job (native/tidemark_fs.c batch ops). One cross-thread hand-off per request
// costs more CPU than the pwrite itself on small machines; one per batch does not.
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

export class IoBatcher {
  private pending: Pending[] = [];
  private pendingBytes = 0;
  private scheduled = false;

  constructor(private readonly fd: number, private readonly kind: 'read' | 'write') {}

  /** Transfers `buffer` (all of it) at `offset`; resolves when that item's batch has completed. */
  submit(buffer: Uint8Array, offset: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.pending.push({ buffer, offset, resolve, reject });
      this.pendingBytes += buffer.length;
      if (this.pending.length >= MAX_BATCH_ITEMS || this.pendingBytes >= MAX_BATCH_BYTES) this.dispatch();
      else if (!this.scheduled) {
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
    const run = this.kind === 'write' ? nativeFs.writeBatch : nativeFs.readBatch;
    run(this.fd, batch.map((p) => p.buffer), batch.map((p) => p.offset)).then(
      () => { for (const p of batch) p.resolve(); },
      (error: unknown) => { for (const p of batch) p.reject(error); },
    );
  }
}
