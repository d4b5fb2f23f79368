// A cascade session as the middle array persists it (SPEC §7, seed 000): which volumes it joins,
// its schedule, the phase of the cycle under way and what the far site holds. The cascade machine
// (cascade-machine.ts) changes it; the app persists every change before acting on it.
import { ErrorCode, TidemarkError } from '../errors.js';
import { isValidVolumeName } from '../volume/volume-record.js';

/**
 * One cycle: `synchronizing` (the clone reattached to R2VOL copies what R2VOL changed), `splitting`
 * (the clone detaches: R2VOL's image at that instant), `shipping` (the clone's pair to the far site
 * resyncs the tracks that image changed), `refreshing` (the pair stops and the far site's protection
 * clone takes the new image), then `complete` until the next cycle is due.
 */
export const CASCADE_PHASES = ['synchronizing', 'splitting', 'shipping', 'refreshing', 'complete'] as const;
export type CascadePhase = (typeof CASCADE_PHASES)[number];

export interface CascadeRecord {
  readonly name: string;
  /** R2VOL: the volume fed from the first site (usually a sync pair's R2). */
  readonly volume: string;
  /** CVOL: the clone of R2VOL on this array, the R1 of the pair to the far site. */
  readonly clone: string;
  readonly peer: string;
  /** CRVOL on the far site. */
  readonly remoteVolume: string;
  /** On the far site: the clone of CRVOL that always holds the last complete image. */
  readonly remoteClone: string;
  /** Cycles start this often (from the start of the previous one); null: only on command. */
  readonly everyMs: number | null;
  readonly phase: CascadePhase;
  /** Completed cycles. */
  readonly cycles: number;
  /** When the cycle under way started (null before the first). */
  readonly cycleStartedAtMs: number | null;
  /** The time of the R2VOL image the cycle under way ships (its split), once split. */
  readonly splitAtMs: number | null;
  /** The time of the R2VOL image the far site holds whole (the last completed cycle's split). */
  readonly consistentAtMs: number | null;
  /** An operator asked for a cycle (`cascade cycle`) that has not started yet. */
  readonly requested: boolean;
  /** `cascade close` was asked: no new cycle starts, the session ends once the far site is whole. */
  readonly closing: boolean;
  /** The pair's outgoing tracks when the cycle under way began shipping. */
  readonly tracksShipping: number;
  readonly tracksShippedLast: number;
  readonly bytesShippedLast: number;
  /** Bytes shipped to the far site over the session's life (counted on this array's pair). */
  readonly bytesShipped: number;
  /** Bytes the cycle under way has shipped so far (kept across restarts of this array). */
  readonly bytesShippingCycle: number;
  readonly createdAtMs: number;
  /**
   * R2VOL holds a consistent image to split: its source pair is not resyncing. A resync can only
   * follow the source link coming back, so each link session (`sourceEpoch`) must be confirmed
   * (the source said it owes nothing) before a split; while the link is down R2VOL does not change
   * and keeps what it was. Persisted: a restart with the source gone must not split a torn image.
   */
  readonly sourceEpoch: string | null;
  readonly sourceSettled: boolean;
}

export const MIN_CASCADE_EVERY_MS = 100;

export function newCascadeRecord(
  fields: Pick<CascadeRecord, 'name' | 'volume' | 'clone' | 'peer' | 'remoteVolume' | 'remoteClone' | 'everyMs' | 'createdAtMs'>,
): CascadeRecord {
  return {
    ...fields, phase: 'synchronizing', cycles: 0, cycleStartedAtMs: fields.createdAtMs, splitAtMs: null, consistentAtMs: null,
    requested: false, closing: false, sourceEpoch: null, sourceSettled: false, tracksShipping: 0, tracksShippedLast: 0, bytesShippedLast: 0, bytesShipped: 0, bytesShippingCycle: 0,
  };
}

const corrupt = (what: string, detail: string): TidemarkError =>
  new TidemarkError(ErrorCode.MetadataCorrupt, `${what}: ${detail}`);

/** Validates a stored record; refuses anything else (the array will not run on bad state). */
export function parseCascadeRecord(value: unknown, what: string): CascadeRecord {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw corrupt(what, 'not an object');
  const v = value as Record<string, unknown>;
  for (const key of ['name', 'volume', 'clone', 'remoteVolume', 'remoteClone'] as const) {
    if (typeof v[key] !== 'string' || !isValidVolumeName(v[key])) throw corrupt(what, `${key} is not a volume name`);
  }
  if (typeof v.peer !== 'string' || v.peer.length === 0) throw corrupt(what, 'peer missing');
  if (typeof v.phase !== 'string' || !(CASCADE_PHASES as readonly string[]).includes(v.phase)) throw corrupt(what, 'bad phase');
  const count = (key: string): void => {
    if (typeof v[key] !== 'number' || !Number.isSafeInteger(v[key]) || v[key] < 0) throw corrupt(what, `${key} is not a count`);
  };
  for (const key of ['cycles', 'tracksShipping', 'tracksShippedLast', 'bytesShippedLast', 'bytesShipped', 'bytesShippingCycle', 'createdAtMs']) count(key);
  const time = (key: string): void => {
    if (v[key] !== null && (typeof v[key] !== 'number' || !Number.isFinite(v[key]))) throw corrupt(what, `${key} is not a time`);
  };
  for (const key of ['everyMs', 'cycleStartedAtMs', 'splitAtMs', 'consistentAtMs']) time(key);
  if (typeof v.requested !== 'boolean' || typeof v.closing !== 'boolean' || typeof v.sourceSettled !== 'boolean') throw corrupt(what, 'flags missing');
  if (v.sourceEpoch !== null && typeof v.sourceEpoch !== 'string') throw corrupt(what, 'sourceEpoch is not a string');
  return v as unknown as CascadeRecord;
}
