// The write plan (ARCHITECTURE.md, "a volume and its mirror positions"; docs/design/write-plan.md):
// given the positions a volume feeds, as values, and one write, which steps the app carries out and
// in what order — refuse, copy out first, wait for admission, ship alongside the local write, owe or
// capture after it. Features no longer join the write path as hooks run in registration order: they
// describe their positions, this module decides, and they execute the steps named for them.
//
// The app asks at the moment each decision is due, with the positions as they are then:
// `planAdmission` before the write takes its place in the volume's write order (again on each
// pass, if a write window opened meanwhile), `planApply` once it holds its place and is about to
// reach the store, `planFlush` after a host FLUSH, `planRead` before a host read.
import { ErrorCode, TidemarkError } from '../errors.js';
import type { PairMode } from '../replication/pair-record.js';
import type { WriteSource } from './mirror-positions.js';

/** What the planner reads of a track bitmap. */
export interface TrackSet {
  anyInRange(first: number, last: number): boolean;
  isEmpty(): boolean;
}

/** A clone session on its standard volume (STD). */
export interface ClonePosition {
  readonly kind: 'clone';
  readonly id: string;
  /** The session's background copy is idle while the session is attached: a write leaves it work. */
  readonly copyIdle: boolean;
  readonly restoring: boolean;
  /** Tracks STD still needs from the clone (an instant restore copies them before a host touches them). */
  readonly toStd: TrackSet;
  /** Tracks restored whose cleared bits are not yet durable (made durable before a write lands on them). */
  readonly restoredNotDurable: TrackSet;
}

/** A pair on its R1: the volume feeds a remote mirror. */
export interface PairR1Position {
  readonly kind: 'pair-r1';
  /** The pair's name. */
  readonly id: string;
  readonly peer: string;
  /** Its invalid-track bitmap: a write marked as coming from there is the pair's own pull (restore). */
  readonly outPosition: string;
  readonly mode: PairMode;
  /** The pair is meant to replicate (intent), whatever the link does. */
  readonly replicating: boolean;
  /** onLinkFailure is fail-writes: host writes are refused while the pair cannot replicate. */
  readonly failWrites: boolean;
  /** The link to the peer is up and the peer knows the pair. */
  readonly linkUp: boolean;
  /** Writes may be shipped to R2 now (replicating, link up, reconciled, not protecting). */
  readonly canShip: boolean;
  /** Async: the ordered cycles run and capture writes. */
  readonly capturing: boolean;
  /** The tracks of the pair's extents; undefined: the whole volume. */
  readonly scope: TrackSet | undefined;
  /** False once the pair half was torn down (it still refuses, it no longer ships, owes or captures). */
  readonly live: boolean;
}

/** A pair on its R2: the volume receives a remote mirror's writes. */
export interface PairR2Position {
  readonly kind: 'pair-r2';
  readonly id: string;
  readonly peer: string;
  readonly volume: string;
  /** Tracks the volume's hosts may not write (the replicated extents while write-disabled). */
  readonly refused: TrackSet | undefined;
}

/**
 * A migration (docs/design/migration.md): the volume's other storage — the target's while copying,
 * VOL's old one after the cutover — which takes the volume's writes while it is mirrored.
 */
export interface MigrationPosition {
  readonly kind: 'migration';
  /** The target volume's name. */
  readonly id: string;
  /** The other storage receives the volume's writes (copying, cut over); false detached or finished. */
  readonly mirroring: boolean;
  /** Tracks the other storage lacks: the copy (or the replay) takes them, with the volume's data of then. */
  readonly left: TrackSet & { nextClear(from: number): number };
}

/**
 * An online import (docs/design/migration.md): the volume is filled from another NBD server's
 * export; tracks not fetched yet are fetched before a host reads or writes them.
 */
export interface ImportPosition {
  readonly kind: 'import';
  /** The position's id (its bitmap on the volume). */
  readonly id: string;
  /** Tracks not yet fetched from the source. */
  readonly left: TrackSet;
  /** Tracks fetched whose cleared bits are not durable yet (made durable before a write lands on them). */
  readonly fetchedNotDurable: TrackSet;
  /** --write-back: the volume's writes reach the source before they are acknowledged. */
  readonly writeBack: boolean;
}

/**
 * A journal session on one of its primary volumes (SPEC §6): every journal pair of the volume in
 * one position, so a write spanning extents that go to two secondaries asks for its numbers once.
 */
export interface JournalPosition {
  readonly kind: 'journal';
  readonly id: string;
  readonly journal: string;
  /** The tracks of the pairs' extents; undefined: the whole volume. */
  readonly scope: TrackSet | undefined;
}

/**
 * Every kind of position the write path knows. A new mirror kind (a journal, a migration target)
 * adds its value here and its rule to RULES below; TypeScript then insists the rule exists.
 */
export type PlanPosition = ClonePosition | PairR1Position | PairR2Position | MigrationPosition | ImportPosition | JournalPosition;
export type PlanPositionKind = PlanPosition['kind'];

/** The write being planned: its source, kind, byte range and tracks. */
export interface PlannedWrite {
  readonly source: WriteSource;
  readonly kind: 'write' | 'zero' | 'trim';
  readonly first: number;
  readonly last: number;
  readonly fua: boolean;
  /** The position the write comes from (a replica's own bitmap, a pair's pull): it does not go back there. */
  readonly fromPosition: string | undefined;
}

interface StepBase {
  /** The position's id, and its index in the list the plan was made from (the app dispatches on it). */
  readonly position: string;
  readonly at: number;
}

export type AdmitStep =
  /** The write fails with `error`; nothing else runs. */
  | (StepBase & { readonly kind: 'refuse'; readonly error: TidemarkError })
  | CopyOutStep
  /** The write leaves an attached clone work: its background copy is started (the write does not wait). */
  | (StepBase & { readonly kind: 'start-copy' })
  /** Async cycles may hold the write back (their spill disk behind the host); it waits until let in. */
  | (StepBase & { readonly kind: 'wait-admission' })
  | FetchStep
  /** A journal: the write waits for its global sequence numbers (last: a write ready to go gets them). */
  | (StepBase & { readonly kind: 'take-token' });

export type ApplyStep =
  /** The store takes the write (and its FUA flush). */
  | { readonly kind: 'apply-local' }
  /** Async: the write joins the cycle open now (before the local write). */
  | (StepBase & { readonly kind: 'begin-capture' })
  /** Sync / semi-sync: the write is shipped to R2 alongside the local write; it completes when both are done. */
  | (StepBase & { readonly kind: 'ship'; readonly mode: 'sync' | 'semisync' })
  /** The pair fails the write (link lost since admission, fail-writes); runs alongside, the local write still lands. */
  | (StepBase & { readonly kind: 'fail'; readonly error: TidemarkError })
  /** The write's records are owed to the mirror (the background push ships them). */
  | (StepBase & { readonly kind: 'owe' })
  /** Async: the written bytes go into the cycle the write joined. */
  | (StepBase & { readonly kind: 'capture' })
  /** The local write failed: the mirror may have got bytes the store lacks, so the tracks are owed whole. */
  | (StepBase & { readonly kind: 'owe-whole' })
  /** Migration: the write goes to the other storage too, alongside the local write. */
  | (StepBase & { readonly kind: 'mirror' })
  /** Import with write-back: the write goes to the source too, alongside the local write. */
  | (StepBase & { readonly kind: 'forward' })
  /**
   * A journal: the written bytes go into the journal's outgoing buffer under the write's tokens; the
   * write completes when the token rule holds (ahead: assigned; sync: durable at the secondaries).
   * Also when the local write failed: the numbers are handed out and the secondaries wait for them.
   */
  | (StepBase & { readonly kind: 'journal-capture' });

/**
 * How the app runs it: the steps before `apply-local` start in order, and any that returns work
 * runs alongside the local write; `apply-local` starts next; the write then waits for the local
 * write and for everything alongside. If the local write failed, `ifLocalFails` runs and the write
 * fails with the store's error. Otherwise every step after `apply-local` runs, in order — even when
 * something alongside failed (every position learns of bytes that are in the store: pair seed 53) —
 * and then the write fails with the first failure alongside, if any.
 */
export interface ApplyPlan {
  readonly steps: readonly ApplyStep[];
  readonly ifLocalFails: readonly ApplyStep[];
}

/** After the local flush: each makes a mirror durable too; they run together. */
/** flush-mirror: a sync mirror makes its writes durable; journal-flush: a journal's primary-side log is made durable. */
export type FlushStep = StepBase & { readonly kind: 'flush-mirror' | 'journal-flush' };

/**
 * A clone brings tracks first..last of STD up to date before a write or read lands on them (an
 * instant restore copies them from the clone). `durable`: before a write, the restored tracks'
 * cleared bits are made durable too (after a crash they must not be restored over the write).
 */
export type CopyOutStep = StepBase & {
  readonly kind: 'copy-out'; readonly first: number; readonly last: number; readonly durable: boolean;
};

/**
 * An import fetches tracks first..last's unfetched tracks from its source into the volume before a
 * read or write lands on them. `durable`: before a write, the fetched tracks' cleared bits are made
 * durable too (after a crash they must not be fetched again over the write).
 */
export type FetchStep = StepBase & {
  readonly kind: 'fetch'; readonly first: number; readonly last: number; readonly durable: boolean;
};

/** Before a host read, in order. */
export type ReadStep = CopyOutStep | FetchStep;

export type PlanStep = AdmitStep | ApplyStep | FlushStep | ReadStep;

interface Rule<P extends PlanPosition> {
  /** Before the write is ordered (host and replica writes only; copies are the volume's own business). */
  refuse?(p: P, w: PlannedWrite): TidemarkError | undefined;
  admit?(p: P, w: PlannedWrite, at: number, out: AdmitStep[]): void;
  /** Its admission steps come before other kinds' (work that may take a while and needs no one's leave). */
  readonly admitsEarly?: boolean;
  /** Its admission steps come after every other kind's (a journal's sequence number). */
  readonly admitsLast?: boolean;
  /** Steps that start with the local write (before it), and after it. */
  apply?(p: P, w: PlannedWrite, at: number, before: ApplyStep[], after: ApplyStep[], ifLocalFails: ApplyStep[]): void;
  flush?(p: P, at: number, out: FlushStep[]): void;
  read?(p: P, first: number, last: number, at: number, out: ReadStep[]): void;
}

const inScope = (scope: TrackSet | undefined, w: { first: number; last: number }): boolean =>
  scope === undefined || scope.anyInRange(w.first, w.last);

const shipsAlongside = (mode: PairMode): mode is 'sync' | 'semisync' => mode === 'sync' || mode === 'semisync';

const linkDown = (p: PairR1Position): TidemarkError =>
  new TidemarkError(ErrorCode.LinkDown, `pair ${p.id} cannot replicate (link to ${p.peer} is down) and is set to fail writes`);

/** Whether a clone session has work before tracks first..last are written. */
function cloneNeedsCopyOut(p: ClonePosition, first: number, last: number): boolean {
  if (!p.restoring && p.restoredNotDurable.isEmpty()) return false;
  return p.toStd.anyInRange(first, last) || p.restoredNotDurable.anyInRange(first, last);
}

const cloneRule: Rule<ClonePosition> = {
  admitsEarly: true,
  admit(p, w, at, out) {
    if (p.copyIdle) out.push({ kind: 'start-copy', position: p.id, at });
    if (cloneNeedsCopyOut(p, w.first, w.last)) out.push({ kind: 'copy-out', position: p.id, at, first: w.first, last: w.last, durable: true });
  },
  read(p, first, last, at, out) {
    if (p.restoring && p.toStd.anyInRange(first, last)) out.push({ kind: 'copy-out', position: p.id, at, first, last, durable: false });
  },
};

const pairR1Rule: Rule<PairR1Position> = {
  refuse(p, w) {
    // Refusals concern the volume's hosts; a replica write (a chain) is never refused by a pair
    // downstream of it: that pair owes the tracks instead.
    if (w.source !== 'host' || !inScope(p.scope, w)) return undefined;
    if (!p.replicating || !p.failWrites || p.linkUp) return undefined;
    return linkDown(p);
  },
  admit(p, _w, at, out) {
    if (p.capturing) out.push({ kind: 'wait-admission', position: p.id, at });
  },
  apply(p, w, at, before, after, ifLocalFails) {
    if (!p.live || !inScope(p.scope, w)) return;
    // R2 may get bytes R1 could not store: R1's real content is owed then.
    ifLocalFails.push({ kind: 'owe-whole', position: p.id, at });
    // Writes that make R1 equal to R2 (the pair's own pull during a restore) owe nothing.
    const ownPull = w.fromPosition === p.outPosition;
    if (p.capturing && !ownPull) {
      before.push({ kind: 'begin-capture', position: p.id, at });
      after.push({ kind: 'capture', position: p.id, at });
      return;
    }
    // A replica write is new data for this volume (it is the R2 of another pair: a chain), so it
    // ships like a host's. Internal copies (a clone restoring into this volume) are owed.
    const news = w.source === 'host' || (w.source === 'replica' && !ownPull);
    if (news && p.canShip && shipsAlongside(p.mode)) {
      before.push({ kind: 'ship', position: p.id, at, mode: p.mode });
      return;
    }
    if (w.source === 'host' && p.replicating && shipsAlongside(p.mode) && p.failWrites) {
      // The link went down after the write was let in: the pair fails it now. Its bytes may still
      // reach the store, so its records are owed either way.
      before.push({ kind: 'owe', position: p.id, at }, { kind: 'fail', position: p.id, at, error: linkDown(p) });
      return;
    }
    if (!ownPull) after.push({ kind: 'owe', position: p.id, at });
  },
  flush(p, at, out) {
    if (p.live && p.canShip && shipsAlongside(p.mode)) out.push({ kind: 'flush-mirror', position: p.id, at });
  },
};

const pairR2Rule: Rule<PairR2Position> = {
  refuse(p, w) {
    if (w.source !== 'host' || p.refused === undefined || !p.refused.anyInRange(w.first, w.last)) return undefined;
    return new TidemarkError(ErrorCode.VolumeWriteDisabled,
      `volume ${p.volume} is write-disabled in the extents it replicates from ${p.peer} (pair ${p.id})`, { volume: p.volume });
  },
};

/** Every track of first..last is still to be copied. */
const allLeft = (p: MigrationPosition, first: number, last: number): boolean => {
  const clear = p.left.nextClear(first);
  return clear === -1 || clear > last;
};

const migrationRule: Rule<MigrationPosition> = {
  apply(p, w, at, before, _after, ifLocalFails) {
    // Every source counts (a clone restoring into the volume changes what its hosts read).
    if (!p.mirroring) return;
    // The other storage may have got bytes the store refused: the tracks are copied again.
    ifLocalFails.push({ kind: 'owe-whole', position: p.id, at });
    // Not copied yet: the copy takes the track after this write (it reads in the write order).
    if (allLeft(p, w.first, w.last)) return;
    before.push({ kind: 'mirror', position: p.id, at });
  },
};

const importRule: Rule<ImportPosition> = {
  admitsEarly: true,
  admit(p, w, at, out) {
    if (p.left.anyInRange(w.first, w.last) || p.fetchedNotDurable.anyInRange(w.first, w.last)) {
      out.push({ kind: 'fetch', position: p.id, at, first: w.first, last: w.last, durable: true });
    }
  },
  apply(p, w, at, before) {
    // The import's own fills come from the source (marked as from its position): nothing to send back.
    if (p.writeBack && w.fromPosition !== p.id) before.push({ kind: 'forward', position: p.id, at });
  },
  flush(p, at, out) {
    if (p.writeBack) out.push({ kind: 'flush-mirror', position: p.id, at });
  },
  read(p, first, last, at, out) {
    if (p.left.anyInRange(first, last)) out.push({ kind: 'fetch', position: p.id, at, first, last, durable: false });
  },
};

const journalRule: Rule<JournalPosition> = {
  admitsLast: true,
  admit(p, w, at, out) {
    // Host writes only: a replica or copy written into a journal's primary volume is not journaled
    // (docs/design/journal.md, "what is not journaled").
    if (w.source === 'host' && inScope(p.scope, w)) out.push({ kind: 'take-token', position: p.id, at });
  },
  apply(p, w, at, _before, after, ifLocalFails) {
    if (w.source !== 'host' || !inScope(p.scope, w)) return;
    after.push({ kind: 'journal-capture', position: p.id, at });
    ifLocalFails.push({ kind: 'journal-capture', position: p.id, at });
  },
  flush(p, at, out) {
    // What a host flushed must survive power loss on the secondaries' behalf too: the log holds
    // the entries not yet acknowledged by them.
    out.push({ kind: 'journal-flush', position: p.id, at });
  },
};

const RULES: { readonly [K in PlanPositionKind]: Rule<Extract<PlanPosition, { kind: K }>> } = {
  'clone': cloneRule,
  'pair-r1': pairR1Rule,
  'pair-r2': pairR2Rule,
  'migration': migrationRule,
  'import': importRule,
  'journal': journalRule,
};

const ruleOf = (p: PlanPosition): Rule<PlanPosition> => RULES[p.kind] as Rule<PlanPosition>;

/**
 * Before a host or replica write takes its place in the write order. Run in order, each finished
 * before the next. A refusal comes alone: nothing else runs for a refused write.
 */
/**
 * 'early': only the first phase — work that brings the volume's own tracks up to date (a clone's
 * copy-out, an import's fetch). A large zero or trim runs it once for its whole range before the
 * range takes its place (that work writes into the volume and would wait for the range forever);
 * the rest (a cycle's admission, a journal's numbers) belongs to each piece, admitted as a write of
 * its own: a number taken for the whole range would name no data.
 */
export type AdmissionScope = 'all' | 'early';

export function planAdmission(positions: readonly PlanPosition[], w: PlannedWrite, scope: AdmissionScope = 'all'): AdmitStep[] {
  if (w.source === 'copy') return [];
  for (let at = 0; at < positions.length; at++) {
    const p = positions[at]!;
    const error = ruleOf(p).refuse?.(p, w);
    if (error) return [{ kind: 'refuse', position: p.id, at, error }];
  }
  // Clone work first: a copy-out may take a while and needs no cycle's leave; the cycles' wait
  // comes after it, so it lets in a write that is ready to go; a journal's token last of all, so
  // the number is taken by a write nothing else holds back (numbers are handed out in order).
  const steps: AdmitStep[] = [];
  for (let round = 0; round < (scope === 'early' ? 1 : 3); round++) {
    for (let at = 0; at < positions.length; at++) {
      const p = positions[at]!;
      const rule = ruleOf(p);
      const phase = rule.admitsEarly === true ? 0 : rule.admitsLast === true ? 2 : 1;
      if (phase === round) rule.admit?.(p, w, at, steps);
    }
  }
  return steps;
}

const NOTHING_BUT_LOCAL: ApplyPlan = { steps: [{ kind: 'apply-local' }], ifLocalFails: [] };

/** When the write holds its place in the order, its bits are marked and it is about to reach the store. */
export function planApply(positions: readonly PlanPosition[], w: PlannedWrite): ApplyPlan {
  const before: ApplyStep[] = [];
  const after: ApplyStep[] = [];
  const ifLocalFails: ApplyStep[] = [];
  for (let at = 0; at < positions.length; at++) {
    const p = positions[at]!;
    ruleOf(p).apply?.(p, w, at, before, after, ifLocalFails);
  }
  if (before.length === 0 && after.length === 0 && ifLocalFails.length === 0) return NOTHING_BUT_LOCAL;
  before.push({ kind: 'apply-local' });
  return { steps: after.length === 0 ? before : before.concat(after), ifLocalFails };
}

/** After the store made a host FLUSH durable: the mirrors that must be durable too, together. */
export function planFlush(positions: readonly PlanPosition[]): FlushStep[] {
  const out: FlushStep[] = [];
  for (let at = 0; at < positions.length; at++) {
    const p = positions[at]!;
    ruleOf(p).flush?.(p, at, out);
  }
  return out;
}

/** Before a host read of tracks first..last, in order. */
export function planRead(positions: readonly PlanPosition[], first: number, last: number): ReadStep[] {
  const out: ReadStep[] = [];
  for (let at = 0; at < positions.length; at++) {
    const p = positions[at]!;
    ruleOf(p).read?.(p, first, last, at, out);
  }
  return out;
}
