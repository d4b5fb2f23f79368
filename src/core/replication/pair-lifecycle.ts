// The lifecycle of one pair half as a sans-I/O state machine: what the half should do next, given
// its record, the link to its peer and what the peer last said. The app (PairManager) feeds it
// events — the link went up or down, a command changed the record, the peer answered, an action it
// asked for finished — and executes the actions `poll()` returns; the pair simulator runs the same
// machine through the same app code.
//
// Rules it keeps:
// - After the link returns, R1 ships nothing (no push, no forwarded write, no cycles) until it has
//   compared notes with R2 for that very link session (`reconcile`): a generation R2 moved on
//   (a swap or a failover there), whether R2 still replicates. A reconcile whose session ended
//   before it finished counts for nothing (found by the --protect-with tests: a push slipped in
//   before reconcile asked for R2's clone to be split, so the clone no longer held R2's image).
// - A resync of a pair with --protect-with first has R2 split its protection clone; nothing ships
//   until R2 says it did. R2 refreshes the clone only if R1 saw R2 whole since the last refresh.
// - Async cycles start only from a quiet, reconciled, protected pair whose group (if any) told it
//   the current capture tag; one start at a time.
// - One reconcile step or protection request in flight at a time; a failed one is retried on the
//   next tick while the link is up.
import { assert } from '../lib/assert.js';
import type { PairIntent, PairMode, PairRole } from './pair-record.js';

/** What the machine needs of the pair's persisted record. */
export interface LifecycleRecord {
  readonly role: PairRole;
  readonly intent: PairIntent;
  readonly mode: PairMode;
  readonly generation: number;
  /** The pair protects R2 with a clone split before every resync (--protect-with). */
  readonly protects: boolean;
}

/** What the peer said of its half (its answer to `ask-peer-status`). */
export type PeerHalfStatus =
  | { readonly exists: false }
  | { readonly exists: true; readonly role: PairRole; readonly intent: PairIntent; readonly generation: number };

/** Facts of the moment the app reads from the write path when it ticks the machine. */
export interface PairFacts {
  /** Nothing owed, shipped or forwarded and not yet acknowledged. */
  readonly quiet: boolean;
  /** Tracks still owed to R2. */
  readonly owedTracks: number;
  /** Async cycles are running. */
  readonly capturing: boolean;
  /** Not in a consistency group, or the group told it the current capture tag. */
  readonly groupReady: boolean;
}

export type LifecycleStep = 'reconcile' | 'protect' | 'start-cycles';

export type PairEvent =
  /** The record changed (a command, a peer request); persisted already. */
  | { readonly type: 'record'; readonly record: LifecycleRecord }
  | { readonly type: 'link-up' }
  | { readonly type: 'link-down' }
  /** The peer's link session ended for good (it restarted): what it held undurably may be gone. */
  | { readonly type: 'session-reset' }
  | { readonly type: 'peer-status'; readonly epoch: number; readonly status: PeerHalfStatus }
  /** A step the machine asked for finished (`reconcile`: the last action of the reconcile). */
  | { readonly type: 'step-done'; readonly step: LifecycleStep; readonly epoch: number }
  | { readonly type: 'step-failed'; readonly step: LifecycleStep; readonly epoch: number; readonly error: string }
  /** Owed tracks are to be shipped (resume, establish, a reconcile of a replicating pair). */
  | { readonly type: 'resync'; readonly facts: PairFacts }
  /** R1 saw R2 hold everything within this link session (the push ended with nothing owed). */
  | { readonly type: 'r2-whole'; readonly facts: PairFacts }
  /** Time passes: retry what failed, start what may start. */
  | { readonly type: 'tick'; readonly facts: PairFacts }
  /** The half is torn down or replaced (a delete, a role change). */
  | { readonly type: 'retire' };

export type PairAction =
  /** Ask the peer for its half's status; answer with `peer-status`. */
  | { readonly type: 'ask-peer-status'; readonly epoch: number }
  /** A swap finished on the peer but not here: this half becomes R2 at the peer's generation. */
  | { readonly type: 'become-r2'; readonly generation: number; readonly epoch: number }
  /** R2 took over while the link was down: record the failover (writes since then diverge). */
  | { readonly type: 'adopt-failover'; readonly generation: number; readonly epoch: number }
  /** Tell R2 the pair replicates at this generation, then resync (`resync`). */
  | { readonly type: 'confirm-replicating'; readonly generation: number; readonly epoch: number }
  /** Pull what R2 holds that R1 lacks (a restore in progress). */
  | { readonly type: 'restore' }
  /** Have R2 split its protection clone; `whole`: R1 saw R2 whole since the clone's last split. */
  | { readonly type: 'protect'; readonly whole: boolean; readonly epoch: number }
  /** Ship owed tracks in the background. */
  | { readonly type: 'push' }
  /** Start async cycles (inside a write window; the app re-checks `cyclesMayStart` after each wait). */
  | { readonly type: 'start-cycles'; readonly epoch: number };

export interface LifecycleOptions {
  /** The link to the peer is up now. */
  readonly linkUp: boolean;
  /** Made in an exchange with the peer just now (create, swap): both halves agree already. */
  readonly live: boolean;
}

/** While the peer has no half of the pair, ask it again this often (the link staying up). */
export const PEER_MISSING_RECHECK_MS = 5000;

export class PairLifecycle {
  private record: LifecycleRecord;
  private linkUp: boolean;
  /** Grows each time the link goes down: a reconcile counts only for the session it ran in. */
  private linkEpoch = 0;
  private reconciledEpoch: number;
  /** The reconcile (or protection, or cycle start) step in flight, with the epoch it is for. */
  private inFlight: { readonly step: LifecycleStep; readonly epoch: number } | undefined;
  private cyclesStarting = false;
  private retired = false;
  private readonly actions: PairAction[] = [];
  /** The peer has no half of this pair (as of the last reconcile). */
  peerMissing = false;
  private askPeerAgainAtMs = 0;
  /** A resync must wait until R2's protection clone is split. */
  needsProtection = false;
  /** R1 saw R2 whole (within one link session) since R2 last split its protection clone. */
  r2WholeSinceProtection = false;
  /**
   * The intent just became replicating (a resume, an establish, a restore's end): what is owed now
   * is a resync, and nothing ships until it is decided (a protection of R2 comes first). Without
   * this a tick landing between the record change and the app's 'resync' pushed owed tracks while
   * R2 protected its clone, and the clone split with half of them (the cascade kill -9 test).
   */
  private resyncDue = false;

  constructor(record: LifecycleRecord, options: LifecycleOptions) {
    this.record = record;
    this.linkUp = options.linkUp;
    this.reconciledEpoch = options.live ? 0 : -1;
  }

  /** R1 may ship to R2 now (forward writes, push owed tracks, run cycles). */
  get mayShip(): boolean {
    return this.record.role === 'R1' && this.record.intent === 'replicating' && this.linkUp && !this.peerMissing &&
      !this.retired && !this.needsProtection && !this.resyncDue && !this.needsReconcile;
  }

  /** R1 has not compared notes with R2 since the link last came back. */
  get needsReconcile(): boolean {
    return this.reconciledEpoch !== this.linkEpoch;
  }

  /** Async cycles may start from here (also re-checked by the app after each wait of a start). */
  cyclesMayStart(facts: PairFacts): boolean {
    return this.record.mode === 'async' && this.mayShip && !facts.capturing && facts.quiet && facts.groupReady;
  }

  handle(event: PairEvent, nowMs: number): void {
    switch (event.type) {
      case 'record': {
        assert(event.record.generation >= 1, 'a pair generation starts at 1');
        const was = this.record;
        this.record = event.record;
        const replicating = (r: LifecycleRecord): boolean => r.role === 'R1' && r.intent === 'replicating';
        if (replicating(event.record) && !replicating(was)) this.resyncDue = true;
        return;
      }
      case 'link-up':
        this.linkUp = true;
        this.tick(undefined, nowMs);
        return;
      case 'link-down':
        this.linkUp = false;
        this.linkEpoch++;
        return;
      case 'session-reset':
        this.r2WholeSinceProtection = false;
        return;
      case 'peer-status':
        this.peerStatus(event.epoch, event.status, nowMs);
        return;
      case 'step-done':
        this.stepDone(event.step, event.epoch);
        return;
      case 'step-failed':
        this.settle(event.step, event.epoch);
        return;
      case 'resync':
        this.resync(event.facts);
        return;
      case 'r2-whole':
        this.noteR2WholeIfQuiet(event.facts);
        return;
      case 'tick':
        this.tick(event.facts, nowMs);
        return;
      case 'retire':
        this.retired = true;
        this.actions.length = 0;
        return;
    }
  }

  /** The actions to execute now, in order. */
  poll(): PairAction[] {
    return this.actions.splice(0);
  }

  private emit(action: PairAction): void {
    if (!this.retired) this.actions.push(action);
  }

  private start(step: LifecycleStep): number {
    assert(this.inFlight === undefined || step === 'start-cycles', `${step} while ${this.inFlight?.step} is in flight`);
    if (step === 'start-cycles') this.cyclesStarting = true;
    else this.inFlight = { step, epoch: this.linkEpoch };
    return this.linkEpoch;
  }

  /** A step ended (done or failed): the next may start. */
  private settle(step: LifecycleStep, epoch: number): void {
    if (step === 'start-cycles') {
      this.cyclesStarting = false;
      return;
    }
    if (this.inFlight?.step === step && this.inFlight.epoch === epoch) this.inFlight = undefined;
  }

  /** Time passes (or the link came back): the one thing R1 should be doing now, if not doing it. */
  private tick(facts: PairFacts | undefined, nowMs: number): void {
    if (this.retired || this.record.role !== 'R1') return;
    if (this.needsReconcile) {
      if (this.linkUp && this.inFlight === undefined) this.emit({ type: 'ask-peer-status', epoch: this.start('reconcile') });
      return;
    }
    if (this.peerMissing) {
      // The peer may get its half back without the link going down (an operator recreated it, or
      // the peer answered while still loading its records): ask again now and then.
      if (this.linkUp && this.inFlight === undefined && nowMs >= this.askPeerAgainAtMs) {
        this.emit({ type: 'ask-peer-status', epoch: this.start('reconcile') });
      }
      return;
    }
    if (facts === undefined) return;
    if (this.record.intent === 'restoring') {
      this.emit({ type: 'restore' });
    } else if (this.resyncDue) {
      // The app did not decide the resync yet (or failed before it could): decide it here.
      this.resync(facts);
    } else if (this.needsProtection) {
      this.protect();
    } else {
      this.emit({ type: 'push' });
      if (!this.cyclesStarting && this.cyclesMayStart(facts)) this.emit({ type: 'start-cycles', epoch: this.start('start-cycles') });
    }
  }

  private peerStatus(epoch: number, status: PeerHalfStatus, nowMs: number): void {
    if (this.inFlight?.step !== 'reconcile' || this.inFlight.epoch !== epoch) return;
    if (!status.exists) {
      this.peerMissing = true;
      this.askPeerAgainAtMs = nowMs + PEER_MISSING_RECHECK_MS;
      this.reconciled(epoch);
      return;
    }
    this.peerMissing = false;
    if (status.generation > this.record.generation) {
      if (status.role === 'R1') {
        this.emit({ type: 'become-r2', generation: status.generation, epoch });
        return;
      }
      if (status.intent === 'failed-over') {
        this.emit({ type: 'adopt-failover', generation: status.generation, epoch });
        return;
      }
    }
    if (this.record.intent === 'replicating') {
      this.emit({ type: 'confirm-replicating', generation: this.record.generation, epoch });
    } else {
      if (this.record.intent === 'restoring') this.emit({ type: 'restore' });
      this.reconciled(epoch);
    }
  }

  private stepDone(step: LifecycleStep, epoch: number): void {
    if (step === 'reconcile') {
      if (this.inFlight?.step === 'reconcile' && this.inFlight.epoch === epoch) this.reconciled(epoch);
      return;
    }
    if (step === 'protect' && this.inFlight?.step === 'protect') {
      this.needsProtection = false;
      this.r2WholeSinceProtection = false;
      this.emit({ type: 'push' });
    }
    this.settle(step, epoch);
  }

  /** The reconcile for `epoch` is over; it counts only if the link did not go down meanwhile. */
  private reconciled(epoch: number): void {
    this.inFlight = undefined;
    if (epoch !== this.linkEpoch) return;
    this.reconciledEpoch = epoch;
    if (this.record.role !== 'R1' || this.record.intent !== 'replicating' || this.peerMissing) return;
    // What the reconcile decided may ship now: a resync, once R2's clone is split if it must be.
    if (this.needsProtection) this.protect();
    else this.emit({ type: 'push' });
  }

  /** Owed tracks are to ship: with --protect-with, R2's clone is split first (nothing ships meanwhile). */
  private resync(facts: PairFacts): void {
    this.resyncDue = false;
    this.noteR2WholeIfQuiet(facts);
    if (this.record.protects && facts.owedTracks > 0) {
      this.needsProtection = true;
      // Inside a reconcile, the protection waits until the reconcile is over (the next tick).
      if (this.inFlight === undefined) this.protect();
    } else {
      this.emit({ type: 'push' });
    }
  }

  /** Nothing owed or in flight on a replicating R1: R2 holds everything R1 has. */
  private noteR2WholeIfQuiet(facts: PairFacts): void {
    if (facts.quiet && this.record.role === 'R1' && this.record.intent === 'replicating') this.r2WholeSinceProtection = true;
  }

  private protect(): void {
    if (this.inFlight !== undefined || !this.linkUp) return;
    this.emit({ type: 'protect', whole: this.r2WholeSinceProtection, epoch: this.start('protect') });
  }
}
