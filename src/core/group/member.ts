// One R1 pair half's side of the consistency-group protocol (SPEC §5), pure: the coordinator's
// commands (ready?, open a write window, switch with a tag, close, store the membership table,
// evict) and the member's own window timeout become an answer and the actions the host carries
// out, in order. The daemon (src/app/group/group-member.ts) and the cycles simulator drive this
// same machine; the facts about the pair's cycles are read by the host at each call.
//
// Write windows and a vanished coordinator: a member holds its window until the coordinator
// closes it. If it does not within windowTimeoutMs, the coordinator is gone. A member that had not
// switched in that window just closes it (its capture cycle is unchanged). One that had switched
// must not go on capturing: a dependent write could complete here and be followed by a write on a
// member that has not switched, landing in an older cycle there. It falls back to its bitmaps and
// suspends (no resync), so its R2 keeps the last boundary it holds — then the window closes. The
// same holds when it leaves the group with a window open in which it switched.
//
// A member out of the group (it fell back, left, or never joined) answers `not-member` to anything
// but a table or a close, and the coordinator lets it go; a pair that left does not come back by
// itself when a stale request or an old table names it again (cycles seed 300163).
import type { CoordinatorEvent } from './coordinator.js';
import type { MembershipTable } from './group-record.js';

/** A coordinator command as it travels to a member. */
export type MemberCommand =
  | { readonly kind: 'query-ready'; readonly tag: number }
  | { readonly kind: 'open-window' }
  | { readonly kind: 'switch'; readonly tag: number }
  | { readonly kind: 'close-window' }
  | { readonly kind: 'store-table'; readonly table: MembershipTable }
  | { readonly kind: 'evict'; readonly reason: string };

/** A member's answer (the coordinator adds which member it came from). */
export type MemberAnswer =
  /** `reason`: why not (shown when the group stalls on this member). */
  | { readonly kind: 'ready'; readonly ready: boolean; readonly reason?: string }
  | { readonly kind: 'window-opened' }
  | { readonly kind: 'switched'; readonly tag: number }
  /** `windowClosed`: it closed its window on its own (timeout) and needs a new one before it can switch. */
  | { readonly kind: 'switch-failed'; readonly tag: number; readonly reason: string; readonly windowClosed?: boolean }
  | { readonly kind: 'window-closed' }
  | { readonly kind: 'table-stored'; readonly version: number }
  | { readonly kind: 'evicted' }
  /** The pair is not in this group any more (it left on its own: window timeout, fallback, restart check). */
  | { readonly kind: 'not-member'; readonly reason: string }
  /** Another array coordinates the group now (it took the role over, with a newer epoch). */
  | { readonly kind: 'superseded'; readonly coordinator: string; readonly epoch: number };

/** The pair as the host sees it at the moment of a call. */
export interface MemberPairFacts {
  /** The group the pair is in, as the array records it (null: none). */
  readonly group: string | null;
  /** The pair replicates (not suspended by its group, the operator or a fallback). */
  readonly replicating: boolean;
  /** Its ordered cycles, while they run (null: not started, stopped or fallen back). */
  readonly cycles: {
    /** The coordinator switches them (they carry the group's tags). */
    readonly grouped: boolean;
    /** Transmit cycle sealed and previous commit acknowledged: a switch is possible now. */
    readonly ready: boolean;
    readonly captureTag: number;
  } | null;
  /** Why a switch is not possible now, in words (used when it is not). */
  readonly notReadyReason: string;
}

export type MemberAction =
  /** Open the write window: new host writes wait (writes already begun may finish); then call held(). */
  | { readonly kind: 'hold-writes'; readonly window: number }
  | { readonly kind: 'release-writes'; readonly window: number }
  /** Call windowExpired(window) after this long, unless the window closes first. */
  | { readonly kind: 'arm-window-timer'; readonly window: number; readonly afterMs: number }
  | { readonly kind: 'switch-cycles'; readonly tag: number }
  /** The pair's group tag, before its cycles start (a restarted member waits for it). */
  | { readonly kind: 'adopt-tag'; readonly tag: number }
  /** No window is open: the capture cycle takes the group's tag and ends at the group's next switch. */
  | { readonly kind: 'enter-group'; readonly table: MembershipTable }
  /** The pair leaves the group and runs standalone cycles again. */
  | { readonly kind: 'leave-group'; readonly group: string }
  /** Ordered replication gives up: fall back to bitmaps, suspend the pair (no resync), leave the group. */
  | { readonly kind: 'fall-back'; readonly reason: string }
  /** Keep (persist) this half's copy of the table, and the R2 half's (null: in no group). */
  | { readonly kind: 'keep-table'; readonly table: MembershipTable | null };

export interface MemberReply {
  /** Null: no answer (the host answers nothing, or an error). */
  readonly answer: MemberAnswer | null;
  readonly actions: readonly MemberAction[];
}

export interface MemberConfig {
  /** The member's key (ARRAY/VOLUME of its R1 half), as tables list it. */
  readonly name: string;
  /** null: windows never time out (a simulator without coordinator loss). */
  readonly windowTimeoutMs: number | null;
  /** A member in a group not asked anything this long asks whether it still belongs. */
  readonly silentCoordinatorMs: number;
}

interface Window {
  readonly id: number;
  held: boolean;
  switched: boolean;
}

const listed = (table: MembershipTable, name: string): boolean => table.members.some((m) => `${m.array}/${m.volume}` === name);

export class GroupMemberMachine {
  private windowValue: Window | null = null;
  private windows = 0;
  /** The table this half keeps (null: none). */
  private tableValue: MembershipTable | null;
  /** It left its group (fell back, evicted, left): it comes back only when added again explicitly. */
  private leftGroup = false;
  private closedOnOwnValue = false;
  /** When its coordinator last asked it anything (undefined: not since the array started). */
  private heardAtMs: number | undefined;
  private askedAtMs: number | undefined;

  /** `heardAtMs`: undefined after a restart, so a member in a group soon asks whether it still belongs. */
  constructor(private readonly config: MemberConfig, table: MembershipTable | null = null, heardAtMs?: number) {
    this.tableValue = table;
    this.heardAtMs = heardAtMs;
  }

  get table(): MembershipTable | null {
    return this.tableValue;
  }

  get windowOpen(): boolean {
    return this.windowValue !== null;
  }

  /** The last window was closed by the member itself (timeout), not by the coordinator. */
  get closedOnOwn(): boolean {
    return this.closedOnOwnValue;
  }

  /** The member was added to a group again by the operator: a table listing it is welcome. */
  rejoin(): void {
    this.leftGroup = false;
  }

  /**
   * A command from the coordinator array `from` for `group`. `staleTable`: the transport knows this
   * table is older than one already delivered (a previous coordinator incarnation's, arriving late).
   */
  command(command: MemberCommand, group: string, from: string, facts: MemberPairFacts, nowMs: number, staleTable = false): MemberReply {
    const mine = this.tableValue;
    // Only the coordinator of the newest table may command the member (another array took over).
    if (mine && mine.group === group && mine.coordinator !== from &&
        (command.kind !== 'store-table' || command.table.epoch <= mine.epoch || command.table.coordinator !== from)) {
      return { answer: { kind: 'superseded', coordinator: mine.coordinator, epoch: mine.epoch }, actions: [] };
    }
    this.heardAtMs = nowMs;
    if (command.kind !== 'store-table' && command.kind !== 'close-window' && facts.group !== group) {
      return { answer: { kind: 'not-member', reason: this.leftGroup ? 'it left the group' : `not in group ${group}` }, actions: [] };
    }
    switch (command.kind) {
      case 'query-ready': {
        const c = facts.cycles;
        if (c && c.grouped && c.ready) return { answer: { kind: 'ready', ready: true }, actions: [] };
        // Cycles that start now start with the group's current tag (no switch can happen meanwhile).
        const actions: MemberAction[] = c ? [] : [{ kind: 'adopt-tag', tag: command.tag }];
        return { answer: { kind: 'ready', ready: false, reason: facts.notReadyReason }, actions };
      }
      case 'open-window': {
        if (this.windowValue) return { answer: { kind: 'window-opened' }, actions: [] }; // a re-sent command: the window's clock runs on
        const w: Window = { id: ++this.windows, held: false, switched: false };
        this.windowValue = w;
        this.closedOnOwnValue = false;
        return { answer: { kind: 'window-opened' }, actions: [{ kind: 'hold-writes', window: w.id }] };
      }
      case 'switch': {
        const c = facts.cycles;
        const failed = (reason: string): MemberReply => ({ answer: { kind: 'switch-failed', tag: command.tag, reason }, actions: [] });
        // Idempotent: a member that has the tag (or a later one) answers at once; the coordinator ignores stale answers.
        if (c && c.grouped && c.captureTag >= command.tag) return { answer: { kind: 'switched', tag: command.tag }, actions: [] };
        const w = this.windowValue;
        if (!w && this.closedOnOwnValue) {
          return { answer: { kind: 'switch-failed', tag: command.tag, reason: 'its write window timed out', windowClosed: true }, actions: [] };
        }
        if (!w || !w.held) return failed('no write window is open');
        if (!c || !c.grouped) return failed('the pair runs no group cycles');
        if (!c.ready) return failed(`not ready: ${facts.notReadyReason}`);
        // Counted as switched before the host switches: if that fails after all, a window timeout
        // falls back where it need not have (safe), never the reverse.
        w.switched = true;
        return { answer: { kind: 'switched', tag: command.tag }, actions: [{ kind: 'switch-cycles', tag: command.tag }] };
      }
      case 'close-window':
        return { answer: { kind: 'window-closed' }, actions: this.releaseWindow() };
      case 'store-table':
        return this.storeTable(command.table, facts, staleTable);
      case 'evict':
        return { answer: { kind: 'evicted' }, actions: this.fallBack(`evicted from group ${group}: ${command.reason}`) };
    }
  }

  /** The host's hold of window `id` took effect (writes wait now). */
  held(id: number): MemberAction[] {
    const w = this.windowValue;
    if (!w || w.id !== id) return [{ kind: 'release-writes', window: id }]; // closed while opening
    w.held = true;
    return this.config.windowTimeoutMs === null ? [] : [{ kind: 'arm-window-timer', window: id, afterMs: this.config.windowTimeoutMs }];
  }

  /** Window `id`'s timer fired: the coordinator did not close it in time. */
  windowExpired(id: number): MemberAction[] {
    const w = this.windowValue;
    if (!w || w.id !== id) return [];
    if (w.switched) {
      return this.fallBack(`the group coordinator did not close the write window within ${this.config.windowTimeoutMs} ms after a switch`);
    }
    this.closedOnOwnValue = true;
    return this.releaseWindow();
  }

  /** The pair leaves its group on its own (told it is no member, or asked to by the operator). */
  leave(facts: MemberPairFacts): MemberAction[] {
    if (facts.group === null) return [];
    if (this.windowValue?.switched) {
      return this.fallBack(`left group ${facts.group} with a write window open after a switch`);
    }
    this.leftGroup = true;
    return [...this.releaseWindow(), { kind: 'leave-group', group: facts.group }, ...this.keep(null)];
  }

  /**
   * Whether to ask the coordinator now if the member still belongs. A restarted member waits for
   * its coordinator's tag before its cycles start, and one whose eviction notice was lost (or that
   * entered on a table the coordinator had already superseded) keeps capturing for a group that no
   * longer asks it anything: either would wait forever. Asked at most once per silentCoordinatorMs.
   */
  membershipCheckDue(nowMs: number, facts: MemberPairFacts): boolean {
    if (facts.group === null) return false;
    if (this.heardAtMs !== undefined && nowMs - this.heardAtMs < this.config.silentCoordinatorMs) return false;
    if (this.askedAtMs !== undefined && nowMs - this.askedAtMs < this.config.silentCoordinatorMs) return false;
    this.askedAtMs = nowMs;
    return true;
  }

  /**
   * The coordinator's answer (undefined: it knows no such group). A member it does not count
   * leaves — suspending its pair if it runs group cycles, as an evicted member does, so its R2
   * keeps the group boundary it holds.
   */
  membershipAnswer(member: boolean | undefined, facts: MemberPairFacts): MemberAction[] {
    if (member === true || facts.group === null) return [];
    if (facts.cycles?.grouped) return this.fallBack(`group ${facts.group} no longer counts this pair (evicted or removed while out of reach)`);
    return this.leave(facts);
  }


  private storeTable(table: MembershipTable, facts: MemberPairFacts, stale: boolean): MemberReply {
    const stored: MemberReply = { answer: { kind: 'table-stored', version: table.version }, actions: [] };
    if (stale) return stored;
    const mine = listed(table, this.config.name);
    if (mine && facts.group !== table.group && (this.leftGroup || !facts.replicating)) {
      // A pair that left (suspended by its group, or by the operator) does not come back by itself
      // when a restarted coordinator announces its old table, or a stale join lands: it is added again explicitly.
      return { answer: { kind: 'not-member', reason: this.leftGroup ? 'it left the group' : 'the pair does not replicate' }, actions: [] };
    }
    if (mine) {
      if (facts.group !== null && facts.group !== table.group) {
        return { answer: { kind: 'not-member', reason: `the pair is in group ${facts.group}` }, actions: [] };
      }
      // No window is open while a table is stored: the capture cycle can take the group's tag.
      return { ...stored, actions: [{ kind: 'enter-group', table }, ...this.keep(table)] };
    }
    if (facts.group === table.group) return { ...stored, actions: this.leave(facts) };
    return { ...stored, actions: this.tableValue ? this.keep(null) : [] };
  }

  private fallBack(reason: string): MemberAction[] {
    this.leftGroup = true;
    return [{ kind: 'fall-back', reason }, ...this.releaseWindow(), ...this.keep(null)];
  }

  private keep(table: MembershipTable | null): MemberAction[] {
    this.tableValue = table;
    return [{ kind: 'keep-table', table }];
  }

  private releaseWindow(): MemberAction[] {
    const w = this.windowValue;
    if (!w) return [];
    this.windowValue = null;
    return [{ kind: 'release-writes', window: w.id }];
  }
}

/** A member's answer as the coordinator machine takes it (null: nothing for it to act on). */
export function answerToEvent(member: string, answer: MemberAnswer): CoordinatorEvent | null {
  switch (answer.kind) {
    case 'ready': return { kind: 'ready', member, ready: answer.ready, ...(answer.reason !== undefined ? { reason: answer.reason } : {}) };
    case 'window-opened': return { kind: 'window-opened', member };
    case 'switched': return { kind: 'switched', member, tag: answer.tag };
    case 'switch-failed': return { kind: 'switch-failed', member, tag: answer.tag, reason: answer.reason, ...(answer.windowClosed ? { windowClosed: true } : {}) };
    case 'window-closed': return { kind: 'window-closed', member };
    case 'table-stored': return { kind: 'table-stored', member, version: answer.version };
    // It left on its own (its window timed out after a switch, it fell back, or it was told so
    // after a restart): it would never be ready again, so the coordinator lets it go rather than stall.
    case 'not-member': return { kind: 'not-member', member, reason: answer.reason };
    case 'evicted': case 'superseded': return null;
  }
}
