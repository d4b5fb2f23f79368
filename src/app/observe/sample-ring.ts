// A fixed number of the latest samples of one series (a pair's lag, a volume's I/O): the memory an
// hour of history costs is decided when the ring is made, never by how long the array runs.

export class SampleRing<T> {
  private readonly items: (T | undefined)[];
  private written = 0;

  constructor(readonly capacity: number) {
    if (!(Number.isSafeInteger(capacity) && capacity > 0)) throw new Error(`ring capacity must be a positive integer, not ${capacity}`);
    this.items = new Array<T | undefined>(capacity);
  }

  push(item: T): void {
    this.items[this.written % this.capacity] = item;
    this.written++;
  }

  get size(): number {
    return Math.min(this.written, this.capacity);
  }

  /** Oldest first; only the items `keep` accepts (e.g. those newer than a reader's last sample). */
  toArray(keep: (item: T) => boolean = () => true): T[] {
    const out: T[] = [];
    for (let i = this.written - this.size; i < this.written; i++) {
      const item = this.items[i % this.capacity]!;
      if (keep(item)) out.push(item);
    }
    return out;
  }
}
