// WRITE payload buffers used again once their write has completed. A fresh buffer per write is
// memory outside V8's heap that V8 still counts; at a few hundred MB/s of writes that count alone
// drove the collector into back-to-back full collections (bench/nbd's 256 KiB writes swung between
// 0.2× and 1.2× nbdkit from run to run). Reused buffers make the write path allocate nothing per
// request, and the collector stays quiet.
//
// The contract that makes reuse safe: whatever keeps a host write's bytes after the write has
// completed copies them (the journal and the async pair's capture do, the sync pair's forward
// encodes them into its message before the write can complete). Set TIDEMARK_POISON_RELEASED_PAYLOADS=1
// (the test runner does) to overwrite every released buffer: a reader that kept one then reads
// 0xDB instead of the host's data, and the tests that compare data fail.

/** Payloads smaller than this are not worth keeping (an ordinary small array is cheap). */
const MIN_POOLED_BYTES = 4096;
/** Larger ones (streamed pieces of huge writes) are rare: allocated each time. */
const MAX_POOLED_BYTES = 4 * 1024 * 1024;
export const DEFAULT_PAYLOAD_POOL_BYTES = 64 * 1024 * 1024;
const POISON = 0xdb;

export class PayloadPool {
  private readonly free = new Map<number, Uint8Array[]>();
  /**
   * Buffers handed out and not yet given back: only those are taken back, once (a view into a
   * socket chunk is not, nor a buffer given back twice, which would then be handed out twice).
   */
  private readonly out = new WeakSet<Uint8Array>();
  private pooledBytes = 0;

  constructor(
    private readonly capBytes = DEFAULT_PAYLOAD_POOL_BYTES,
    private readonly poison = process.env.TIDEMARK_POISON_RELEASED_PAYLOADS === '1',
  ) {}

  /** A buffer of `length` bytes with unspecified contents (the NBD connection overwrites all of it). */
  acquire(length: number): Uint8Array {
    if (length < MIN_POOLED_BYTES || length > MAX_POOLED_BYTES) return new Uint8Array(length);
    let buffer = this.free.get(length)?.pop();
    if (buffer) this.pooledBytes -= length;
    // A plain Uint8Array, not a Buffer: the array's parts copy with slice(), which on a Buffer
    // returns a view (a journal entry "copied" that way read the next write's bytes). Zeroed once,
    // when made; reused ones are not zeroed again.
    else buffer = new Uint8Array(length);
    this.out.add(buffer);
    return buffer;
  }

  /** Gives back a buffer from acquire() whose write has completed; anything else is left to the collector. */
  release(data: Uint8Array): void {
    if (!this.out.delete(data)) return;
    if (this.poison) data.fill(POISON);
    if (this.pooledBytes + data.length > this.capBytes) return;
    let list = this.free.get(data.length);
    if (!list) this.free.set(data.length, list = []);
    list.push(data);
    this.pooledBytes += data.length;
  }

  /** Bytes held for reuse. */
  get heldBytes(): number {
    return this.pooledBytes;
  }
}
