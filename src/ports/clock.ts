// Time for everything outside src/core. The simulator supplies a virtual clock.

export interface Clock {
  /** Milliseconds, monotonic. */
  nowMs(): number;
  /** Resolves after `ms` milliseconds of this clock's time. */
  sleep(ms: number): Promise<void>;
}
