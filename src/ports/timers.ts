// Timers for everything outside src/core that waits or repeats: the daemon uses the event loop's,
// the simulator its virtual clock's, so timeouts and periodic work are deterministic under a seed.

export interface Timers {
  /** Calls `fire` once after `ms`; the returned function cancels it. */
  after(ms: number, fire: () => void): () => void;
  /** Calls `fire` every `ms` until cancelled; does not keep a process alive by itself. */
  every(ms: number, fire: () => void): () => void;
}
