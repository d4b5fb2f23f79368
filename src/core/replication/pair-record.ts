// A remote pair as each array persists its half (SPEC §4): who this side is (R1 or R2), the mode,
// what the operator last asked for (the intent), and the generation that orders role changes.
import { ErrorCode, TidemarkError } from '../errors.js';
import { isValidVolumeName } from '../volume/volume-record.js';
import type { ByteExtent } from './pair-extents.js';

export const PAIR_MODES = ['sync', 'semisync', 'adaptive', 'async'] as const;
export type PairMode = (typeof PAIR_MODES)[number];

export type PairRole = 'R1' | 'R2';

/**
 * What the operator asked for. The state shown to users is derived from this plus the link and the
 * bitmaps (see pairState): a replicating pair is synchronizing, synchronized or partitioned.
 */
export const PAIR_INTENTS = ['replicating', 'suspended', 'split', 'failed-over', 'restoring'] as const;
export type PairIntent = (typeof PAIR_INTENTS)[number];

/** async mode: record buffers R1's cycles keep in memory before they spill to disk. */
export const DEFAULT_CYCLE_MEMORY_BYTES = 64 * 1024 * 1024;
export const MIN_CYCLE_MEMORY_BYTES = 64 * 1024;
/** async mode: cycle data R1 may spill to disk before the pair falls back to bitmaps (0: never spill). */
export const DEFAULT_SPILL_LIMIT_BYTES = 4 * 1024 * 1024 * 1024;
/** adaptive mode: the longest minimum age a change may be given before it ships. */
export const MAX_MIN_AGE_MS = 3_600_000;

export const LINK_FAILURE_POLICIES = ['continue', 'fail-writes'] as const;
export type LinkFailurePolicy = (typeof LINK_FAILURE_POLICIES)[number];

export interface PairRecord {
  /** Chosen by R1 at create; the same on both halves. */
  readonly id: string;
  /**
   * What commands and the API call the pair on this array (volume-name rules, unique per array).
   * R2 takes R1's name at create. Records written before pairs had names carry none: they are
   * named after their local volume, as they were addressed then.
   */
  readonly name: string;
  readonly role: PairRole;
  readonly localVolume: string;
  readonly peer: string;
  readonly remoteVolume: string;
  readonly mode: PairMode;
  readonly intent: PairIntent;
  readonly onLinkFailure: LinkFailurePolicy;
  /**
   * Grows by one at every change of which side hosts may write (failover, failback, restore, swap,
   * establish after a split). A side that meets a peer with a newer generation adopts the peer's
   * view; it never overrides it.
   */
  readonly generation: number;
  /** R1 only: R2 failed over while R1 kept taking writes; resync needs an explicit choice of side. */
  readonly diverged: boolean;
  /** On R2's array: a clone of R2 split just before each resync, so a consistent image survives it. */
  readonly protectWith: string | null;
  /** Only these byte ranges replicate (whole tracks); null: the whole volume. */
  readonly extents: readonly ByteExtent[] | null;
  /** async mode: the shortest time between cycle switches. */
  readonly cycleMs: number;
  /** async mode: R1's cycles spill to disk above this much record data in memory. */
  readonly cycleMemoryBytes: number;
  /** async mode: spilled cycle data above this makes R1 fall back to bitmaps (0: never spill). */
  readonly spillLimitBytes: number;
  /**
   * adaptive mode: a change ships no sooner than this long after it was made (0: at once), so a
   * track rewritten all the time ships once per interval instead of after every write.
   */
  readonly minAgeMs: number;
  readonly createdAtMs: number;
}

const isOneOf = <T extends string>(values: readonly T[], v: unknown): v is T => typeof v === 'string' && (values as readonly string[]).includes(v);

/** Validates a persisted or received pair record; anything else is corruption, reported, never used. */
export function parsePairRecord(value: unknown, what: string): PairRecord {
  const bad = (why: string): TidemarkError => new TidemarkError(ErrorCode.MetadataCorrupt, `${what}: ${why}`);
  if (value === null || typeof value !== 'object') throw bad('not an object');
  const r = value as Record<string, unknown>;
  for (const key of ['id', 'localVolume', 'peer', 'remoteVolume'] as const) {
    if (typeof r[key] !== 'string' || (r[key] as string).length === 0) throw bad(`${key} missing`);
  }
  const name = r.name === undefined ? r.localVolume : r.name;
  if (typeof name !== 'string' || !isValidVolumeName(name)) throw bad('name is not a valid pair name');
  if (r.role !== 'R1' && r.role !== 'R2') throw bad('role must be R1 or R2');
  if (!isOneOf(PAIR_MODES, r.mode)) throw bad('unknown mode');
  if (!isOneOf(PAIR_INTENTS, r.intent)) throw bad('unknown intent');
  if (!isOneOf(LINK_FAILURE_POLICIES, r.onLinkFailure)) throw bad('unknown link failure policy');
  if (!Number.isSafeInteger(r.generation) || (r.generation as number) < 1) throw bad('generation must be a positive integer');
  if (typeof r.diverged !== 'boolean') throw bad('diverged must be a boolean');
  if (!Number.isSafeInteger(r.createdAtMs)) throw bad('createdAtMs missing');
  if (r.protectWith !== undefined && r.protectWith !== null && (typeof r.protectWith !== 'string' || r.protectWith.length === 0)) {
    throw bad('protectWith must be a volume name');
  }
  const cycleMs = r.cycleMs === undefined ? 1000 : r.cycleMs;
  if (!Number.isSafeInteger(cycleMs) || (cycleMs as number) < 100) throw bad('cycleMs must be a whole number of at least 100');
  const cycleMemoryBytes = r.cycleMemoryBytes === undefined ? DEFAULT_CYCLE_MEMORY_BYTES : r.cycleMemoryBytes;
  if (!Number.isSafeInteger(cycleMemoryBytes) || (cycleMemoryBytes as number) < MIN_CYCLE_MEMORY_BYTES) throw bad('cycleMemoryBytes too small');
  const spillLimitBytes = r.spillLimitBytes === undefined ? DEFAULT_SPILL_LIMIT_BYTES : r.spillLimitBytes;
  if (!Number.isSafeInteger(spillLimitBytes) || (spillLimitBytes as number) < 0) throw bad('spillLimitBytes must be a whole number ≥ 0');
  const minAgeMs = r.minAgeMs === undefined ? 0 : r.minAgeMs;
  if (!Number.isSafeInteger(minAgeMs) || (minAgeMs as number) < 0 || (minAgeMs as number) > MAX_MIN_AGE_MS) {
    throw bad(`minAgeMs must be a whole number from 0 to ${MAX_MIN_AGE_MS}`);
  }
  let extents: ByteExtent[] | null = null;
  if (r.extents !== undefined && r.extents !== null) {
    if (!Array.isArray(r.extents) || !r.extents.every((e: unknown) => e !== null && typeof e === 'object' &&
        Number.isSafeInteger((e as ByteExtent).offset) && Number.isSafeInteger((e as ByteExtent).length))) {
      throw bad('extents must be a list of {offset, length}');
    }
    extents = (r.extents as ByteExtent[]).map((e) => ({ offset: e.offset, length: e.length }));
  }
  return {
    id: r.id as string, name, role: r.role, localVolume: r.localVolume as string, peer: r.peer as string,
    remoteVolume: r.remoteVolume as string, mode: r.mode, intent: r.intent, onLinkFailure: r.onLinkFailure,
    generation: r.generation as number, diverged: r.diverged, protectWith: (r.protectWith as string | null | undefined) ?? null,
    extents, cycleMs: cycleMs as number, cycleMemoryBytes: cycleMemoryBytes as number, spillLimitBytes: spillLimitBytes as number,
    minAgeMs: minAgeMs as number, createdAtMs: r.createdAtMs as number,
  };
}
