// Messages of ordered asynchronous replication (SPEC §5) between R1 and R2, as plain values.
// The link codec (peer-messages.ts) carries them; these types are what the machines exchange.
import type { ByteRange } from './record-ranges.js';

/** One 4 KiB record of a cycle: the bytes the cycle's writes wrote into it (only `ranges` are meaningful). */
export interface CycleRecord {
  /** Record index in the volume (byte offset / 4096). */
  readonly record: number;
  /** Grows by one with every captured write to this record in this cycle; R2 keeps the highest. */
  readonly version: number;
  readonly ranges: readonly ByteRange[];
  /** recordBytes long; bytes outside `ranges` are zero and must not be applied. */
  readonly data: Uint8Array;
}

/** R1 → R2 */
export type R1Message =
  | { readonly kind: 'records'; readonly cycle: number; readonly records: readonly CycleRecord[] }
  /** Every write of the cycle completed and every record was acknowledged: R2 persists the cycle whole. */
  | { readonly kind: 'seal'; readonly cycle: number; readonly tag: number; readonly recordCount: number; readonly versionSum: number }
  /** Sent at the cycle switch that ends the cycle's transmission: R2 may apply it. */
  | { readonly kind: 'commit'; readonly cycle: number; readonly tag: number };

/** R2 → R1 */
export type R2Message =
  | { readonly kind: 'records-ack'; readonly cycle: number; readonly records: readonly { readonly record: number; readonly version: number }[] }
  /** The sealed cycle is persisted whole at R2 (it is "complete"). */
  | { readonly kind: 'seal-ack'; readonly cycle: number }
  /** R2 does not hold every record R1 sealed (it restarted and lost its receive slot): resend them all. */
  | { readonly kind: 'seal-nack'; readonly cycle: number; readonly recordCount: number }
  /** The commit is persisted and the cycle moved to the apply slot: R2 can receive the next cycle. */
  | { readonly kind: 'commit-ack'; readonly cycle: number };
