// Values exchanged between the clone-session core (clone-set.ts) and the I/O path that executes its
// decisions. Everything here is plain data: the caller moves bytes, the core decides which.
import type { TrackBitmap } from '../bitmap/track-bitmap.js';
import type { Geometry } from '../volume/geometry.js';
import type { VolumeState } from '../volume/state.js';

export const SESSION_STATES = ['synchronizing', 'synchronized', 'split', 'restoring', 'restored', 'terminated'] as const;
/**
 * synchronizing  attached (clone not ready); tracks still to copy STD → clone.
 * synchronized   attached; nothing to copy; every STD host write is mirrored to the clone.
 * split          detached; the clone is ready to its own hosts and holds STD's image of the split.
 * restoring      attached; tracks still to copy clone → STD (and possibly mirror repairs STD → clone).
 * restored       attached; nothing to copy; STD equals the clone and writes are mirrored.
 * terminated     the session is gone (only ever reported, never stored).
 */
export type SessionState = (typeof SESSION_STATES)[number];
/** The states a live session can be in. */
export type LiveState = Exclude<SessionState, 'terminated'>;

export const CLONE_OPERATIONS = ['none', 'establish', 'reestablish', 'restore', 'restore-incremental', 'resync'] as const;
/**
 * What the current copy work belongs to. `resync` is copy work that arrived after an operation had
 * finished: another session's restore changed STD, a mirror write failed, or crash recovery.
 */
export type CloneOperation = (typeof CLONE_OPERATIONS)[number];

export type CopyDirection = 'to-clone' | 'to-std';

/** A volume as the core sees it: its name (for messages and persistence) and geometry. */
export interface VolumeRef {
  readonly name: string;
  readonly geometry: Geometry;
}

/** Inclusive track span, like tracksOf() returns. */
export interface TrackSpan {
  readonly first: number;
  readonly last: number;
}

/**
 * One track copy the caller must perform: read the whole track from the source volume, write it to
 * the target, then report copyDone (or copyFailed). The serial ties the ticket to one incarnation of
 * the session, so a ticket outliving a terminate is ignored rather than applied to a new session.
 */
export interface CopyTicket {
  readonly sessionId: number;
  readonly serial: number;
  readonly track: number;
  readonly direction: CopyDirection;
}

/** Part of a host write that must also be written to an attached clone. */
export interface MirrorWrite {
  readonly sessionId: number;
  readonly serial: number;
  readonly clone: string;
  /** Tracks of the write whose bytes go to the clone too; bytes outside them go to STD only. */
  readonly spans: readonly TrackSpan[];
}

/**
 * Decision for a host write to STD.
 * - restore-first: the write is not admitted yet. These tracks of a restoring session have not
 *   been restored; restore each (claimRestore, copy, copyDone — or wait for the copy already in
 *   flight), then ask again. Nothing was recorded.
 * - proceed: once every write in `after` is done, write the data to STD and each mirror, then call
 *   stdWriteDone(writeId, failed).
 */
export type StdWriteDecision = RestoreFirst | StdWriteProceed;

export interface StdWriteProceed {
  readonly kind: 'proceed';
  readonly writeId: number;
  /**
   * Earlier admitted writes overlapping this one and not yet done. No part of this write (STD or
   * mirror) may start before they complete: otherwise two overlapping writes could land in one
   * order on STD and the other on a clone, and the clone would differ with no bit saying so.
   */
  readonly after: readonly number[];
  readonly mirrors: readonly MirrorWrite[];
}

/** Tracks of the restoring session that a host I/O must wait for (see StdWriteDecision). */
export interface RestoreFirst {
  readonly kind: 'restore-first';
  readonly sessionId: number;
  readonly serial: number;
  /** Ascending; only tracks of the I/O's span. */
  readonly tracks: readonly number[];
}

/** Decision for a host read of STD: read STD, or restore these tracks first (instant restore). */
export type StdReadDecision = { readonly kind: 'proceed' } | RestoreFirst;

/** Result of claimRestore: a copy to run now, one already running (wait for it), or nothing to do. */
export type ClaimResult =
  | { readonly kind: 'claimed'; readonly ticket: CopyTicket }
  | { readonly kind: 'in-flight' }
  | { readonly kind: 'not-needed' };

/**
 * Result of copyDone.
 * - done: the track is copied; `state` is the session's state now (it may just have become
 *   synchronized or restored: `settled`).
 * - redo: a write raced the copy; the track stays to copy and nextCopy will hand it out again.
 * - ignored: the ticket belongs to a session that has since been terminated.
 */
export type CopyOutcome =
  | { readonly kind: 'done'; readonly state: SessionState; readonly settled: boolean }
  | { readonly kind: 'redo' }
  | { readonly kind: 'ignored' };

export interface CloneSessionStatus {
  readonly sessionId: number;
  readonly serial: number;
  readonly std: string;
  readonly clone: string;
  readonly state: SessionState;
  readonly operation: CloneOperation;
  /** Tracks still to copy for the current operation (both directions). */
  readonly tracksToCopy: number;
  /** Direction of the remaining copies: restores first, then STD → clone; null when none are left. */
  readonly direction: CopyDirection | null;
  readonly tracksCopied: number;
  readonly bytesCopied: number;
  readonly operationStartedAtMs: number | null;
  readonly splitAtMs: number | null;
  /** Protection bits: tracks STD changed since this session last split. */
  readonly protectedTracks: number;
  /** Tracks the clone's own hosts changed since the split. */
  readonly cloneChangedTracks: number;
  readonly copiesInFlight: number;
  readonly stdAccess: VolumeState;
  readonly cloneAccess: VolumeState;
}

/** Commands as validated data (the API layer builds these), for execute(). */
export type CloneCommand =
  | { readonly kind: 'establish'; readonly clone: VolumeRef }
  | { readonly kind: 'split'; readonly sessionId: number; readonly differential: boolean }
  | { readonly kind: 'reestablish'; readonly sessionId: number }
  | { readonly kind: 'restore'; readonly sessionId: number; readonly incremental: boolean }
  | { readonly kind: 'terminate'; readonly sessionId: number };

export interface SplitResult {
  readonly status: CloneSessionStatus;
  /**
   * Differential split only: tracks whose content on the clone changed since the previous split
   * (everything after an establish). The caller ORs them into the clone volume's own mirror
   * positions (its remote mirrors, its cascade sessions) so those tracks propagate. Null for a
   * plain split.
   */
  readonly differential: TrackBitmap | null;
}

export interface RestoreResult {
  readonly status: CloneSessionStatus;
  /** Tracks marked changed in every other session of STD (all of them for a full restore). */
  readonly othersMarkedTracks: number;
}

export interface TerminateResult {
  readonly status: CloneSessionStatus;
  /**
   * Whether the clone holds a whole image when the session ends: of the split instant (split), or of
   * STD (synchronized/restored, once in-flight mirror writes have completed). A session terminated
   * while synchronizing leaves a clone that is part old, part new: the caller should say so.
   */
  readonly cloneImage: 'whole' | 'partial';
}

export type CommandResult =
  | { readonly kind: 'established'; readonly status: CloneSessionStatus }
  | { readonly kind: 'split'; readonly result: SplitResult }
  | { readonly kind: 'reestablished'; readonly status: CloneSessionStatus }
  | { readonly kind: 'restore-started'; readonly result: RestoreResult }
  | { readonly kind: 'terminated'; readonly result: TerminateResult };

export interface RecoveryReport {
  /** Per session: tracks crash recovery added to its copy work (they may be recopied needlessly). */
  readonly sessions: ReadonlyArray<{ readonly sessionId: number; readonly clone: string; readonly addedTracks: number; readonly state: SessionState }>;
}
