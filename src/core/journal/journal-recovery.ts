// Recovery after losing the primary site (SPEC §6, seed 004's recovery process): from the queue
// states of every secondary of a journal, the point all of them can be brought to — the last
// sequence number before the first one that is not complete (its token unknown everywhere, or its
// data missing at its secondary) — and the exact report of what is not in the recovered images:
// `lost` (tokens whose data never arrived) and `stranded` (complete entries behind the gap, which
// applying would break the write order). Pure; the app gathers the states and carries the point out.
import { ErrorCode, TidemarkError } from '../errors.js';
import type { Token } from './journal-types.js';

/** One secondary's queue as recovery sees it. */
export interface QueueState {
  readonly secondary: string;
  readonly appliedUpTo: number;
  /** The sequencer's time of the token at appliedUpTo (null: nothing applied). */
  readonly appliedTimeMs: number | null;
  /** Known tokens above appliedUpTo (every secondary's). */
  readonly tokens: readonly Token[];
  /** Sequence numbers above appliedUpTo whose data (this secondary's pieces) is in the queue. */
  readonly dataSequences: readonly number[];
  /** This secondary's tokens above appliedUpTo that its primary sent (not only the sequencer). */
  readonly primaryTokens: readonly number[];
  readonly lastMessageMs: number | null;
}

export interface LossEntry {
  /** The primary volume's name. */
  readonly volume: string;
  readonly offset: number;
  readonly length: number;
  readonly sequence: number;
  readonly pair: string;
  readonly secondary: string;
  readonly timeMs: number;
}

export interface RecoveryReport {
  /** Every secondary is brought to this point: every write numbered up to it, none after. */
  readonly consistentSequence: number;
  /** The sequencer's time of that write (null: nothing was ever applied). */
  readonly consistentTime: number | null;
  readonly lost: readonly LossEntry[];
  readonly stranded: readonly LossEntry[];
  /**
   * `tokens sync` only: numbers beyond the point whose token the sequencer handed out but whose
   * primary never delivered it to the secondary — no host saw those writes acknowledged (the write
   * completes only once its secondary holds the token), so they are not losses. Under `ahead` they
   * are in `lost`.
   */
  readonly unacknowledged: readonly LossEntry[];
  /** The highest number any secondary knows; numbers between it and the point that no one knows are `unknown`. */
  readonly highestKnown: number;
  readonly unknownSequences: number;
  /** When the last primary message reached any secondary (tokens ahead: writes after it may be unknown). */
  readonly lastMessageAt: number | null;
  /** Per secondary: applied before, and what recovery applies. */
  readonly secondaries: readonly { readonly secondary: string; readonly appliedBefore: number; readonly entriesToApply: number }[];
}

const toLoss = (t: Token): LossEntry => ({
  volume: t.volume, offset: t.offset, length: t.length, sequence: t.sequence, pair: t.pair, secondary: t.secondary, timeMs: t.timeMs,
});

/** `secondaries`: every secondary array of the journal; recovery needs each one's state. */
export function computeRecovery(secondaries: readonly string[], states: readonly QueueState[], tokens: 'ahead' | 'sync'): RecoveryReport {
  const byName = new Map<string, QueueState>();
  for (const s of states) {
    if (byName.has(s.secondary)) throw new TidemarkError(ErrorCode.InvalidArgument, `two queue states for secondary ${s.secondary}`);
    if (!secondaries.includes(s.secondary)) throw new TidemarkError(ErrorCode.InvalidArgument, `${s.secondary} is not a secondary of the journal`);
    byName.set(s.secondary, s);
  }
  const missing = secondaries.filter((s) => !byName.has(s));
  if (missing.length > 0) {
    throw new TidemarkError(ErrorCode.Unavailable, `recovery needs the queue of every secondary; missing: ${missing.join(', ')}`, { missing });
  }
  // Everything at or below a secondary's applied point was complete everywhere when it was applied.
  let floor = 0;
  let floorTime: number | null = null;
  for (const s of states) {
    if (s.appliedUpTo > floor) { floor = s.appliedUpTo; floorTime = s.appliedTimeMs; }
  }
  const known = new Map<number, Token>();
  for (const s of states) for (const t of s.tokens) if (t.sequence > floor && !known.has(t.sequence)) known.set(t.sequence, t);
  const viaPrimary = new Map<string, Set<number>>();
  for (const s of states) viaPrimary.set(s.secondary, new Set(s.primaryTokens));
  const data = new Map<string, Set<number>>();
  for (const s of states) data.set(s.secondary, new Set(s.dataSequences));
  const hasData = (t: Token): boolean => {
    const owner = byName.get(t.secondary);
    if (!owner) return false; // a piece for an array that is not a secondary: never complete
    return t.sequence <= owner.appliedUpTo || data.get(t.secondary)!.has(t.sequence);
  };
  let point = floor;
  let time = floorTime;
  for (;;) {
    const t = known.get(point + 1);
    if (!t || !hasData(t)) break;
    point++;
    time = t.timeMs;
  }
  const lost: LossEntry[] = [];
  const stranded: LossEntry[] = [];
  const unacknowledged: LossEntry[] = [];
  let highestKnown = point;
  for (const seq of [...known.keys()].sort((a, b) => a - b)) {
    if (seq <= point) continue;
    const t = known.get(seq)!;
    highestKnown = seq;
    if (hasData(t)) stranded.push(toLoss(t));
    else if (tokens === 'sync' && !(viaPrimary.get(t.secondary)?.has(seq) ?? false)) unacknowledged.push(toLoss(t));
    else lost.push(toLoss(t));
  }
  let lastMessageAt: number | null = null;
  for (const s of states) if (s.lastMessageMs !== null && (lastMessageAt === null || s.lastMessageMs > lastMessageAt)) lastMessageAt = s.lastMessageMs;
  return {
    consistentSequence: point,
    consistentTime: point === 0 ? null : time,
    lost,
    stranded,
    unacknowledged,
    highestKnown,
    unknownSequences: highestKnown - point - lost.length - stranded.length - unacknowledged.length,
    lastMessageAt,
    secondaries: states.map((s) => ({
      secondary: s.secondary,
      appliedBefore: s.appliedUpTo,
      entriesToApply: s.dataSequences.filter((q) => q > s.appliedUpTo && q <= point).length,
    })),
  };
}
