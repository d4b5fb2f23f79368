// The clone sessions of one standard volume (STD): up to 16, each pairing STD with one clone volume
// of the same geometry (SPEC §3, seed 001 ¶0029–0063). Pure: commands, host I/O and copy progress
// come in as calls; what must happen to data goes out as decisions the caller executes.
// docs/design/clones.md explains the rules and what the caller must do; this file enforces them.
//
// Per session, one bit per track:
//   protection    tracks STD changed since the session last split (seed: PB column). Every STD
//                 host write sets it in every session, whatever the state.
//   cloneChanged  tracks the clone's own hosts changed since the split (seed: M4b). Kept until the
//                 next split, so a differential split after a reestablish still reports them.
//   toClone       tracks the attached clone lacks: copy STD → clone (seed: MM bits).
//   toStd         tracks a restore has not brought back yet: copy clone → STD.
// Per session, not persisted: copies in flight (bounded) and whether a write made one stale.
import { TrackBitmap } from '../bitmap/track-bitmap.js';
import { ErrorCode, TidemarkError, invalidArgument, invalidState, notFound } from '../errors.js';
import { assert, assertNever } from '../lib/assert.js';
import { trackRange } from '../volume/geometry.js';
import { checkHostAccess, type HostAccess, type VolumeState } from '../volume/state.js';
import {
  MAX_CLONE_NAME_BYTES, MAX_COPIES_IN_FLIGHT_PER_SESSION, MAX_OUTSTANDING_WRITES, MAX_SESSIONS_PER_VOLUME,
} from './clone-limits.js';
import type {
  ClaimResult, CloneCommand, CloneOperation, CloneSessionStatus, CommandResult, CopyDirection, CopyOutcome, CopyTicket,
  LiveState, MirrorWrite, RecoveryReport, RestoreFirst, RestoreResult, SessionState, SplitResult, StdReadDecision, StdWriteDecision, TerminateResult,
  TrackSpan, VolumeRef,
} from './clone-types.js';

interface InFlightCopy {
  readonly direction: CopyDirection;
  /** A write to the copy's source landed (or may have) after the copy read it: redo the copy. */
  stale: boolean;
}

/** One session's whole state. Exported for the codec only; nothing else may touch it. */
export interface SessionRecord {
  readonly id: number;
  readonly serial: number;
  readonly clone: string;
  state: LiveState;
  operation: CloneOperation;
  readonly protection: TrackBitmap;
  readonly cloneChanged: TrackBitmap;
  readonly toClone: TrackBitmap;
  readonly toStd: TrackBitmap;
  tracksCopied: number;
  bytesCopied: number;
  operationStartedAtMs: number | null;
  splitAtMs: number | null;
}

interface Session extends SessionRecord {
  readonly inFlight: Map<number, InFlightCopy>;
  /** Where the next background scan starts, so one busy region does not starve the rest. */
  cursor: number;
}

/** The persisted form of a whole set (see clone-codec.ts). */
export interface SetRecord {
  readonly std: string;
  readonly trackCount: number;
  readonly trackBytes: number;
  readonly sizeBytes: number;
  readonly nextSerial: number;
  readonly sessions: readonly SessionRecord[];
}

const isAttached = (state: LiveState): boolean => state !== 'split';
const encoder = new TextEncoder();

/** First track ≥ from set in `bits` and clear in `exclude`, a 32-bit word at a time; -1 if none. */
function nextSetExcluding(bits: TrackBitmap, exclude: TrackBitmap | undefined, from: number): number {
  if (from >= bits.size) return -1;
  const words = bits.words;
  const ex = exclude?.words;
  let w = from >>> 5;
  let word = words[w]! & ~(ex ? ex[w]! : 0) & ~((1 << (from & 31)) - 1);
  for (;;) {
    if (word !== 0) {
      const index = (w << 5) + (31 - Math.clz32(word & -word));
      return index < bits.size ? index : -1;
    }
    w++;
    if (w >= words.length) return -1;
    word = words[w]! & ~(ex ? ex[w]! : 0);
  }
}

function setsIn(bits: TrackBitmap, first: number, last: number): number[] {
  const out: number[] = [];
  for (let t = bits.nextSet(first); t !== -1 && t <= last; t = bits.nextSet(t + 1)) out.push(t);
  return out;
}

/** Maximal spans of first..last whose tracks are clear in `bits`. */
function clearSpans(bits: TrackBitmap, first: number, last: number): TrackSpan[] {
  const out: TrackSpan[] = [];
  let t = first;
  while (t <= last) {
    const clear = bits.nextClear(t);
    if (clear === -1 || clear > last) break;
    const set = bits.nextSet(clear);
    const end = set === -1 || set > last ? last : set - 1;
    out.push({ first: clear, last: end });
    t = end + 1;
  }
  return out;
}

export class CloneSet {
  private readonly slots: Array<Session | undefined> = new Array<Session | undefined>(MAX_SESSIONS_PER_VOLUME).fill(undefined);
  private nextSerial = 1;
  private nextWriteId = 1;
  /** STD host writes decided (proceed) and not yet reported done. */
  private readonly stdWrites = new Map<number, TrackSpan>();
  /** Clone host writes to split clones, not yet reported done. */
  private readonly cloneWrites = new Map<number, { readonly sessionId: number; readonly serial: number; readonly span: TrackSpan }>();

  constructor(readonly std: VolumeRef) {
    assert(std.geometry.trackCount > 0, 'a volume has at least one track');
  }

  get trackCount(): number {
    return this.std.geometry.trackCount;
  }

  // ---------------------------------------------------------------- commands

  /** Runs one validated command (the API layer's entry point); each kind is also a method. */
  execute(command: CloneCommand, nowMs: number): CommandResult {
    switch (command.kind) {
      case 'establish':
        return { kind: 'established', status: this.establish(command.clone, nowMs) };
      case 'split':
        return { kind: 'split', result: this.split(command.sessionId, command.differential, nowMs) };
      case 'reestablish':
        return { kind: 'reestablished', status: this.reestablish(command.sessionId, nowMs) };
      case 'restore':
        return { kind: 'restore-started', result: this.restore(command.sessionId, command.incremental, nowMs) };
      case 'terminate':
        return { kind: 'terminated', result: this.terminate(command.sessionId) };
      default:
        return assertNever(command, 'clone command');
    }
  }

  /**
   * Establish (seed ¶0032–0036): a new session in the lowest free slot, or a full re-copy of an
   * existing split session. Every track is marked to copy STD → clone and every protection bit is
   * set. The clone becomes not ready: the caller must stop and drain the clone's host I/O first.
   */
  establish(clone: VolumeRef, nowMs: number): CloneSessionStatus {
    if (clone.name === this.std.name) throw invalidArgument('a volume cannot be its own clone', { volume: clone.name });
    const nameBytes = encoder.encode(clone.name).length;
    if (nameBytes === 0 || nameBytes > MAX_CLONE_NAME_BYTES) {
      throw invalidArgument(`clone name must be 1 to ${MAX_CLONE_NAME_BYTES} bytes`, { clone: clone.name });
    }
    const g = this.std.geometry;
    if (clone.geometry.sizeBytes !== g.sizeBytes || clone.geometry.trackBytes !== g.trackBytes) {
      throw invalidArgument(`clone ${clone.name} must have the size and track size of ${this.std.name}`, {
        std: { sizeBytes: g.sizeBytes, trackBytes: g.trackBytes },
        clone: { sizeBytes: clone.geometry.sizeBytes, trackBytes: clone.geometry.trackBytes },
      });
    }
    let s = this.findByClone(clone.name);
    if (s) {
      this.requireState(s, ['split'], 'establish');
      this.requireNoCloneWrites(s, 'establish');
    } else {
      const slot = this.slots.indexOf(undefined);
      if (slot === -1) {
        throw new TidemarkError(ErrorCode.LimitExceeded,
          `${this.std.name} already has ${MAX_SESSIONS_PER_VOLUME} clone sessions, the most a volume can have`,
          { std: this.std.name, limit: MAX_SESSIONS_PER_VOLUME });
      }
      const n = this.trackCount;
      s = {
        id: slot, serial: this.nextSerial++, clone: clone.name, state: 'synchronizing', operation: 'establish',
        protection: new TrackBitmap(n), cloneChanged: new TrackBitmap(n), toClone: new TrackBitmap(n), toStd: new TrackBitmap(n),
        tracksCopied: 0, bytesCopied: 0, operationStartedAtMs: nowMs, splitAtMs: null, inFlight: new Map(), cursor: 0,
      };
      this.slots[slot] = s;
    }
    s.protection.setAll();
    s.cloneChanged.clearAll();
    s.toClone.setAll();
    s.toStd.clearAll();
    s.state = 'synchronizing';
    s.splitAtMs = null;
    this.startOperation(s, 'establish', nowMs);
    this.checkInvariants();
    return this.statusOf(s);
  }

  /**
   * Split (seed ¶0037–0044). Only from synchronized or restored — nothing left to copy — so the
   * clone's image is whole, and only when no STD host write is in flight (the caller holds new STD
   * writes and drains the ones in flight first): every write is then wholly in the clone's image or
   * wholly after it. Clears the protection and clone-changed bits; the clone becomes ready.
   */
  split(sessionId: number, differential: boolean, nowMs: number): SplitResult {
    const s = this.get(sessionId);
    this.requireState(s, ['synchronized', 'restored'], differential ? 'split --differential' : 'split');
    if (this.stdWrites.size > 0) {
      throw new TidemarkError(ErrorCode.VolumeBusy,
        `cannot split ${this.std.name}→${s.clone}: ${this.stdWrites.size} host write(s) to ${this.std.name} in flight; hold new writes and drain them first`,
        { std: this.std.name, clone: s.clone, writesInFlight: this.stdWrites.size });
    }
    assert(s.toClone.isEmpty() && s.toStd.isEmpty() && s.inFlight.size === 0, 'a settled session has no copy work');
    // What changed on the clone since the previous split: STD's changes it received, and its own
    // hosts' changes it lost to the reestablish copy (seed ¶0041 marks the PB bits; the M4b bits are
    // added so a clone whose own writes were overwritten also propagates those tracks).
    const diff = differential ? s.protection.copy().or(s.cloneChanged) : null;
    s.protection.clearAll();
    s.cloneChanged.clearAll();
    s.state = 'split';
    s.splitAtMs = nowMs;
    this.startOperation(s, 'none', null);
    this.checkInvariants();
    return { status: this.statusOf(s), differential: diff };
  }

  /**
   * Reestablish (seed ¶0048–0054): reattach and copy only tracks changed on STD (protection) or on
   * the clone (cloneChanged) since the split. The caller stops and drains the clone's host I/O first.
   */
  reestablish(sessionId: number, nowMs: number): CloneSessionStatus {
    const s = this.get(sessionId);
    this.requireState(s, ['split'], 'reestablish');
    this.requireNoCloneWrites(s, 'reestablish');
    s.toClone.or(s.protection).or(s.cloneChanged);
    this.startOperation(s, 'reestablish', nowMs);
    s.state = s.toClone.isEmpty() ? 'synchronized' : 'synchronizing';
    this.checkInvariants();
    return this.statusOf(s);
  }

  /**
   * Restore (seed ¶0055–0059) or incremental restore (¶0060–0063): copy clone → STD every track, or
   * only tracks changed on either side. This session's protection bits are cleared; every other
   * session counts the copied tracks as changed (and an attached one must copy them again).
   * Requires: no other session restoring, no STD write in flight (seed ¶0056: no write pending on
   * STD), no write in flight to this clone.
   */
  restore(sessionId: number, incremental: boolean, nowMs: number): RestoreResult {
    const s = this.get(sessionId);
    const command = incremental ? 'restore --incremental' : 'restore';
    this.requireState(s, ['split'], command);
    const other = this.live().find((o) => o.state === 'restoring');
    if (other) {
      throw invalidState(`cannot ${command} ${this.std.name} from ${s.clone}: ${other.clone} is restoring it`,
        { std: this.std.name, clone: s.clone, restoring: other.clone });
    }
    if (this.stdWrites.size > 0) {
      throw new TidemarkError(ErrorCode.VolumeBusy,
        `cannot ${command} ${this.std.name}: ${this.stdWrites.size} host write(s) in flight; hold new writes and drain them first`,
        { std: this.std.name, clone: s.clone, writesInFlight: this.stdWrites.size });
    }
    this.requireNoCloneWrites(s, command);
    const tracks = incremental ? s.protection.copy().or(s.cloneChanged) : TrackBitmap.full(this.trackCount);
    s.toStd.or(tracks);
    s.protection.clearAll();
    this.startOperation(s, incremental ? 'restore-incremental' : 'restore', nowMs);
    s.state = s.toStd.isEmpty() ? 'restored' : 'restoring';
    this.markStdChanged(tracks, s, nowMs);
    this.checkInvariants();
    return { status: this.statusOf(s), othersMarkedTracks: tracks.count() };
  }

  /**
   * Ends a session in any state but restoring (STD would be left part restored, part not: a mix of
   * two images no host ever wrote). The clone becomes ready to its hosts, so nothing of the session
   * may still be writing to it: the caller stops issuing its copies and waits for those in flight,
   * and for an attached session holds and drains STD writes (their mirror writes target the clone).
   */
  terminate(sessionId: number): TerminateResult {
    const s = this.get(sessionId);
    this.requireState(s, ['synchronizing', 'synchronized', 'split', 'restored'], 'terminate');
    if (s.inFlight.size > 0 || (isAttached(s.state) && this.stdWrites.size > 0)) {
      throw new TidemarkError(ErrorCode.VolumeBusy,
        `cannot terminate ${this.std.name}→${s.clone}: ${s.inFlight.size} copies and ${isAttached(s.state) ? this.stdWrites.size : 0} mirrored host writes still in flight; wait for them first`,
        { std: this.std.name, clone: s.clone, copiesInFlight: s.inFlight.size, writesInFlight: this.stdWrites.size });
    }
    const cloneImage = s.state === 'synchronizing' ? 'partial' : 'whole';
    this.slots[s.id] = undefined;
    const status: CloneSessionStatus = { ...this.statusOf(s), state: 'terminated', cloneAccess: 'ready', copiesInFlight: 0 };
    this.checkInvariants();
    return { status, cloneImage };
  }

  // ---------------------------------------------------------------- host I/O

  /**
   * A host write to STD tracks first..last. Either the write must wait for restores (restore-first),
   * or it is admitted: every session's protection bits are set, copies in flight from those tracks
   * are made stale, and each attached session whose clone already holds a track gets the write
   * mirrored (tracks still to copy stay marked: the copy will carry the new data).
   */
  stdWrite(first: number, last: number): StdWriteDecision {
    this.checkSpan(first, last);
    const pending = this.pendingRestore(first, last);
    if (pending) return pending;
    this.checkWriteBound();
    const mirrors: MirrorWrite[] = [];
    for (const s of this.slots) {
      if (!s) continue;
      s.protection.setRange(first, last);
      if (!isAttached(s.state)) continue;
      this.staleCopies(s, first, last);
      const spans = clearSpans(s.toClone, first, last);
      if (spans.length > 0) mirrors.push({ sessionId: s.id, serial: s.serial, clone: s.clone, spans });
    }
    const after: number[] = [];
    for (const [id, w] of this.stdWrites) if (w.first <= last && first <= w.last) after.push(id);
    const writeId = this.nextWriteId++;
    this.stdWrites.set(writeId, { first, last });
    return { kind: 'proceed', writeId, after, mirrors };
  }

  /**
   * The STD write and its mirror writes have completed. `failed` lists mirror writes that did not
   * reach their clone: those tracks become copy work again. When that happens the caller must
   * persist the set before acknowledging the host (persistBeforeAck), so a crash cannot forget that
   * the clone lacks data the host was told is written.
   */
  stdWriteDone(writeId: number, failed: readonly MirrorWrite[] = []): { readonly persistBeforeAck: boolean } {
    const span = this.stdWrites.get(writeId);
    assert(span !== undefined, `STD write ${writeId} is not in flight`);
    this.stdWrites.delete(writeId);
    let persistBeforeAck = false;
    for (const m of failed) {
      const s = this.slots[m.sessionId];
      if (!s || s.serial !== m.serial || !isAttached(s.state)) continue;
      for (const sp of m.spans) {
        assert(sp.first >= span.first && sp.last <= span.last, 'a failed mirror lies inside its write');
        this.addCopyWork(s, sp.first, sp.last);
      }
      persistBeforeAck = true;
    }
    if (persistBeforeAck) this.checkInvariants();
    return { persistBeforeAck };
  }

  /** A host read of STD: instant restore serves tracks not restored yet by restoring them first. */
  stdRead(first: number, last: number): StdReadDecision {
    this.checkSpan(first, last);
    return this.pendingRestore(first, last) ?? { kind: 'proceed' };
  }

  /**
   * A host write to a split clone: sets its changed bits. The caller calls cloneWriteDone when the
   * write completes. Refused (VolumeNotReady) while the clone is attached.
   */
  cloneWrite(sessionId: number, first: number, last: number): { readonly writeId: number } {
    const s = this.get(sessionId);
    checkHostAccess(s.clone, this.cloneAccessOf(s.state), 'write');
    this.checkSpan(first, last);
    this.checkWriteBound();
    s.cloneChanged.setRange(first, last);
    const writeId = this.nextWriteId++;
    this.cloneWrites.set(writeId, { sessionId: s.id, serial: s.serial, span: { first, last } });
    return { writeId };
  }

  cloneWriteDone(writeId: number): void {
    assert(this.cloneWrites.delete(writeId), `clone write ${writeId} is not in flight`);
  }

  /** Host access per volume of a session: STD is always ready; the clone only when split. */
  access(sessionId: number): { readonly std: VolumeState; readonly clone: VolumeState } {
    return { std: 'ready', clone: this.cloneAccessOf(this.get(sessionId).state) };
  }

  /** Throws the stable VolumeNotReady error when the clone's hosts may not do this. */
  checkCloneAccess(sessionId: number, access: HostAccess): void {
    const s = this.get(sessionId);
    checkHostAccess(s.clone, this.cloneAccessOf(s.state), access);
  }

  // ---------------------------------------------------------------- copy engine

  /**
   * Up to `budget` tracks to copy for one session (bounded by its in-flight limit): restores first
   * (hosts may be waiting on them), then STD → clone. Skipped for now: tracks already in flight,
   * tracks under an STD host write in flight (the copy would read around it), and for STD → clone,
   * tracks another session has yet to restore (STD does not hold their final data yet).
   */
  nextCopy(sessionId: number, budget: number): CopyTicket[] {
    assert(Number.isSafeInteger(budget) && budget >= 0, `copy budget ${budget}`);
    const s = this.get(sessionId);
    const out: CopyTicket[] = [];
    if (!isAttached(s.state)) return out;
    const room = Math.min(budget, MAX_COPIES_IN_FLIGHT_PER_SESSION - s.inFlight.size);
    if (room <= 0) return out;
    const restoring = this.live().find((o) => o.state === 'restoring' && o !== s);
    this.scan(s, s.toStd, undefined, 'to-std', room, out);
    this.scan(s, s.toClone, restoring?.toStd, 'to-clone', room, out);
    return out;
  }

  /**
   * Claims the restore of one track for a host I/O waiting on it (instant restore). `in-flight`:
   * the copy is already running — wait for it, then ask the I/O decision again.
   */
  claimRestore(sessionId: number, track: number): ClaimResult {
    const s = this.get(sessionId);
    this.checkSpan(track, track);
    if (!s.toStd.test(track)) return { kind: 'not-needed' };
    const running = s.inFlight.get(track);
    if (running) {
      assert(running.direction === 'to-std', 'a track pending restore is only ever copied to STD');
      return { kind: 'in-flight' };
    }
    // No STD write can be in flight here: writes to unrestored tracks are not admitted, and a
    // restore starts only once STD's writes have drained.
    assert(!this.underStdWrite(track), `STD write in flight on unrestored track ${track}`);
    s.inFlight.set(track, { direction: 'to-std', stale: false });
    return { kind: 'claimed', ticket: { sessionId: s.id, serial: s.serial, track, direction: 'to-std' } };
  }

  /**
   * The caller read the ticket's track from the source and wrote it to the target. A stale copy
   * (a write raced it) leaves the track to copy; otherwise the track is done, and the session
   * settles (synchronizing → synchronized, restoring → restored) when nothing is left.
   */
  copyDone(ticket: CopyTicket): CopyOutcome {
    const s = this.slots[ticket.sessionId];
    if (!s || s.serial !== ticket.serial) return { kind: 'ignored' };
    const copy = s.inFlight.get(ticket.track);
    assert(copy !== undefined && copy.direction === ticket.direction, `copy of track ${ticket.track} ${ticket.direction} is not in flight`);
    s.inFlight.delete(ticket.track);
    if (copy.stale) return { kind: 'redo' };
    const bits = ticket.direction === 'to-std' ? s.toStd : s.toClone;
    assert(bits.test(ticket.track), 'a copy in flight is still marked to copy');
    bits.clear(ticket.track);
    s.tracksCopied++;
    s.bytesCopied += trackRange(this.std.geometry, ticket.track).length;
    const before = s.state;
    this.settle(s);
    return { kind: 'done', state: s.state, settled: before !== s.state };
  }

  /** The copy failed (I/O error): the track stays to copy. */
  copyFailed(ticket: CopyTicket): void {
    const s = this.slots[ticket.sessionId];
    if (!s || s.serial !== ticket.serial) return;
    const copy = s.inFlight.get(ticket.track);
    assert(copy !== undefined && copy.direction === ticket.direction, `copy of track ${ticket.track} is not in flight`);
    s.inFlight.delete(ticket.track);
  }

  // ---------------------------------------------------------------- recovery

  /**
   * After loading the last persisted set: every track that may have been written since that persist
   * — on STD (`stdMaybeWritten`) or on a clone (`cloneMaybeWritten`, by clone volume name), by host
   * writes or copies — is treated as changed. Split sessions: STD's tracks become protection bits,
   * the clone's become clone-changed bits. Attached sessions: both become STD → clone copy work
   * (STD holds the data a host may have been told is written; a track still pending restore stays a
   * restore). Conservative: may recopy, never misses. Call once, before any I/O.
   */
  recover(stdMaybeWritten: TrackBitmap, cloneMaybeWritten: ReadonlyMap<string, TrackBitmap>, nowMs: number): RecoveryReport {
    assert(this.stdWrites.size === 0 && this.cloneWrites.size === 0, 'recover runs before any I/O');
    assert(stdMaybeWritten.size === this.trackCount, 'recovery bitmap size');
    const sessions: Array<RecoveryReport['sessions'][number]> = [];
    for (const s of this.live()) {
      assert(s.inFlight.size === 0, 'recover runs before any copy');
      const cloneBits = cloneMaybeWritten.get(s.clone);
      if (cloneBits) assert(cloneBits.size === this.trackCount, 'recovery bitmap size');
      s.protection.or(stdMaybeWritten);
      let added = 0;
      if (isAttached(s.state)) {
        const work = stdMaybeWritten.copy();
        if (cloneBits) work.or(cloneBits);
        work.andNot(s.toStd).andNot(s.toClone);
        added = work.count();
        if (added > 0) this.addCopyWorkBits(s, work, nowMs);
      } else if (cloneBits) {
        added = cloneBits.copy().andNot(s.cloneChanged).count();
        s.cloneChanged.or(cloneBits);
      }
      sessions.push({ sessionId: s.id, clone: s.clone, addedTracks: added, state: s.state });
    }
    this.checkInvariants();
    return { sessions };
  }

  // ---------------------------------------------------------------- queries

  sessionIdOf(cloneName: string): number | undefined {
    return this.findByClone(cloneName)?.id;
  }

  status(sessionId: number): CloneSessionStatus {
    return this.statusOf(this.get(sessionId));
  }

  list(): CloneSessionStatus[] {
    return this.live().map((s) => this.statusOf(s));
  }

  get sessionCount(): number {
    return this.live().length;
  }

  get stdWritesInFlight(): number {
    return this.stdWrites.size;
  }

  /** Copies of a session's bitmaps, for reports and tests (never the live ones). */
  bitmaps(sessionId: number): { protection: TrackBitmap; cloneChanged: TrackBitmap; toClone: TrackBitmap; toStd: TrackBitmap } {
    const s = this.get(sessionId);
    return { protection: s.protection.copy(), cloneChanged: s.cloneChanged.copy(), toClone: s.toClone.copy(), toStd: s.toStd.copy() };
  }

  // ---------------------------------------------------------------- persistence (see clone-codec.ts)

  /**
   * The set as it must be persisted. An STD write in flight may have reached STD but not yet its
   * mirrors, and may finish after this record is taken — when the activity logs may no longer
   * cover the track it already wrote. So each attached session records the tracks of every STD
   * write in flight as still to copy: after a crash they are copied again (a few tracks, bounded by
   * the host queue depth), never missed. Protection bits need no such care: they were set when the
   * write was admitted.
   */
  toRecord(): SetRecord {
    const g = this.std.geometry;
    const inFlight = new TrackBitmap(this.trackCount);
    for (const w of this.stdWrites.values()) inFlight.setRange(w.first, w.last);
    return {
      std: this.std.name, trackCount: g.trackCount, trackBytes: g.trackBytes, sizeBytes: g.sizeBytes,
      nextSerial: this.nextSerial,
      sessions: this.live().map((s) => {
        const toClone = s.toClone.copy();
        let state = s.state;
        let operation = s.operation;
        if (isAttached(s.state) && !inFlight.isEmpty()) {
          toClone.or(inFlight).andNot(s.toStd);
          if (!toClone.equals(s.toClone) && (state === 'synchronized' || state === 'restored')) {
            state = 'synchronizing';
            operation = 'resync';
          }
        }
        return {
          id: s.id, serial: s.serial, clone: s.clone, state, operation,
          protection: s.protection.copy(), cloneChanged: s.cloneChanged.copy(), toClone, toStd: s.toStd.copy(),
          tracksCopied: s.tracksCopied, bytesCopied: s.bytesCopied, operationStartedAtMs: s.operationStartedAtMs, splitAtMs: s.splitAtMs,
        };
      }),
    };
  }

  /** Rebuilds a set from a decoded record; the codec has validated shapes, this checks meaning. */
  static fromRecord(std: VolumeRef, record: SetRecord): CloneSet {
    const corrupt = (why: string): TidemarkError =>
      new TidemarkError(ErrorCode.MetadataCorrupt, `clone sessions of ${std.name}: ${why}`, { std: std.name });
    const g = std.geometry;
    if (record.std !== std.name) throw corrupt(`record belongs to volume ${record.std}`);
    if (record.trackCount !== g.trackCount || record.trackBytes !== g.trackBytes || record.sizeBytes !== g.sizeBytes) {
      throw corrupt('geometry differs from the volume');
    }
    const set = new CloneSet(std);
    set.nextSerial = record.nextSerial;
    const serials = new Set<number>();
    for (const r of record.sessions) {
      if (!Number.isInteger(r.id) || r.id < 0 || r.id >= MAX_SESSIONS_PER_VOLUME || set.slots[r.id]) throw corrupt(`bad or repeated session id ${r.id}`);
      if (r.serial <= 0 || r.serial >= record.nextSerial || serials.has(r.serial)) throw corrupt(`bad or repeated serial ${r.serial}`);
      if (r.clone === std.name || set.findByClone(r.clone)) throw corrupt(`clone ${r.clone} named twice`);
      for (const b of [r.protection, r.cloneChanged, r.toClone, r.toStd]) if (b.size !== g.trackCount) throw corrupt('bitmap size');
      if (!r.toStd.isEmpty() && r.state !== 'restoring') throw corrupt(`session ${r.id} has restore work while ${r.state}`);
      if (r.state === 'split' && !r.toClone.isEmpty()) throw corrupt(`split session ${r.id} has copy work`);
      if ((r.state === 'synchronized' || r.state === 'restored') && !r.toClone.isEmpty()) throw corrupt(`${r.state} session ${r.id} has copy work`);
      if (r.toClone.copy().and(r.toStd).count() !== 0) throw corrupt(`session ${r.id} copies a track both ways`);
      serials.add(r.serial);
      set.slots[r.id] = {
        ...r, protection: r.protection.copy(), cloneChanged: r.cloneChanged.copy(), toClone: r.toClone.copy(), toStd: r.toStd.copy(),
        inFlight: new Map(), cursor: 0,
      };
    }
    if (set.live().filter((s) => s.state === 'restoring').length > 1) throw corrupt('two sessions restoring');
    set.checkInvariants();
    return set;
  }

  /** Asserts what must hold between calls; a failure is a bug. */
  checkInvariants(): void {
    let restoring = 0;
    const names = new Set<string>();
    for (const s of this.live()) {
      assert(!names.has(s.clone), `clone ${s.clone} in two sessions`);
      names.add(s.clone);
      // Background copies are bounded by nextCopy; claims beyond that by the host I/O waiting on them.
      assert(s.inFlight.size <= this.trackCount, 'copies in flight bounded');
      for (const [track, copy] of s.inFlight) {
        assert((copy.direction === 'to-std' ? s.toStd : s.toClone).test(track), `copy in flight of track ${track} not marked`);
      }
      assert(s.toClone.copy().and(s.toStd).isEmpty(), 'a track is copied one way at a time');
      switch (s.state) {
        case 'split':
          assert(s.toClone.isEmpty() && s.toStd.isEmpty() && s.inFlight.size === 0, 'a split session copies nothing');
          break;
        case 'synchronizing':
          assert(s.toStd.isEmpty(), 'only a restoring session restores');
          break;
        case 'synchronized':
        case 'restored':
          assert(s.toClone.isEmpty() && s.toStd.isEmpty(), `${s.state} means nothing left to copy`);
          break;
        case 'restoring':
          restoring++;
          break;
        default:
          assertNever(s.state, 'session state');
      }
    }
    assert(restoring <= 1, 'one restore at a time');
  }

  // ---------------------------------------------------------------- internals

  private live(): Session[] {
    return this.slots.filter((s): s is Session => s !== undefined);
  }

  private findByClone(name: string): Session | undefined {
    return this.live().find((s) => s.clone === name);
  }

  private get(sessionId: number): Session {
    const s = Number.isInteger(sessionId) ? this.slots[sessionId] : undefined;
    if (!s) throw notFound(`no clone session ${sessionId} on ${this.std.name}`, { std: this.std.name, sessionId });
    return s;
  }

  private requireState(s: Session, allowed: readonly LiveState[], command: string): void {
    if (allowed.includes(s.state)) return;
    const left = s.toClone.count() + s.toStd.count();
    throw invalidState(
      `cannot ${command} ${this.std.name}→${s.clone}: it is ${s.state}${left > 0 ? ` (${left} tracks left to copy)` : ''}; allowed from ${allowed.join(', ')}`,
      { std: this.std.name, clone: s.clone, state: s.state, allowed: [...allowed], tracksToCopy: left });
  }

  private requireNoCloneWrites(s: Session, command: string): void {
    let n = 0;
    for (const w of this.cloneWrites.values()) if (w.sessionId === s.id && w.serial === s.serial) n++;
    if (n > 0) {
      throw new TidemarkError(ErrorCode.VolumeBusy,
        `cannot ${command}: ${n} host write(s) to clone ${s.clone} in flight; stop its host I/O and drain it first`,
        { std: this.std.name, clone: s.clone, writesInFlight: n });
    }
  }

  private checkSpan(first: number, last: number): void {
    assert(Number.isSafeInteger(first) && Number.isSafeInteger(last) && first >= 0 && first <= last && last < this.trackCount,
      `tracks ${first}..${last} outside ${this.std.name} (${this.trackCount} tracks)`);
  }

  private checkWriteBound(): void {
    if (this.stdWrites.size + this.cloneWrites.size >= MAX_OUTSTANDING_WRITES) {
      throw new TidemarkError(ErrorCode.LimitExceeded,
        `more than ${MAX_OUTSTANDING_WRITES} host writes in flight on ${this.std.name} and its clones`,
        { std: this.std.name, limit: MAX_OUTSTANDING_WRITES });
    }
  }

  private cloneAccessOf(state: SessionState): VolumeState {
    switch (state) {
      case 'split':
      case 'terminated':
        return 'ready';
      case 'synchronizing':
      case 'synchronized':
      case 'restoring':
      case 'restored':
        return 'not-ready';
      default:
        return assertNever(state, 'session state');
    }
  }

  /** The restore-first decision for a span, if the restoring session has not restored all of it. */
  private pendingRestore(first: number, last: number): RestoreFirst | undefined {
    for (const r of this.slots) {
      if (r?.state !== 'restoring') continue;
      if (!r.toStd.anyInRange(first, last)) return undefined;
      return { kind: 'restore-first', sessionId: r.id, serial: r.serial, tracks: setsIn(r.toStd, first, last) };
    }
    return undefined;
  }

  private underStdWrite(track: number): boolean {
    for (const w of this.stdWrites.values()) if (w.first <= track && track <= w.last) return true;
    return false;
  }

  /** A write to STD tracks first..last makes copies from those tracks stale (they may have read old data). */
  private staleCopies(s: Session, first: number, last: number): void {
    if (s.inFlight.size === 0) return;
    if (last - first + 1 < s.inFlight.size) {
      for (let t = first; t <= last; t++) {
        const c = s.inFlight.get(t);
        if (c && c.direction === 'to-clone') c.stale = true;
      }
    } else {
      for (const [t, c] of s.inFlight) if (t >= first && t <= last && c.direction === 'to-clone') c.stale = true;
    }
  }

  private scan(s: Session, bits: TrackBitmap, exclude: TrackBitmap | undefined, direction: CopyDirection, room: number, out: CopyTicket[]): void {
    const start = s.cursor < this.trackCount ? s.cursor : 0;
    // Two passes: cursor → end, then 0 → cursor, so the scan wraps once.
    for (const [from, to] of [[start, this.trackCount], [0, start]] as const) {
      let t = nextSetExcluding(bits, exclude, from);
      while (t !== -1 && t < to && out.length < room) {
        if (!s.inFlight.has(t) && !this.underStdWrite(t)) {
          s.inFlight.set(t, { direction, stale: false });
          out.push({ sessionId: s.id, serial: s.serial, track: t, direction });
          s.cursor = t + 1;
        }
        t = nextSetExcluding(bits, exclude, t + 1);
      }
      if (out.length >= room) return;
    }
  }

  /** New STD → clone copy work for tracks first..last of an attached session. */
  private addCopyWork(s: Session, first: number, last: number): void {
    const work = new TrackBitmap(this.trackCount);
    work.setRange(first, last);
    work.andNot(s.toStd);
    this.addCopyWorkBits(s, work, null);
  }

  private addCopyWorkBits(s: Session, work: TrackBitmap, nowMs: number | null): void {
    assert(isAttached(s.state), 'copy work only for an attached clone');
    if (work.isEmpty()) return;
    s.toClone.or(work);
    for (const [t, c] of s.inFlight) if (c.direction === 'to-clone' && work.test(t)) c.stale = true;
    if (s.state === 'synchronized' || s.state === 'restored') {
      s.state = 'synchronizing';
      this.startOperation(s, 'resync', nowMs ?? s.operationStartedAtMs);
    }
  }

  /**
   * STD's content of `tracks` is about to change under every session but `except` (a restore):
   * they count those tracks as changed (seed ¶0059 step 183, ¶0062 step 206), and an attached one
   * must copy them again — only after the restore has brought each back (nextCopy skips them).
   */
  private markStdChanged(tracks: TrackBitmap, except: Session, nowMs: number): void {
    for (const o of this.live()) {
      if (o === except) continue;
      assert(o.state !== 'restoring', 'one restore at a time');
      o.protection.or(tracks);
      if (isAttached(o.state)) this.addCopyWorkBits(o, tracks, nowMs);
    }
  }

  private startOperation(s: Session, operation: CloneOperation, nowMs: number | null): void {
    s.operation = operation;
    s.tracksCopied = 0;
    s.bytesCopied = 0;
    s.operationStartedAtMs = nowMs;
  }

  private settle(s: Session): void {
    if (s.state === 'synchronizing' && s.toClone.isEmpty()) s.state = 'synchronized';
    else if (s.state === 'restoring' && s.toStd.isEmpty() && s.toClone.isEmpty()) s.state = 'restored';
  }

  private statusOf(s: Session): CloneSessionStatus {
    const toStd = s.toStd.count();
    const toClone = s.toClone.count();
    return {
      sessionId: s.id, serial: s.serial, std: this.std.name, clone: s.clone, state: s.state, operation: s.operation,
      tracksToCopy: toStd + toClone, direction: toStd > 0 ? 'to-std' : toClone > 0 ? 'to-clone' : null,
      tracksCopied: s.tracksCopied, bytesCopied: s.bytesCopied,
      operationStartedAtMs: s.operationStartedAtMs, splitAtMs: s.splitAtMs,
      protectedTracks: s.protection.count(), cloneChangedTracks: s.cloneChanged.count(), copiesInFlight: s.inFlight.size,
      stdAccess: 'ready', cloneAccess: this.cloneAccessOf(s.state),
    };
  }
}
