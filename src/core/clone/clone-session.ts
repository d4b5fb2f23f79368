// One clone session: a standard volume (STD) paired with a clone volume of the same geometry
// (SPEC §3, seed 001). Pure: the bitmaps and the state transitions; the caller moves the data.
//
// Bitmaps (one bit per track):
//   protection  tracks STD's hosts changed since this session last split (seed: PB bits). Set by every
//               STD host write in every state; cleared by split and by restore.
//   toClone     tracks the clone lacks while attached (the "moving mirror" STD→CLONE). Set by
//               establish (all), reestablish (protection | cloneOwn), and STD host writes while attached.
//   toStd       tracks STD still needs from the clone during a restore (CLONE→STD).
//   cloneOwn    tracks the clone's own hosts changed since the split (seed: M4b). Lives on the clone
//               volume's side; set by clone host writes while split.
import { TrackBitmap } from '../bitmap/track-bitmap.js';
import { ErrorCode, TidemarkError } from '../errors.js';
import { assert } from '../lib/assert.js';

export const CLONE_STATES = ['synchronizing', 'synchronized', 'split', 'restoring', 'restored'] as const;
export type CloneState = (typeof CLONE_STATES)[number];

export type CloneOperation = 'establish' | 'reestablish' | 'restore' | 'restore-incremental' | 'none';

export interface CloneProgress {
  /** Tracks the current operation copied so far. */
  tracksCopied: number;
  bytesCopied: number;
  /** When the current operation started (for the copy rate). */
  startedAtMs: number;
}

export interface CloneSessionRecord {
  readonly id: number;
  readonly std: string;
  readonly clone: string;
  readonly state: CloneState;
  readonly operation: CloneOperation;
  readonly splitAtMs: number | null;
  readonly progress: CloneProgress;
}

const invalidState = (message: string, details: Record<string, unknown>): TidemarkError =>
  new TidemarkError(ErrorCode.InvalidState, message, details);

export class CloneSession {
  state: CloneState;
  operation: CloneOperation;
  splitAtMs: number | null;
  progress: CloneProgress;

  constructor(
    readonly id: number,
    readonly std: string,
    readonly clone: string,
    /** Bitmaps are owned by the volumes' mirror positions; the session reads and writes them. */
    readonly protection: TrackBitmap,
    readonly toClone: TrackBitmap,
    readonly toStd: TrackBitmap,
    readonly cloneOwn: TrackBitmap,
    record?: Pick<CloneSessionRecord, 'state' | 'operation' | 'splitAtMs' | 'progress'>,
  ) {
    this.state = record?.state ?? 'synchronizing';
    this.operation = record?.operation ?? 'establish';
    this.splitAtMs = record?.splitAtMs ?? null;
    this.progress = record ? { ...record.progress } : { tracksCopied: 0, bytesCopied: 0, startedAtMs: 0 };
  }

  get trackCount(): number {
    return this.protection.size;
  }

  /** The clone is attached (not ready to its own hosts) in every state but split. */
  get attached(): boolean {
    return this.state !== 'split';
  }

  /** Tracks still to copy, in either direction. */
  get tracksToCopy(): number {
    return this.toClone.count() + this.toStd.count();
  }

  toRecord(): CloneSessionRecord {
    return {
      id: this.id, std: this.std, clone: this.clone, state: this.state, operation: this.operation,
      splitAtMs: this.splitAtMs, progress: { ...this.progress },
    };
  }

  private require(allowed: readonly CloneState[], command: string): void {
    if (!allowed.includes(this.state)) {
      throw invalidState(`cannot ${command} session ${this.std}→${this.clone}: it is ${this.state} (allowed from ${allowed.join(', ')})`,
        { std: this.std, clone: this.clone, state: this.state });
    }
  }

  private startOperation(operation: CloneOperation, nowMs: number): void {
    this.operation = operation;
    this.progress = { tracksCopied: 0, bytesCopied: 0, startedAtMs: nowMs };
  }

  /** Which bitmaps host writes mark in the current state (the caller applies this to its positions). */
  get marking(): { toClone: boolean; cloneOwn: boolean } {
    return { toClone: this.attached, cloneOwn: !this.attached };
  }

  /** A new session: every track is copied and every track counts as changed (seed 0036). */
  establish(nowMs: number): void {
    this.protection.setAll();
    this.toClone.setAll();
    this.toStd.clearAll();
    this.cloneOwn.clearAll();
    this.state = 'synchronizing';
    this.startOperation('establish', nowMs);
  }

  /**
   * Split: the clone holds STD's image at this instant. The caller must have held STD's writes and
   * copied every toClone track first, so the image is whole (never torn). Returns the tracks the
   * session saw change since its previous split — for --differential, the caller marks them invalid
   * on the clone's own mirror positions (seed 0041).
   */
  split(nowMs: number): TrackBitmap {
    this.require(['synchronized', 'restored'], 'split');
    assert(this.toClone.isEmpty() && this.toStd.isEmpty(), 'split with tracks still to copy');
    const changed = this.protection.copy();
    this.protection.clearAll();
    this.cloneOwn.clearAll();
    this.state = 'split';
    this.operation = 'none';
    this.splitAtMs = nowMs;
    return changed;
  }

  /** Reattach: copy only tracks changed on STD since the split or on the clone by its hosts (seed 0051). */
  reestablish(nowMs: number): void {
    this.require(['split'], 'reestablish');
    this.toClone.or(this.protection).or(this.cloneOwn);
    this.cloneOwn.clearAll();
    this.state = 'synchronizing';
    this.startOperation('reestablish', nowMs);
  }

  /**
   * Restore STD from the clone. Full: every track (seed 0059). Incremental: tracks changed on either
   * side (seed 0062). Returns the tracks that other sessions of STD must mark changed.
   */
  restore(incremental: boolean, nowMs: number): TrackBitmap {
    this.require(['split'], incremental ? 'restore --incremental' : 'restore');
    if (incremental) this.toStd.or(this.protection).or(this.cloneOwn);
    else this.toStd.setAll();
    const othersChanged = this.toStd.copy();
    this.protection.clearAll();
    this.cloneOwn.clearAll();
    this.toClone.clearAll();
    this.state = 'restoring';
    this.startOperation(incremental ? 'restore-incremental' : 'restore', nowMs);
    return othersChanged;
  }

  /** The session may end unless a restore is half done (STD would hold a mix of two images). */
  checkTerminate(): void {
    if (this.state === 'restoring') {
      throw invalidState(`cannot terminate session ${this.std}→${this.clone} while it is restoring (${this.toStd.count()} tracks left)`,
        { std: this.std, clone: this.clone, state: this.state });
    }
  }

  /** Next track to copy and its direction: restore first (hosts may be waiting on it), then mirror. */
  nextCopy(from = 0): { track: number; direction: 'to-std' | 'to-clone' } | undefined {
    let t = this.toStd.nextSet(from);
    if (t === -1 && from > 0) t = this.toStd.nextSet(0);
    if (t !== -1) return { track: t, direction: 'to-std' };
    t = this.toClone.nextSet(from);
    if (t === -1 && from > 0) t = this.toClone.nextSet(0);
    if (t !== -1) return { track: t, direction: 'to-clone' };
    return undefined;
  }

  /** A track was copied. Completes the operation's state change when nothing is left. */
  copied(track: number, direction: 'to-std' | 'to-clone', bytes: number): void {
    const bitmap = direction === 'to-std' ? this.toStd : this.toClone;
    if (!bitmap.test(track)) return; // already copied by another path (e.g. copy-before-write)
    bitmap.clear(track);
    this.progress.tracksCopied++;
    this.progress.bytesCopied += bytes;
    this.settle();
  }

  /** Moves synchronizing → synchronized and restoring → restored once their copies are done. */
  settle(): void {
    if (this.state === 'synchronizing' && this.toClone.isEmpty()) this.state = 'synchronized';
    if (this.state === 'restoring' && this.toStd.isEmpty()) this.state = 'restored';
  }
}
