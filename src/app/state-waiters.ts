// Long polls: an API request that asks to be answered when something changes (a clone session
// reaches a state, a new event is recorded). The owner calls `notify()` wherever it may have
// changed; a waiter re-checks its condition then, so `clone wait` and `events --follow` see a
// change the moment it happens instead of on their next poll.

type Waiter = (release: boolean) => void;

/** Requests waiting at once per owner by default; more are answered at once (bounded, like everything). */
export const DEFAULT_MAX_WAITERS = 64;

export class StateWaiters {
  private waiters = new Set<Waiter>();
  private closed = false;

  constructor(private readonly maxWaiters = DEFAULT_MAX_WAITERS) {}

  /** Something a waiter may be waiting for may have changed. */
  notify(): void {
    const waiting = this.waiters;
    this.waiters = new Set();
    for (const wake of waiting) wake(false);
  }

  /** Answers every waiter now, as things are, and later ones at once (the API is closing). */
  releaseAll(): void {
    this.closed = true;
    const waiting = this.waiters;
    this.waiters = new Set();
    for (const wake of waiting) wake(true);
  }

  /**
   * Resolves once `reached()` holds (checked now and after every notify) or `waitMs` has passed,
   * whichever comes first; the caller reads the state afresh either way. `reached` throwing (the
   * object is gone) rejects.
   */
  async until(reached: () => boolean, waitMs: number): Promise<void> {
    if (reached() || this.closed || waitMs <= 0 || this.waiters.size >= this.maxWaiters) return;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => { this.waiters.delete(wake); resolve(); }, waitMs);
      const wake: Waiter = (release) => {
        try {
          if (!release && !reached()) { this.waiters.add(wake); return; }
          clearTimeout(timer);
          resolve();
        } catch (error) {
          clearTimeout(timer);
          reject(error);
        }
      };
      this.waiters.add(wake);
    });
  }
}
