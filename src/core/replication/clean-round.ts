// When R1 runs a flush round on its own. R2 acknowledges shipped data before it is durable there, so
// R1 may clear a track's bit only after both copies were flushed (inside a bitmap persist). Hosts
// that never FLUSH would leave those bits set for ever, and a crash of R1 would then compare the
// whole volume. So R1 starts a round itself — flush here, flush there, persist the cleared bits —
// once the shipped-but-unflushed data is old enough or large enough.
//
// This is only the decision of *when*; the round itself (and every rule of which bit may clear) is
// the pair runtime's persist. Any persist that takes the pending clears counts as a round here, so a
// persist run for another reason (an activity-log eviction, a state change) also resets the clock.
import { assert } from '../lib/assert.js';

export interface CleanRoundConfig {
  /** Run a round once the oldest shipped-but-unflushed data is this old. */
  readonly cleanAfterMs: number;
  /** Run a round at once when this much shipped data awaits a flush. */
  readonly cleanAfterBytes: number;
  /** After a failed round, wait this long before the next (doubling up to `maxRetryMs`). */
  readonly retryAfterMs: number;
  readonly maxRetryMs: number;
}

export const DEFAULT_CLEAN_ROUND: CleanRoundConfig = {
  cleanAfterMs: 1000,
  cleanAfterBytes: 64 * 1024 * 1024,
  retryAfterMs: 1000,
  maxRetryMs: 30_000,
};

/** The shortest and longest `array start --flush-round-after` takes. */
export const MIN_FLUSH_ROUND_AFTER_MS = 100;
export const MAX_FLUSH_ROUND_AFTER_MS = 10 * 60_000;

/** Whether `ms` is a flush-round interval the array takes (the CLI checks it, cleanRoundAfter asserts it). */
export const isFlushRoundAfterMs = (ms: number): boolean =>
  Number.isSafeInteger(ms) && ms >= MIN_FLUSH_ROUND_AFTER_MS && ms <= MAX_FLUSH_ROUND_AFTER_MS;

/**
 * Rounds due after `afterMs`, with the byte bound scaled to match (64 MiB per second of it, as the
 * defaults are). A longer interval lets rewrites of the same blocks coalesce in the page cache
 * before both arrays write them back: under heavy random writes from hosts that never flush, the
 * rounds' write-back is a large part of what a sync pair costs (docs/performance.md). What it costs:
 * after a crash of R1, the tracks written in the last interval are compared again.
 */
export function cleanRoundAfter(afterMs: number): CleanRoundConfig {
  assert(isFlushRoundAfterMs(afterMs), 'flush round interval');
  const bytesPerSecond = DEFAULT_CLEAN_ROUND.cleanAfterBytes / (DEFAULT_CLEAN_ROUND.cleanAfterMs / 1000);
  return { ...DEFAULT_CLEAN_ROUND, cleanAfterMs: afterMs, cleanAfterBytes: Math.round(bytesPerSecond * afterMs / 1000) };
}

export type CleanRoundEvent =
  /** R2 acknowledged data it has not yet flushed, or R2 committed a cycle R1 has not flushed (bytes 0: unknown). */
  | { readonly type: 'shipped'; readonly bytes: number }
  /**
   * The bitmap on disk marks more tracks than the one in memory, with nothing shipped to flush:
   * bits cleared without shipping (outside the pair's extents, or found equal on R2) after a
   * restart marked the activity log's hot extents. Only a persist makes the disk say so.
   */
  | { readonly type: 'stale-on-disk' }
  /** A persist took every pending clear (whoever started it). */
  | { readonly type: 'taken' }
  /** That persist ended: `ok` false when a flush failed (the clears were given back or owed again). */
  | { readonly type: 'ended'; readonly ok: boolean };

interface Pending {
  readonly sinceMs: number;
  readonly bytes: number;
}

export class CleanRound {
  private pending: Pending | undefined;
  /** What the round in progress took; given back if it fails. */
  private taken: Pending | undefined;
  private inRound = false;
  private notBeforeMs = 0;
  private backoffMs: number;

  constructor(readonly config: CleanRoundConfig = DEFAULT_CLEAN_ROUND) {
    assert(config.cleanAfterMs >= 0 && Number.isFinite(config.cleanAfterMs), 'cleanAfterMs');
    assert(config.cleanAfterBytes > 0, 'cleanAfterBytes');
    assert(config.retryAfterMs > 0 && config.maxRetryMs >= config.retryAfterMs, 'retry bounds');
    this.backoffMs = config.retryAfterMs;
  }

  handle(event: CleanRoundEvent, nowMs: number): void {
    switch (event.type) {
      case 'shipped':
        assert(event.bytes >= 0, 'shipped bytes');
        this.pending = { sinceMs: this.pending?.sinceMs ?? nowMs, bytes: (this.pending?.bytes ?? 0) + event.bytes };
        return;
      case 'stale-on-disk':
        // Due by age like shipped data (pairs seeds 1050485, 1052032: an idle R1 stayed marked on
        // disk for ever after a crash, since nothing was ever shipped to start a round).
        if (!this.inRound) this.pending ??= { sinceMs: nowMs, bytes: 0 };
        return;
      case 'taken':
        assert(!this.inRound, 'a clean round taken while another is in progress');
        this.inRound = true;
        this.taken = this.pending;
        this.pending = undefined;
        return;
      case 'ended':
        assert(this.inRound, 'a clean round ended that was not taken');
        this.inRound = false;
        if (event.ok) {
          this.backoffMs = this.config.retryAfterMs;
        } else {
          // What the round took is pending again (age kept), but not retried before the backoff.
          const t = this.taken;
          if (t) this.pending = { sinceMs: Math.min(t.sinceMs, this.pending?.sinceMs ?? t.sinceMs), bytes: t.bytes + (this.pending?.bytes ?? 0) };
          this.notBeforeMs = nowMs + this.backoffMs;
          this.backoffMs = Math.min(this.config.maxRetryMs, this.backoffMs * 2);
        }
        this.taken = undefined;
        return;
      default: {
        const never: never = event;
        throw new Error(`unknown clean-round event ${JSON.stringify(never)}`);
      }
    }
  }

  /** Whether the pair should start a round now. */
  due(nowMs: number): boolean {
    const p = this.pending;
    if (this.inRound || p === undefined || nowMs < this.notBeforeMs) return false;
    return p.bytes >= this.config.cleanAfterBytes || nowMs - p.sinceMs >= this.config.cleanAfterMs;
  }

  /** When a round falls due by age alone (undefined: nothing pending). */
  nextDeadlineMs(): number | undefined {
    if (this.pending === undefined || this.inRound) return undefined;
    return Math.max(this.notBeforeMs, this.pending.sinceMs + this.config.cleanAfterMs);
  }

  /** Shipped data awaiting a round (for status). */
  get pendingBytes(): number {
    return (this.pending?.bytes ?? 0) + (this.taken?.bytes ?? 0);
  }
}
