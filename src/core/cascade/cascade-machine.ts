// The cascade session's decisions as a sans-I/O machine (SPEC §7, seed 000): a clone CVOL of R2VOL
// alternates between reattached (copying what R2VOL changed) and differentially split (its pair to
// the far site ships what that image changed). The app (app/cascade/cascade-manager.ts) feeds it
// what the clone session and the pair are doing (`tick` facts) and the outcome of each action, and
// carries out what `poll()` returns; the cascade simulator runs the same machine.
//
// Rules it keeps:
// - One action at a time; a record change is persisted before the action that follows it, so a
//   restart (kill -9 of this array) resumes from the phase on disk and re-derives the rest from the
//   clone session and the pair, which persist themselves. Every action is safe to repeat.
// - The pair to the far site ships only while the clone is split (phase shipping): it is suspended
//   before the clone reattaches, so a half-copied clone never reaches the far site. Tracks R2VOL
//   changes meanwhile are the clone session's protection bits; the reattach copies them into the
//   clone, which marks them owed on the suspended pair: the next cycle ships them. None is lost.
// - A cycle is complete only when the far site holds the whole image durably (nothing owed, the
//   pair's bitmap clean on disk after a flush round) and its protection clone was refreshed from it.
//   Until then the far site's protection clone holds the previous complete image.
// - Cycles never overlap: a cycle due while one runs starts when that one completes.
import type { CloneState } from '../clone/clone-session.js';
import type { PairIntent } from '../replication/pair-record.js';
import { assert, assertNever } from '../lib/assert.js';
import type { CascadePhase, CascadeRecord } from './cascade-record.js';

/** What the app reads from the clone session R2VOL→CVOL and from the pair CVOL→CRVOL on each tick. */
export interface CascadeFacts {
  readonly clone: { readonly state: CloneState | 'missing'; readonly splitAtMs: number | null };
  readonly pair:
    | { readonly exists: false }
    | {
      readonly exists: true;
      readonly intent: PairIntent;
      /** Tracks the far site may lack (in memory). */
      readonly owedTracks: number;
      /** The same bitmap as last persisted (null: never persisted yet). */
      readonly persistedOwed: number | null;
      /** Nothing shipped and unacknowledged, no protection pending. */
      readonly quiet: boolean;
      /** Bytes the pair shipped since this array started (a counter that restarts at 0). */
      readonly bytesShipped: number;
    };
  /**
   * Where R2VOL's data comes from: nothing (`none`: it changes only by its own hosts) or a pair it is
   * the R2 of: `upEpoch` names the link session to the source now up (null: down since this array
   * started), `confirmedEpoch` the session in which the source last said it owed nothing.
   */
  readonly source:
    | { readonly kind: 'none' }
    | { readonly kind: 'pair'; readonly upEpoch: string | null; readonly confirmedEpoch: string | null };
  /** R2VOL's track count (the first cycle ships all of them). */
  readonly trackCount: number;
}

export type CascadeActionKind =
  | 'establish-clone' | 'reestablish-clone' | 'split-clone' | 'suspend-pair' | 'ship' | 'refresh-remote' | 'finish';

export type CascadeAction =
  /** Persist this record before anything that follows. */
  | { readonly type: 'persist'; readonly record: CascadeRecord }
  /** Clone session R2VOL→CVOL: establish (full copy) / reestablish (changed tracks) / split --differential. */
  | { readonly type: 'establish-clone' }
  | { readonly type: 'reestablish-clone' }
  | { readonly type: 'split-clone' }
  /** Stop the pair CVOL→CRVOL shipping (its bitmap keeps recording). */
  | { readonly type: 'suspend-pair' }
  /** Create the pair CVOL→CRVOL (a full establish) or resume it (ships the tracks it owes). */
  | { readonly type: 'ship' }
  /** Have the far site refresh its protection clone from CRVOL (whole now) and split it. */
  | { readonly type: 'refresh-remote' }
  /** `close`: delete the pair (CRVOL keeps the last complete image), end the clone session, drop the record. */
  | { readonly type: 'finish' };

export type CascadeEvent =
  | { readonly type: 'tick'; readonly facts: CascadeFacts }
  /** `cascade cycle`: run a cycle now (or as soon as the one under way completes). */
  | { readonly type: 'request-cycle' }
  | { readonly type: 'close' }
  | { readonly type: 'done'; readonly action: CascadeActionKind }
  | { readonly type: 'failed'; readonly action: CascadeActionKind; readonly error: string };

/** After a failed action, wait this long before trying again (the link or the peer may be back). */
export const CASCADE_RETRY_MS = 1000;

export class CascadeMachine {
  private rec: CascadeRecord;
  private inFlight: CascadeActionKind | undefined;
  private persistPending = false;
  private retryAtMs = 0;
  private lastCounter: number | undefined;
  private readonly actions: CascadeAction[] = [];
  /** Why the session is not progressing (a failed action, a volume in an unexpected state); null when fine. */
  lastError: string | null = null;
  /** What the cycle waits for that is not an error (the source's resync); null when not waiting. */
  waitingFor: string | null = null;
  finished = false;

  constructor(record: CascadeRecord) {
    // A verdict on the source from before a restart may be stale: a link session that began while
    // an action ran (the machine sees no facts then) may not have reached the disk. So a restarted
    // array confirms its source anew before it splits (found by cascade seed 5137). If the source
    // is gone for good, failing its pair over on this array makes R2VOL its hosts' (no source).
    this.reconfirming = record.sourceSettled;
    this.rec = record.sourceSettled ? { ...record, sourceSettled: false } : record;
  }

  /** Settled on disk, unsettled in memory since the restart (see the constructor). */
  private reconfirming: boolean;

  get record(): CascadeRecord {
    return this.rec;
  }

  get phase(): CascadePhase {
    return this.rec.phase;
  }

  get busy(): CascadeActionKind | undefined {
    return this.inFlight;
  }

  /** When the next cycle is due (null: only on command). */
  get nextDueAtMs(): number | null {
    if (this.rec.everyMs === null) return null;
    return (this.rec.cycleStartedAtMs ?? this.rec.createdAtMs) + this.rec.everyMs;
  }

  handle(event: CascadeEvent, nowMs: number): void {
    if (this.finished) return;
    switch (event.type) {
      case 'tick':
        this.count(event.facts);
        this.watchSource(event.facts);
        if (this.inFlight === undefined && nowMs >= this.retryAtMs) this.step(event.facts, nowMs);
        return;
      case 'request-cycle':
        if (!this.rec.requested) this.update({ requested: true });
        return;
      case 'close':
        if (!this.rec.closing) this.update({ closing: true });
        return;
      case 'done':
        assert(this.inFlight === event.action, `${event.action} done while ${this.inFlight ?? 'nothing'} is in flight`);
        this.inFlight = undefined;
        this.lastError = null;
        this.retryAtMs = 0;
        this.actionDone(event.action);
        return;
      case 'failed':
        assert(this.inFlight === event.action, `${event.action} failed while ${this.inFlight ?? 'nothing'} is in flight`);
        this.inFlight = undefined;
        this.lastError = `${event.action}: ${event.error}`;
        this.retryAtMs = nowMs + CASCADE_RETRY_MS;
        // The record the action followed may not have reached the disk: write it again first.
        this.persistPending = true;
        return;
      default:
        assertNever(event, 'cascade event');
    }
  }

  /** The actions to carry out now, in order (each awaited before the next). */
  poll(): CascadeAction[] {
    if (this.persistPending && this.inFlight === undefined && this.actions.length === 0) {
      // A record change (request, close) with no action to go with it still reaches the disk.
      this.persistPending = false;
      return [{ type: 'persist', record: this.rec }];
    }
    return this.actions.splice(0);
  }

  private update(changes: Partial<CascadeRecord>): void {
    this.rec = { ...this.rec, ...changes };
    this.persistPending = true;
  }

  private act(action: CascadeActionKind): void {
    assert(this.inFlight === undefined, `${action} while ${this.inFlight ?? ''} is in flight`);
    if (this.persistPending) {
      this.actions.push({ type: 'persist', record: this.rec });
      this.persistPending = false;
    }
    this.inFlight = action;
    this.actions.push({ type: action });
  }

  private blocked(reason: string, nowMs: number): void {
    this.lastError = reason;
    this.retryAtMs = nowMs + CASCADE_RETRY_MS;
  }

  /** Bytes the pair shipped while a cycle ships count for that cycle (in memory until the next persist). */
  private count(facts: CascadeFacts): void {
    if (!facts.pair.exists) return;
    const counter = facts.pair.bytesShipped;
    // The machine starts with the array or with the pair, as the counter does; a counter that went
    // back restarted with the array (the pair was recreated): what it shows then is all new.
    const last = this.lastCounter ?? 0;
    const delta = counter < last ? counter : counter - last;
    this.lastCounter = counter;
    if (delta > 0 && (this.rec.phase === 'shipping' || this.rec.phase === 'refreshing')) {
      this.rec = { ...this.rec, bytesShippingCycle: this.rec.bytesShippingCycle + delta, bytesShipped: this.rec.bytesShipped + delta };
    }
  }

  private watchSource(facts: CascadeFacts): void {
    const s = facts.source;
    if (s.kind === 'none') {
      if (this.rec.sourceSettled) return;
      // No source: settled, as the disk already says after a restart.
      if (this.reconfirming) this.rec = { ...this.rec, sourceSettled: true };
      else this.update({ sourceSettled: true });
      this.reconfirming = false;
      return;
    }
    this.reconfirming = false;
    if (s.upEpoch !== null && s.upEpoch !== this.rec.sourceEpoch) {
      this.update({ sourceEpoch: s.upEpoch, sourceSettled: false });
    }
    if (!this.rec.sourceSettled && s.confirmedEpoch !== null && s.confirmedEpoch === this.rec.sourceEpoch) {
      this.update({ sourceSettled: true });
    }
  }

  /** A torn R2VOL (its source resyncing) is never split; the clone stays attached meanwhile. */
  private mayScheduleSplit(): boolean {
    this.waitingFor = this.rec.sourceSettled ? null : `${this.rec.volume}'s source to confirm it owes nothing (a resync leaves it torn)`;
    return this.rec.sourceSettled;
  }

  private step(facts: CascadeFacts, nowMs: number): void {
    const { clone, pair } = facts;
    switch (this.rec.phase) {
      case 'complete': {
        if (this.rec.closing) return this.act('finish');
        const due = this.nextDueAtMs;
        if (!this.rec.requested && (due === null || nowMs < due)) return;
        this.update({ phase: 'synchronizing', cycleStartedAtMs: nowMs, requested: false, splitAtMs: null });
        return this.step(facts, nowMs);
      }
      case 'synchronizing':
        // The far site has not been touched since the last complete cycle: closing here is clean.
        if (this.rec.closing) return this.act('finish');
        if (pair.exists && pair.intent === 'replicating') return this.act('suspend-pair');
        if (pair.exists && pair.intent !== 'suspended') return this.blocked(`the pair to ${this.rec.peer} is ${pair.intent}; the cascade needs it replicating or suspended`, nowMs);
        switch (clone.state) {
          case 'missing': return this.act('establish-clone');
          case 'split': return this.act('reestablish-clone');
          case 'synchronizing': return;
          case 'synchronized':
            if (!this.mayScheduleSplit()) return;
            this.update({ phase: 'splitting' });
            return this.act('split-clone');
          case 'restoring':
          case 'restored':
            return this.blocked(`the clone session ${this.rec.volume}→${this.rec.clone} is ${clone.state}`, nowMs);
          default: return assertNever(clone.state, 'clone state');
        }
      case 'splitting':
        switch (clone.state) {
          case 'split':
            // Entered only from synchronized, so a split session is this cycle's split.
            assert(clone.splitAtMs !== null, 'a split clone has a split time');
            this.update({
              phase: 'shipping', splitAtMs: clone.splitAtMs, bytesShippingCycle: 0,
              tracksShipping: pair.exists ? pair.owedTracks : facts.trackCount,
            });
            return this.act('ship');
          case 'synchronized': return this.mayScheduleSplit() ? this.act('split-clone') : undefined;
          // A restart re-marked tracks the activity log held hot: the session copies them first.
          case 'synchronizing': return;
          case 'missing': return this.blocked(`the clone session ${this.rec.volume}→${this.rec.clone} is gone`, nowMs);
          case 'restoring':
          case 'restored':
            return this.blocked(`the clone session ${this.rec.volume}→${this.rec.clone} is ${clone.state}`, nowMs);
          default: return assertNever(clone.state, 'clone state');
        }
      case 'shipping':
        if (!pair.exists || pair.intent === 'suspended') return this.act('ship');
        if (pair.intent !== 'replicating') return this.blocked(`the pair to ${this.rec.peer} is ${pair.intent}; the cascade needs it replicating`, nowMs);
        if (clone.state !== 'split') return this.blocked(`the clone ${this.rec.clone} was reattached during shipping`, nowMs);
        // Whole and durable at the far site: nothing owed in memory nor on disk (a flush round ran).
        if (pair.owedTracks === 0 && pair.persistedOwed === 0 && pair.quiet) {
          this.update({ phase: 'refreshing' });
          return this.step(facts, nowMs);
        }
        return;
      case 'refreshing':
        if (pair.exists && pair.intent === 'replicating') return this.act('suspend-pair');
        if (!pair.exists || pair.intent !== 'suspended') return this.blocked(`the pair to ${this.rec.peer} is ${pair.exists ? pair.intent : 'gone'}`, nowMs);
        return this.act('refresh-remote');
      default:
        return assertNever(this.rec.phase, 'cascade phase');
    }
  }

  private actionDone(action: CascadeActionKind): void {
    if (action === 'finish') {
      this.finished = true;
      return;
    }
    if (action !== 'refresh-remote') return;
    assert(this.rec.phase === 'refreshing', 'the far site refreshed outside the refreshing phase');
    // The far site's protection clone holds this cycle's image: the cycle is complete.
    this.update({
      phase: 'complete', cycles: this.rec.cycles + 1, consistentAtMs: this.rec.splitAtMs, splitAtMs: null,
      tracksShippedLast: this.rec.tracksShipping, bytesShippedLast: this.rec.bytesShippingCycle, bytesShippingCycle: 0, tracksShipping: 0,
    });
  }
}
