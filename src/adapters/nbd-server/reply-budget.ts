// One budget of reply bytes shared by every NBD connection of the array: a READ reserves its
// data when it starts, and the bytes are given back once the socket has handed them to the
// kernel. At the cap no session takes new requests (backpressure) and new connections are
// refused, so clients that stop reading cannot grow the daemon past the cap by more than the
// requests already executing.

export class ReplyBudget {
  private used = 0;
  /** Most bytes held at once since start (for tests and metrics). */
  private peak = 0;
  private refusedConnections = 0;
  private readonly waiting = new Set<() => void>();

  constructor(readonly capBytes: number) {
    if (!Number.isSafeInteger(capBytes) || capBytes <= 0) throw new Error(`reply budget cap ${capBytes}`);
  }

  get bufferedBytes(): number {
    return this.used;
  }

  get peakBytes(): number {
    return this.peak;
  }

  get refused(): number {
    return this.refusedConnections;
  }

  /** At or over the cap: take no new requests, refuse new connections. */
  get full(): boolean {
    return this.used >= this.capBytes;
  }

  take(bytes: number): void {
    this.used += bytes;
    if (this.used > this.peak) this.peak = this.used;
  }

  give(bytes: number): void {
    const wasFull = this.full;
    this.used -= bytes;
    if (this.used < 0) throw new Error(`reply budget went negative (${this.used})`);
    if (wasFull && !this.full) this.wakeInTurn();
  }

  /**
   * Wakes waiting sessions until the budget is full again, each woken one going to the back of the
   * line: the room a slow client frees goes to each session in turn, so none is starved by those
   * woken before it.
   */
  private wakeInTurn(): void {
    for (const wake of [...this.waiting]) {
      if (this.full) return;
      if (!this.waiting.delete(wake)) continue; // stopped waiting meanwhile
      this.waiting.add(wake);
      wake();
    }
  }

  countRefusal(): void {
    this.refusedConnections++;
  }

  /** Calls `wake` when the budget drops below its cap (in turn with others), until the returned function is called. */
  onRoom(wake: () => void): () => void {
    this.waiting.add(wake);
    return () => this.waiting.delete(wake);
  }
}
