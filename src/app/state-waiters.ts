// Long polls: an API request that asks to be answered when an object reaches a state. The owner of
// the state calls `notify()` wherever it may have changed; a waiter re-checks its condition then,
// so `clone wait` returns the moment a copy ends instead of on the CLI's next poll.

type Waiter = (release: boolean) => void;

export class StateWaiters {
  private waiters = new Set<Waiter>();

  /** Something a waiter may be waiting for may have changed. */
  notify(): void {
    const waiting = this.waiters;
    this.waiters = new Set();
    for (const wake of waiting) wake(false);
  }

  /** Answers every waiter now, as things are (the array is shutting down). */
  releaseAll(): void {
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
    if (reached()) return;
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
