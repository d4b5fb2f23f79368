// The consistency-group coordinator's cycle-switch protocol (SPEC §5, seed 003), pure.
//
// One switch, after cycleMs since the last one:
//   polling   — ask every member whether it is ready (R1Cycles.isReady: transmit cycle sealed,
//               previous commit acknowledged); a member that is not ready blocks everyone;
//   opening   — open a write window on every member (new host writes wait; writes already
//               begun may finish), wait until all opened;
//   switching — switch every member with the new tag; a member that cannot switch is asked
//               again and keeps all windows open (the group never drifts apart) until
//               switchTimeoutMs, after which it is evicted (its pair suspends and falls back to
//               bitmaps) and the others go on;
//   closing   — close every window.
// Windows make the switch atomic for dependent writes: a write on member A that begins after A
// switched cannot complete — so no write depending on it can begin on member B — until every
// member has switched.
//
// A member that says it is no longer in the group (it fell back, left on its own, or cannot take
// part: 'not-member') is dropped at once, in any phase, and the others go on: a member that will
// never be ready must not hold the group (cycles seed 300163: a joiner that fell back was re-admitted
// by a stale join and answered "not ready" for ever). A member that is merely slow or out of reach
// still blocks switching (lag grows, nothing drifts); past stallAfterMs without a switch the group
// reports itself stalled, with the cause, until the next switch.
//
// Membership changes (join, leave, eviction) wait until no window is open, then the new table is
// stored on every member (old and new) before switching resumes. Commands are re-sent after
// retryMs until answered, so members must treat them idempotently (a switch to the tag a member
// already has answers 'switched').
//
// Restart: the app records a switch's tag durably before sending it and restarts the coordinator
// from the highest tag it ever sent with redoSwitch: that switch is run once more (it may have
// reached only some members) before tags grow. A joiner stores that tag as its capture tag, as
// every member that took the switch has it.
import { assert } from '../lib/assert.js';
import { invalidArgument } from '../errors.js';

export interface CoordinatorConfig {
  readonly members: readonly string[];
  /** The tag of the members' current capture cycle; the next switch uses tag + 1. */
  readonly tag: number;
  readonly cycleMs: number;
  /** Re-send an unanswered command after this long (and re-ask members that were not ready). */
  readonly retryMs: number;
  /** A member that has not switched (or opened its window) this long after being asked is evicted. */
  readonly switchTimeoutMs: number;
  readonly nowMs: number;
  /**
   * Restarting after a crash from `tag` = the highest tag ever sent (recorded before sending): that
   * switch may have reached only some members, so the first switch uses `tag` again — members that
   * already switched answer 'switched', the others switch now — and only then do tags grow. With
   * tag + 1 instead, a member that took the interrupted switch would switch twice while another
   * switched once: its commit of cycle s (sent at its second switch) could then reach R2 before
   * the other member sealed the cycle that covers the same writes, and no recovery point is common.
   */
  readonly redoSwitch?: boolean;
  /** No switch for this long: the group reports itself stalled (default: max(10 × cycleMs, 10 × switchTimeoutMs)). */
  readonly stallAfterMs?: number;
}

/** Why a group does not switch (see GroupCoordinator.stall). */
export interface GroupStall {
  /** When the last switch completed (or the coordinator started). */
  readonly lastSwitchMs: number;
  readonly cause: string;
}

export interface MembershipTable {
  readonly version: number;
  readonly members: readonly string[];
  /** The current capture tag: a joining member tags its capture cycle with it. */
  readonly tag: number;
}

export type CoordinatorCommand =
  | { readonly kind: 'query-ready'; readonly member: string }
  | { readonly kind: 'open-window'; readonly member: string }
  | { readonly kind: 'switch'; readonly member: string; readonly tag: number }
  | { readonly kind: 'close-window'; readonly member: string }
  | { readonly kind: 'store-table'; readonly member: string; readonly table: MembershipTable }
  /** The member failed to take part in a switch in time: suspend its pair (fall back to bitmaps). */
  | { readonly kind: 'evict'; readonly member: string; readonly reason: string }
  /** The member said it is no longer in the group: it is out of the member list (record it; nothing to send). */
  | { readonly kind: 'dropped'; readonly member: string; readonly reason: string };

export type CoordinatorEvent =
  /** `reason`: why a member is not ready (for the stall report). */
  | { readonly kind: 'ready'; readonly member: string; readonly ready: boolean; readonly reason?: string }
  | { readonly kind: 'window-opened'; readonly member: string }
  | { readonly kind: 'switched'; readonly member: string; readonly tag: number }
  /** `windowClosed`: the member closed its window on its own (timeout) without switching: it is opened anew. */
  | { readonly kind: 'switch-failed'; readonly member: string; readonly tag: number; readonly reason: string; readonly windowClosed?: boolean }
  | { readonly kind: 'window-closed'; readonly member: string }
  | { readonly kind: 'table-stored'; readonly member: string; readonly version: number }
  /** The member is not in the group any more (fell back, left on its own): it will never be ready. */
  | { readonly kind: 'not-member'; readonly member: string; readonly reason: string };

export type CoordinatorPhase = 'waiting' | 'polling' | 'opening' | 'switching' | 'closing' | 'reconfiguring';

export class GroupCoordinator {
  private membersList: string[];
  private tagValue: number;
  private phaseValue: CoordinatorPhase = 'waiting';
  private lastSwitchMs: number;
  private phaseStartedMs: number;
  /** Members whose answer the current phase still waits for, with when they were last asked. */
  private readonly awaiting = new Map<string, number>();
  private readonly readyMembers = new Set<string>();
  /** Why members last said they were not ready (cleared when they are). */
  private readonly notReadyReasons = new Map<string, string>();
  private readonly stallAfterMs: number;
  private readonly opened = new Set<string>();
  private tableVersion = 1;
  private pendingJoins: string[] = [];
  private pendingLeaves: string[] = [];
  private tableAudience: string[] = [];
  /** Membership changed by an eviction: the table must be stored again once no window is open. */
  private tableDirty = false;
  private switches = 0;
  /** The next switch repeats tagValue (a restart: the last switch may be incomplete). */
  private redo: boolean;

  constructor(private readonly config: CoordinatorConfig) {
    assert(new Set(config.members).size === config.members.length, 'members are distinct');
    assert(config.cycleMs > 0 && config.retryMs > 0 && config.switchTimeoutMs > 0, 'positive timings');
    this.membersList = [...config.members];
    this.tagValue = config.tag;
    this.redo = config.redoSwitch === true;
    this.lastSwitchMs = config.nowMs;
    this.phaseStartedMs = config.nowMs;
    this.stallAfterMs = config.stallAfterMs ?? Math.max(10 * config.cycleMs, 10 * config.switchTimeoutMs);
    assert(this.stallAfterMs > 0, 'positive stall bound');
  }

  get phase(): CoordinatorPhase {
    return this.phaseValue;
  }

  get tag(): number {
    return this.tagValue;
  }

  /** The tag the next (or current) switch gives the members' new capture cycle. */
  private get nextTag(): number {
    return this.redo ? this.tagValue : this.tagValue + 1;
  }

  get members(): readonly string[] {
    return this.membersList;
  }

  get switchCount(): number {
    return this.switches;
  }

  table(): MembershipTable {
    return { version: this.tableVersion, members: [...this.membersList], tag: this.tagValue };
  }

  /** Members the current phase waits for (for status: who blocks the group). */
  waitingFor(): string[] {
    return [...this.awaiting.keys()];
  }

  /** When the last switch completed (or the coordinator started). */
  get lastSwitchAtMs(): number {
    return this.lastSwitchMs;
  }

  /**
   * Null while the group switches; past stallAfterMs without a switch, why not: the phase, who it
   * waits for and what they last said. An empty group is idle, not stalled.
   */
  stall(nowMs: number): GroupStall | null {
    if (this.membersList.length === 0 || nowMs - this.lastSwitchMs < this.stallAfterMs) return null;
    const waiting = [...this.awaiting.keys()].map((m) => {
      const reason = this.phaseValue === 'polling' ? this.notReadyReasons.get(m) : undefined;
      return reason !== undefined ? `${m} (not ready: ${reason})` : `${m} (no answer)`;
    });
    const cause = waiting.length > 0 ? `${this.phaseValue}: waiting for ${waiting.join(', ')}` : `${this.phaseValue}: no member blocks it`;
    return { lastSwitchMs: this.lastSwitchMs, cause };
  }

  /** A member asks to join; takes effect at the next moment no window is open. */
  join(member: string, nowMs: number): CoordinatorCommand[] {
    if (this.membersList.includes(member) || this.pendingJoins.includes(member)) throw invalidArgument(`${member} is already a member`);
    this.pendingJoins.push(member);
    return this.tick(nowMs);
  }

  leave(member: string, nowMs: number): CoordinatorCommand[] {
    if (!this.membersList.includes(member)) throw invalidArgument(`${member} is not a member`);
    if (!this.pendingLeaves.includes(member)) this.pendingLeaves.push(member);
    return this.tick(nowMs);
  }

  /** Advance timers: start a switch when due, re-send unanswered commands, evict members that time out. */
  tick(nowMs: number): CoordinatorCommand[] {
    const out: CoordinatorCommand[] = [];
    switch (this.phaseValue) {
      case 'waiting':
      case 'polling':
        if (this.pendingJoins.length > 0 || this.pendingLeaves.length > 0 || this.tableDirty) {
          this.startReconfiguring(nowMs, out);
          break;
        }
        if (this.phaseValue === 'waiting') {
          if (nowMs - this.lastSwitchMs >= this.config.cycleMs && this.membersList.length > 0) this.startPolling(nowMs, out);
        } else {
          this.resend(nowMs, out, (m) => ({ kind: 'query-ready', member: m }));
        }
        break;
      case 'opening':
        this.evictLate(nowMs, out, 'did not open its write window');
        this.resend(nowMs, out, (m) => ({ kind: 'open-window', member: m }));
        this.maybeAdvance(nowMs, out);
        break;
      case 'switching':
        this.evictLate(nowMs, out, 'did not switch cycles');
        this.resend(nowMs, out, (m) => ({ kind: 'switch', member: m, tag: this.nextTag }));
        this.maybeAdvance(nowMs, out);
        break;
      case 'closing':
        this.resend(nowMs, out, (m) => ({ kind: 'close-window', member: m }));
        break;
      case 'reconfiguring':
        if (nowMs - this.phaseStartedMs >= this.config.switchTimeoutMs) {
          // A member leaving need not answer; a remaining member that does not is evicted.
          for (const m of [...this.awaiting.keys()]) if (!this.membersList.includes(m)) this.awaiting.delete(m);
          this.evictLate(nowMs, out, 'did not store the membership table');
        }
        this.resend(nowMs, out, (m) => ({ kind: 'store-table', member: m, table: this.table() }));
        this.maybeAdvance(nowMs, out);
        break;
    }
    return out;
  }

  /** A member's answer. Answers that do not belong to the current phase are stale and ignored. */
  handle(event: CoordinatorEvent, nowMs: number): CoordinatorCommand[] {
    const out: CoordinatorCommand[] = [];
    if (!this.membersList.includes(event.member) && !(this.phaseValue === 'reconfiguring' && this.tableAudience.includes(event.member))) return out;
    switch (event.kind) {
      case 'ready':
        if (this.phaseValue !== 'polling' || !this.awaiting.has(event.member)) break;
        if (event.ready) {
          this.awaiting.delete(event.member);
          this.readyMembers.add(event.member);
          this.notReadyReasons.delete(event.member);
        } else {
          this.notReadyReasons.set(event.member, event.reason ?? 'not ready');
        }
        // A member that is not ready is asked again after retryMs.
        break;
      case 'window-opened':
        if (this.phaseValue !== 'opening') break;
        this.awaiting.delete(event.member);
        this.opened.add(event.member);
        break;
      case 'switched':
        if (this.phaseValue !== 'switching' || event.tag !== this.nextTag) break;
        this.awaiting.delete(event.member);
        break;
      case 'switch-failed':
        // Keep the windows open and ask again (tick re-sends after retryMs) until switchTimeoutMs.
        // A member whose window timed out before it switched gets a new one first: its writes
        // meanwhile went to the cycle it has not left, and none on a switched member (whose window
        // holds its writes) can depend on them yet — so it can still switch with the others rather
        // than be evicted while they wait, their own windows running out.
        if (this.phaseValue === 'switching' && event.windowClosed === true && this.awaiting.has(event.member)) {
          out.push({ kind: 'open-window', member: event.member });
        }
        break;
      case 'window-closed':
        if (this.phaseValue !== 'closing') break;
        this.awaiting.delete(event.member);
        break;
      case 'table-stored':
        if (this.phaseValue !== 'reconfiguring' || event.version !== this.tableVersion) break;
        this.awaiting.delete(event.member);
        break;
      case 'not-member':
        if (!this.membersList.includes(event.member)) {
          // A member already leaving: its answer to the table is as good as 'stored'.
          if (this.phaseValue === 'reconfiguring') this.awaiting.delete(event.member);
          break;
        }
        this.drop(event.member);
        out.push({ kind: 'dropped', member: event.member, reason: event.reason });
        break;
    }
    this.maybeAdvance(nowMs, out);
    return out;
  }

  private ask(nowMs: number, out: CoordinatorCommand[], members: readonly string[], command: (m: string) => CoordinatorCommand): void {
    this.awaiting.clear();
    for (const m of members) {
      this.awaiting.set(m, nowMs);
      out.push(command(m));
    }
    this.phaseStartedMs = nowMs;
  }

  private resend(nowMs: number, out: CoordinatorCommand[], command: (m: string) => CoordinatorCommand): void {
    for (const [m, at] of this.awaiting) {
      if (nowMs - at >= this.config.retryMs) {
        this.awaiting.set(m, nowMs);
        out.push(command(m));
      }
    }
  }

  private startPolling(nowMs: number, out: CoordinatorCommand[]): void {
    this.phaseValue = 'polling';
    this.readyMembers.clear();
    this.ask(nowMs, out, this.membersList, (m) => ({ kind: 'query-ready', member: m }));
  }

  private startReconfiguring(nowMs: number, out: CoordinatorCommand[]): void {
    const audience = [...new Set([...this.membersList, ...this.pendingJoins])];
    this.membersList = [...this.membersList.filter((m) => !this.pendingLeaves.includes(m)), ...this.pendingJoins];
    this.pendingJoins = [];
    this.pendingLeaves = [];
    this.tableVersion++;
    this.tableDirty = false;
    this.tableAudience = audience;
    this.phaseValue = 'reconfiguring';
    this.ask(nowMs, out, audience, (m) => ({ kind: 'store-table', member: m, table: this.table() }));
  }

  private evictLate(nowMs: number, out: CoordinatorCommand[], what: string): void {
    if (nowMs - this.phaseStartedMs < this.config.switchTimeoutMs) return;
    for (const m of [...this.awaiting.keys()]) {
      this.drop(m);
      out.push({ kind: 'evict', member: m, reason: `${what} within ${this.config.switchTimeoutMs} ms` });
    }
  }

  /** Out of the member list now; the others learn it from the next table (stored once no window is open). */
  private drop(member: string): void {
    this.awaiting.delete(member);
    this.readyMembers.delete(member);
    this.notReadyReasons.delete(member);
    this.membersList = this.membersList.filter((x) => x !== member);
    this.pendingLeaves = this.pendingLeaves.filter((x) => x !== member);
    this.tableDirty = true;
  }

  private maybeAdvance(nowMs: number, out: CoordinatorCommand[]): void {
    if (this.awaiting.size > 0) return;
    switch (this.phaseValue) {
      case 'waiting':
        return;
      case 'polling':
        if (this.tableDirty) {
          // A member was dropped while being asked; no window is open, so the remaining members
          // store the smaller table before they switch without it.
          this.startReconfiguring(nowMs, out);
          return;
        }
        if (this.membersList.every((m) => this.readyMembers.has(m))) {
          this.phaseValue = 'opening';
          this.opened.clear();
          this.ask(nowMs, out, this.membersList, (m) => ({ kind: 'open-window', member: m }));
        }
        return;
      case 'opening':
        this.phaseValue = 'switching';
        this.ask(nowMs, out, this.membersList, (m) => ({ kind: 'switch', member: m, tag: this.nextTag }));
        if (this.awaiting.size === 0) this.maybeAdvance(nowMs, out);
        return;
      case 'switching':
        if (this.redo) this.redo = false;
        else this.tagValue++;
        this.switches++;
        this.lastSwitchMs = nowMs;
        this.phaseValue = 'closing';
        // Windows close on every member that opened one, evicted or not (an evicted member's hosts
        // must not wait forever; its pair is suspended by then).
        this.ask(nowMs, out, this.membersList.filter((m) => this.opened.has(m)), (m) => ({ kind: 'close-window', member: m }));
        for (const m of this.opened) if (!this.membersList.includes(m)) out.push({ kind: 'close-window', member: m });
        if (this.awaiting.size === 0) this.maybeAdvance(nowMs, out);
        return;
      case 'closing':
        this.opened.clear();
        this.phaseValue = 'waiting';
        this.tableAudience = [];
        if (this.pendingJoins.length > 0 || this.pendingLeaves.length > 0 || this.tableDirty) this.startReconfiguring(nowMs, out);
        return;
      case 'reconfiguring':
        this.phaseValue = 'waiting';
        this.tableAudience = [];
        if (this.tableDirty) this.startReconfiguring(nowMs, out);
        return;
    }
  }
}
