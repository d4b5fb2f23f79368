// Received bytes not yet parsed: a list of chunks and a read position, so frames split across or
// packed into socket reads are handled without re-concatenating the whole stream.

export class ByteQueue {
  /** `allocate`: makes the buffer a take() spanning chunks fills completely (it need not be zeroed). */
  constructor(private readonly allocate: (length: number) => Uint8Array = (length) => new Uint8Array(length)) {}

  private chunks: Uint8Array[] = [];
  private head = 0; // read offset into chunks[0]
  private total = 0;
  /** A chunk the caller reuses after endLoan(): nothing kept may be a view into it. */
  private lent: Uint8Array | undefined;

  get length(): number {
    return this.total;
  }

  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.total += chunk.length;
  }

  /**
   * Queues a chunk that stays the caller's: it may be reused once endLoan() has returned, which
   * copies whatever of it is still queued. Until then take() may return views into it (read at
   * once and dropped); takeKept() never does.
   */
  pushLent(chunk: Uint8Array): void {
    if (this.lent !== undefined) throw new RangeError('pushLent() before the previous loan ended');
    if (chunk.length === 0) return;
    this.push(chunk);
    this.lent = chunk;
  }

  /** Ends the loan of pushLent(): its unread bytes, if any, are copied into memory of our own. */
  endLoan(): void {
    const lent = this.lent;
    this.lent = undefined;
    const at = lent === undefined ? -1 : this.chunks.indexOf(lent);
    if (at < 0) return;
    // Uint8Array's slice copies; a Node Buffer's own slice() would return a view.
    this.chunks[at] = Uint8Array.prototype.slice.call(lent!, at === 0 ? this.head : 0);
    if (at === 0) this.head = 0;
  }

  /** Like take(), for bytes kept after the current loan ends: a copy where take() would view a lent chunk. */
  takeKept(n: number): Uint8Array {
    return this.chunks[0] === this.lent && n > 0 ? this.copyOut(n) : this.take(n);
  }

  /** Removes and returns the next n bytes; a view into the received chunk when it holds them all. */
  take(n: number): Uint8Array {
    const first = this.chunks[0];
    if (n === 0) return new Uint8Array(0);
    // A view needs the bytes in the first chunk; anything else is copyOut's, which checks there are n.
    if (first && first.length - this.head >= n) {
      const view = first.subarray(this.head, this.head + n);
      this.advance(n);
      return view;
    }
    return this.copyOut(n);
  }

  /** The next n bytes copied into a buffer from `allocate` (a take spanning chunks, or out of a lent one). */
  private copyOut(n: number): Uint8Array {
    if (n > this.total) throw new RangeError(`take(${n}) with ${this.total} bytes queued`);
    const out = this.allocate(n);
    this.moveInto(out, 0);
    return out;
  }

  /** Moves up to `target.length - at` queued bytes into `target` at `at`; returns how many were moved. */
  moveInto(target: Uint8Array, at: number): number {
    const count = Math.min(target.length - at, this.total);
    let filled = 0;
    while (filled < count) {
      const chunk = this.chunks[0]!;
      const step = Math.min(count - filled, chunk.length - this.head);
      target.set(chunk.subarray(this.head, this.head + step), at + filled);
      filled += step;
      this.advance(step);
    }
    return count;
  }

  /** Drops up to n bytes; returns how many were dropped. */
  skip(n: number): number {
    const count = Math.min(n, this.total);
    let left = count;
    while (left > 0) {
      const chunk = this.chunks[0]!;
      const step = Math.min(left, chunk.length - this.head);
      this.advance(step);
      left -= step;
    }
    return count;
  }

  private advance(n: number): void {
    this.head += n;
    this.total -= n;
    while (this.chunks.length > 0 && this.head >= this.chunks[0]!.length) {
      this.head -= this.chunks[0]!.length;
      this.chunks.shift();
    }
  }
}
