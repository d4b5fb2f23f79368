// Received bytes not yet parsed: a list of chunks and a read position, so frames split across or
// packed into socket reads are handled without re-concatenating the whole stream.

export class ByteQueue {
  /** `allocate`: makes the buffer a take() spanning chunks fills completely (it need not be zeroed). */
  constructor(private readonly allocate: (length: number) => Uint8Array = (length) => new Uint8Array(length)) {}

  private chunks: Uint8Array[] = [];
  private head = 0; // read offset into chunks[0]
  private total = 0;

  get length(): number {
    return this.total;
  }

  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.total += chunk.length;
  }

  /** Removes and returns the next n bytes; a view into the received chunk when it holds them all. */
  take(n: number): Uint8Array {
    if (n > this.total) throw new RangeError(`take(${n}) with ${this.total} bytes queued`);
    const first = this.chunks[0];
    if (n === 0) return new Uint8Array(0);
    if (first && first.length - this.head >= n) {
      const view = first.subarray(this.head, this.head + n);
      this.advance(n);
      return view;
    }
    const out = this.allocate(n);
    let filled = 0;
    while (filled < n) {
      const chunk = this.chunks[0]!;
      const count = Math.min(n - filled, chunk.length - this.head);
      out.set(chunk.subarray(this.head, this.head + count), filled);
      filled += count;
      this.advance(count);
    }
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
