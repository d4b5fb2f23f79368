// A consistency group as seen from one array's pair halves (SPEC §5): on an R1, the coordinator's
// commands (ready?, open a write window, switch with a tag, close, store the membership table,
// evict); on an R2, the membership table and, after a disaster, the recovery of its cycles.
//
// Write windows and a vanished coordinator: a member holds its window until the coordinator closes
// it. If it does not within WINDOW_TIMEOUT_MS the coordinator is gone. A member that had not switched
// in that window just closes it (its capture cycle is unchanged). One that had switched must not go
// on capturing: a dependent write could then complete here and be followed by a write on a member
// that has not switched, landing in an older cycle. It falls back to its bitmaps and suspends
// (no resync), so its R2 keeps the last boundary it holds — and then closes the window.
import { ErrorCode, TidemarkError, invalidArgument, invalidState, notFound } from '../../core/errors.js';
import { memberKey, parseMembershipTable, type GroupMemberRef, type MembershipTable } from '../../core/group/group-record.js';
import { decideGroupRecovery, type GroupRecoveryDecision, type MemberRecoveryInput, type RecoveryAction } from '../../core/group/group-recovery.js';
import { decodeJson, encodeJson } from '../../core/lib/checksummed-record.js';
import type { MetaStore } from '../../ports/meta-store.js';
import type { Timers } from '../../ports/timers.js';
import type { PairManager } from '../replication/pair-manager.js';
import type { PairRuntime } from '../replication/pair-runtime.js';
import type { PeerRpc } from '../replication/peer-rpc.js';
import type { MemberStatusView } from '../../adapters/http/group-routes.js';

/** Longer than the coordinator can keep a window open (opening + switching + closing, with retries). */
export const WINDOW_TIMEOUT_MS = 8000;
/** A member not asked anything by its coordinator this long checks it still belongs. */
const SILENT_COORDINATOR_MS = 10_000;
const CONTROL_TIMEOUT_MS = 10_000;

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
  | { readonly kind: 'ready'; readonly ready: boolean }
  | { readonly kind: 'window-opened' }
  | { readonly kind: 'switched'; readonly tag: number }
  | { readonly kind: 'switch-failed'; readonly tag: number; readonly reason: string }
  | { readonly kind: 'window-closed' }
  | { readonly kind: 'table-stored'; readonly version: number }
  | { readonly kind: 'evicted' }
  /** The pair is not in this group any more (it left on its own: window timeout, restart check). */
  | { readonly kind: 'not-member'; readonly reason: string }
  /** Another array coordinates the group now (it took the role over, with a newer epoch). */
  | { readonly kind: 'superseded'; readonly coordinator: string; readonly epoch: number };

/** A member's status is the API's shape: the schema is its one definition. */
export type MemberStatus = MemberStatusView;

export interface MemberRecovery {
  readonly member: string;
  readonly r2Array: string;
  readonly r2Volume: string;
  readonly input: MemberRecoveryInput;
  /** After the action: R2's applied cycle and its tag. */
  readonly appliedCycle?: number;
  readonly appliedTag?: number | null;
}

export interface GroupRecoveryReport {
  readonly group: string;
  readonly decision: GroupRecoveryDecision;
  readonly members: readonly MemberRecovery[];
  /** False: nothing was changed (a dry run, or the group cannot reach one point). */
  readonly carriedOut: boolean;
}

export interface GroupMemberHost {
  readonly arrayName: string;
  readonly pairs: PairManager;
  readonly rpc: PeerRpc;
  readonly meta: MetaStore;
  readonly timers: Timers;
  /** Names of this array's peers. */
  peers(): string[];
  /** Default WINDOW_TIMEOUT_MS (tests shorten it). */
  readonly windowTimeoutMs?: number;
  /** Whether the group (coordinated by this array) counts the member (undefined: no such group here). */
  isMemberHere(group: string, key: string): boolean | undefined;
  nowMs(): number;
  onEvent(message: string, fields: Record<string, unknown>): void;
}

interface Window {
  release: (() => void) | undefined;
  opened: Promise<void>;
  switched: boolean;
  cancelTimer: () => void;
}

const tableKey = (pairId: string): string => `group-member/${pairId}`;
const listsMember = (table: MembershipTable, array: string, volume: string): boolean =>
  table.members.some((m) => m.array === array && m.volume === volume);

export class GroupMemberSide {
  private readonly windows = new Map<string, Window>();
  /** Tables this array keeps, by pair id (R1 and R2 halves). */
  private readonly tables = new Map<string, MembershipTable>();

  private readonly windowTimeoutMs: number;

  constructor(private readonly host: GroupMemberHost) {
    this.windowTimeoutMs = host.windowTimeoutMs ?? WINDOW_TIMEOUT_MS;
    this.registerHandlers();
  }

  private loaded = false;
  /** When each R1 member last heard from its coordinator (by pair id). */
  private readonly lastHeardMs = new Map<string, number>();

  /** After the pairs loaded: R1 halves in a group wait for their coordinator before starting cycles. */
  async load(): Promise<void> {
    for (const key of await this.host.meta.list('group-member/')) {
      const bytes = await this.host.meta.read(key);
      if (!bytes) continue;
      const table = parseMembershipTable(decodeJson(bytes, key), key);
      const pairId = key.slice('group-member/'.length);
      const r = this.host.pairs.halfById(pairId);
      if (!r) {
        await this.host.meta.delete(key);
        continue;
      }
      this.tables.set(pairId, table);
      if (r.record.role === 'R1') r.group = { name: table.group, tag: undefined };
    }
    this.loaded = true;
  }

  /**
   * An R1 member that restarted waits for its coordinator's tag before its cycles start, and one
   * whose eviction notice was lost keeps capturing for a group that no longer asks it anything:
   * either would wait forever. A member not asked for a while asks whether it still belongs, and
   * leaves if not — suspending its pair if it runs group cycles (as an evicted member does).
   */
  async checkMembership(): Promise<void> {
    const now = this.host.nowMs();
    for (const r of this.host.pairs.halves()) {
      if (r.record.role !== 'R1' || !r.group) continue;
      const heard = this.lastHeardMs.get(r.record.id);
      if (r.group.tag !== undefined && heard !== undefined && now - heard < SILENT_COORDINATOR_MS) continue;
      const table = this.tables.get(r.record.id);
      if (!table) continue;
      const key = memberKey({ array: this.host.arrayName, volume: r.record.localVolume });
      let member: boolean | undefined;
      if (table.coordinator === this.host.arrayName) {
        member = this.host.isMemberHere(table.group, key);
      } else if (this.host.rpc.isUp(table.coordinator)) {
        const reply = await this.host.rpc.request(table.coordinator, { op: 'group.is-member', group: table.group, member: key }, [], CONTROL_TIMEOUT_MS)
          .catch(() => undefined);
        member = reply ? (reply.header.member as boolean | undefined) ?? undefined : true;
      } else {
        continue;
      }
      if (member === false || member === undefined) {
        if (r.capturing && r.asyncR1!.groupFrom !== null) {
          await this.leaveAndSuspend(r.record.localVolume, `group ${table.group} no longer counts this pair (evicted or removed while out of reach)`);
          continue;
        }
        r.group = undefined;
        await this.keepTable(r.record.id, null);
        await this.tellR2(r, null, null).catch(() => undefined);
        this.host.onEvent('pair left a group that no longer counts it', { pair: r.record.id, group: table.group });
      }
    }
  }

  /** The group a local pair half belongs to, as its stored table says. */
  tableOf(pairId: string): MembershipTable | undefined {
    return this.tables.get(pairId);
  }

  /** Every table this array holds, one per group. */
  knownGroups(): MembershipTable[] {
    const byGroup = new Map<string, MembershipTable>();
    for (const t of this.tables.values()) {
      const seen = byGroup.get(t.group);
      if (!seen || seen.epoch < t.epoch || (seen.epoch === t.epoch && seen.version < t.version)) byGroup.set(t.group, t);
    }
    return [...byGroup.values()];
  }

  // ---- R1: the coordinator's commands ----

  private r1(volume: string): PairRuntime {
    const r = this.host.pairs.runtime(volume);
    if (r.record.role !== 'R1') throw invalidState(`${volume} is the R2 of its pair; a group member is named by its R1`);
    return r;
  }

  /** Whether a local pair may join: an async R1 in no other group. */
  memberInfo(volume: string, group: string): GroupMemberRef {
    const r = this.r1(volume);
    if (r.record.mode !== 'async') throw invalidState(`pair ${volume} is in ${r.record.mode} mode; group members replicate in async mode`);
    if (r.record.intent !== 'replicating') throw invalidState(`pair ${volume} is ${r.record.intent}; resume it before adding it to a group`);
    if (r.group && r.group.name !== group) throw invalidState(`pair ${volume} is already in group ${r.group.name}`);
    return { array: this.host.arrayName, volume, pairId: r.record.id, r2Array: r.record.peer, r2Volume: r.record.remoteVolume };
  }

  memberStatus(volume: string): MemberStatus {
    const r = this.r1(volume);
    const a = r.capturing ? r.asyncR1 : undefined;
    return {
      member: memberKey({ array: this.host.arrayName, volume }),
      pairState: r.state(),
      captureCycle: a ? a.cycles.captureCycle : null,
      captureTag: a ? a.cycles.captureTag : null,
      transmitCycle: a ? (a.cycles.stats().transmit?.cycle ?? null) : null,
      committedCycle: a ? a.appliedCycle : null,
      ready: a ? a.cycles.isReady() : false,
      lagSeconds: r.lagSeconds(),
      windowOpen: this.windows.has(volume),
      lastError: r.lastError ?? null,
    };
  }

  /** A command from the coordinator array `from` (this array's own name for a local coordinator). */
  async command(volume: string, command: MemberCommand, group: string, from: string): Promise<MemberAnswer> {
    if (!this.loaded) throw new TidemarkError(ErrorCode.Unavailable, `${this.host.arrayName} is still starting`);
    const r = this.r1(volume);
    const mine = this.tables.get(r.record.id);
    // Only the coordinator of the newest table may command the member (another array took over).
    if (mine && mine.group === group && mine.coordinator !== from &&
        (command.kind !== 'store-table' || command.table.epoch <= mine.epoch || command.table.coordinator !== from)) {
      return { kind: 'superseded', coordinator: mine.coordinator, epoch: mine.epoch };
    }
    if (command.kind === 'store-table' && command.table.coordinator !== from) throw invalidArgument('a membership table comes from its coordinator');
    this.lastHeardMs.set(r.record.id, this.host.nowMs());
    if (command.kind !== 'store-table' && command.kind !== 'close-window' && r.group?.name !== group) {
      return { kind: 'not-member', reason: r.lastError ?? `pair ${volume} is not in group ${group}` };
    }
    switch (command.kind) {
      case 'query-ready': {
        // The coordinator cannot switch while this member is not ready: its tag is current, and
        // cycles that start now start with it.
        if (r.group && !r.capturing) r.group.tag = command.tag;
        const a = r.capturing ? r.asyncR1! : undefined;
        return { kind: 'ready', ready: a !== undefined && a.groupFrom !== null && a.cycles.isReady() };
      }
      case 'open-window':
        await this.openWindow(volume, r);
        return { kind: 'window-opened' };
      case 'switch': {
        const w = this.windows.get(volume);
        if (!w || !w.release) return { kind: 'switch-failed', tag: command.tag, reason: 'no write window is open' };
        const a = r.capturing ? r.asyncR1! : undefined;
        if (!a || a.groupFrom === null) return { kind: 'switch-failed', tag: command.tag, reason: 'the pair runs no group cycles' };
        try {
          a.switchTo(command.tag);
        } catch (error) {
          return { kind: 'switch-failed', tag: command.tag, reason: error instanceof Error ? error.message : String(error) };
        }
        w.switched = true;
        if (r.group) r.group.tag = command.tag;
        return { kind: 'switched', tag: command.tag };
      }
      case 'close-window':
        this.closeWindow(volume);
        return { kind: 'window-closed' };
      case 'store-table': {
        const mine = listsMember(command.table, this.host.arrayName, volume);
        // A pair that left (suspended by its group, or by the operator) does not come back by
        // itself when a restarted coordinator announces its old table: it is added again explicitly.
        if (mine && r.group?.name !== command.table.group && r.record.intent !== 'replicating') {
          return { kind: 'not-member', reason: r.lastError ?? `pair ${volume} is ${r.record.intent}` };
        }
        await this.storeTable(volume, r, command.table, mine);
        return { kind: 'table-stored', version: command.table.version };
      }
      case 'evict':
        await this.leaveAndSuspend(volume, `evicted from group ${r.group?.name ?? '?'}: ${command.reason}`);
        return { kind: 'evicted' };
    }
  }

  private async openWindow(volume: string, r: PairRuntime): Promise<void> {
    const existing = this.windows.get(volume);
    if (existing) return existing.opened;
    const w: Window = { release: undefined, opened: Promise.resolve(), switched: false, cancelTimer: () => undefined };
    this.windows.set(volume, w);
    w.opened = (async () => {
      const release = await r.volume.holdWrites();
      if (this.windows.get(volume) !== w) {
        release();
        throw new TidemarkError(ErrorCode.InvalidState, 'the window was closed while opening');
      }
      w.release = release;
      w.cancelTimer = this.host.timers.after(this.windowTimeoutMs, () => {
        this.windowExpired(volume, w).catch((error: unknown) =>
          this.host.onEvent('group: leaving after a window timeout failed', { volume, error: error instanceof Error ? error.message : String(error) }));
      });
    })();
    return w.opened;
  }

  /** The array stops: windows close (their timers with them). */
  close(): void {
    for (const volume of [...this.windows.keys()]) this.closeWindow(volume);
  }

  private closeWindow(volume: string): void {
    const w = this.windows.get(volume);
    if (!w) return;
    this.windows.delete(volume);
    w.cancelTimer();
    w.release?.();
  }

  private async windowExpired(volume: string, w: Window): Promise<void> {
    if (this.windows.get(volume) !== w) return;
    if (w.switched) {
      // Stops the cycles before the window opens (see the top of this file).
      const suspended = this.leaveAndSuspend(volume, `the group coordinator did not close the write window within ${this.windowTimeoutMs} ms after a switch`);
      this.closeWindow(volume);
      await suspended;
    } else {
      this.closeWindow(volume);
      this.host.onEvent('group write window closed without a switch (coordinator silent)', { volume });
    }
  }

  private async leaveAndSuspend(volume: string, reason: string): Promise<void> {
    const r = this.host.pairs.runtime(volume);
    const suspended = this.host.pairs.suspendForGroup(volume, reason);
    const forgotten = this.keepTable(r.record.id, null);
    await suspended;
    await forgotten;
    await this.tellR2(r, null, null).catch(() => undefined);
  }

  /** This array's copy of a half's membership table (null: the half is in no group). */
  private async keepTable(pairId: string, table: MembershipTable | null): Promise<void> {
    if (table) {
      this.tables.set(pairId, table);
      await this.host.meta.write(tableKey(pairId), encodeJson(table));
    } else {
      this.tables.delete(pairId);
      await this.host.meta.delete(tableKey(pairId));
    }
  }

  private async storeTable(volume: string, r: PairRuntime, table: MembershipTable, mine: boolean): Promise<void> {
    const a = r.capturing ? r.asyncR1! : undefined;
    if (mine) {
      if (r.group && r.group.name !== table.group) throw invalidState(`pair ${volume} is in group ${r.group.name}`);
      // No window is open while a table is stored: the capture cycle can take the group's tag.
      if (a && a.groupFrom === null) a.enterGroup(table.tag);
      r.group = { name: table.group, tag: table.tag };
      await this.keepTable(r.record.id, table);
      await this.tellR2(r, table, a?.groupFrom ?? null);
    } else {
      r.group = undefined;
      if (a && a.groupFrom !== null) a.leaveGroup();
      this.closeWindow(volume);
      await this.keepTable(r.record.id, null);
      await this.tellR2(r, null, null);
    }
  }

  private async tellR2(r: PairRuntime, table: MembershipTable | null, groupFrom: number | null): Promise<void> {
    await this.host.rpc.request(r.record.peer, { op: 'group.r2-table', pair: r.record.id, table, groupFrom }, [], CONTROL_TIMEOUT_MS);
  }

  // ---- R2: the table, and recovery after a disaster ----

  private r2ById(pairId: string): PairRuntime {
    const r = this.host.pairs.halfById(pairId);
    if (!r || r.record.role !== 'R2') throw notFound(`no R2 half of pair ${pairId} on ${this.host.arrayName}`);
    return r;
  }

  /** The R2 half's state for the decision; it stops taking R1's messages until resolved or released. */
  async r2State(member: GroupMemberRef, force: boolean): Promise<MemberRecoveryInput> {
    const r = this.r2ById(member.pairId);
    if (r.linkUp && !force) {
      throw new TidemarkError(ErrorCode.InvalidState,
        `the link from ${this.host.arrayName} to R1 ${r.record.peer} is up: group recover is for when the R1 side is lost`, { pair: member.pairId });
    }
    const key = memberKey(member);
    const a = r.asyncR2;
    if (!a || a.stopped) return { member: key, committedTag: null, received: null };
    await a.freeze();
    return a.groupRecoveryInput(key);
  }

  async r2Resolve(member: GroupMemberRef, action: RecoveryAction | 'release'): Promise<{ appliedCycle: number; appliedTag: number | null }> {
    const r = this.r2ById(member.pairId);
    const a = r.asyncR2;
    if (!a || a.stopped) return { appliedCycle: 0, appliedTag: null };
    if (action === 'release') a.unfreeze();
    else await a.resolveForGroup(action);
    return { appliedCycle: a.cycles.appliedCycle, appliedTag: a.cycles.appliedTag };
  }

  /**
   * After a disaster on the R1 side, from any array holding an R2 member: asks every member's R2
   * (here or on peer arrays) for its cycles, decides (SPEC §5) and carries the decision out — unless
   * the group cannot reach one point, or `dryRun`; then nothing changes.
   */
  async recover(group: string, options: { dryRun: boolean; force: boolean }): Promise<GroupRecoveryReport> {
    const table = this.knownGroups().find((t) => t.group === group);
    if (!table) throw notFound(`no member of group ${group} on ${this.host.arrayName}`, { group });
    const inputs: MemberRecovery[] = [];
    const frozen: GroupMemberRef[] = [];
    const release = async (): Promise<void> => {
      for (const m of frozen) await this.resolveOn(m, 'release').catch(() => undefined);
    };
    try {
      for (const m of table.members) {
        const input = await this.stateOn(m, options.force);
        frozen.push(m);
        inputs.push({ member: memberKey(m), r2Array: m.r2Array, r2Volume: m.r2Volume, input });
      }
    } catch (error) {
      await release();
      throw error;
    }
    const decision = decideGroupRecovery(inputs.map((m) => m.input));
    if (!decision.consistent || options.dryRun) {
      await release();
      return { group, decision, members: inputs, carriedOut: false };
    }
    const members: MemberRecovery[] = [];
    for (const [i, m] of table.members.entries()) {
      const action = decision.members.find((d) => d.member === memberKey(m))!.action;
      const after = await this.resolveOn(m, action);
      members.push({ ...inputs[i]!, ...after });
    }
    this.host.onEvent('group recovered', { group, tag: decision.targetTag, members: decision.members.map((d) => `${d.member}:${d.action}`) });
    return { group, decision, members, carriedOut: true };
  }

  private stateOn(m: GroupMemberRef, force: boolean): Promise<MemberRecoveryInput> {
    if (m.r2Array === this.host.arrayName) return this.r2State(m, force);
    return this.host.rpc.request(m.r2Array, { op: 'group.r2-state', member: m, force }, [], CONTROL_TIMEOUT_MS)
      .then((reply) => reply.header.input as MemberRecoveryInput);
  }

  private resolveOn(m: GroupMemberRef, action: RecoveryAction | 'release'): Promise<{ appliedCycle: number; appliedTag: number | null }> {
    if (m.r2Array === this.host.arrayName) return this.r2Resolve(m, action);
    return this.host.rpc.request(m.r2Array, { op: 'group.r2-resolve', member: m, action }, [], CONTROL_TIMEOUT_MS * 6)
      .then((reply) => reply.header as { appliedCycle: number; appliedTag: number | null });
  }

  // ---- requests from peer arrays ----

  private registerHandlers(): void {
    const { rpc } = this.host;
    rpc.handle('group.command', async (peer, h) => {
      const command = h.command as MemberCommand;
      if (!command || typeof command !== 'object' || typeof command.kind !== 'string') throw invalidArgument('bad group.command');
      const checked = command.kind === 'store-table' ? { ...command, table: parseMembershipTable(command.table, 'group.command') } : command;
      return { header: { answer: await this.command(String(h.volume), checked, String(h.group), peer) }, segments: [] };
    });
    rpc.handle('group.member-info', async (_peer, h) => ({ header: { member: this.memberInfo(String(h.volume), String(h.group)) }, segments: [] }));
    rpc.handle('group.member-status', async (_peer, h) => ({ header: { status: this.memberStatus(String(h.volume)) }, segments: [] }));
    rpc.handle('group.r2-table', async (peer, h) => {
      const pairId = String(h.pair);
      const r = this.host.pairs.halfById(pairId, peer);
      if (!r || r.record.role !== 'R2') throw notFound(`no R2 half of pair ${pairId} with ${peer} on ${this.host.arrayName}`);
      await this.keepTable(pairId, h.table === null ? null : parseMembershipTable(h.table, 'group.r2-table'));
      const groupFrom = h.groupFrom;
      if (groupFrom !== null && !Number.isSafeInteger(groupFrom)) throw invalidArgument('bad group.r2-table');
      if (r.asyncR2 && !r.asyncR2.stopped && (h.table === null || groupFrom !== null)) await r.asyncR2.setGroupFrom(groupFrom as number | null);
      return { header: {}, segments: [] };
    });
    rpc.handle('group.r2-state', async (_peer, h) => {
      const input = await this.r2State(h.member as GroupMemberRef, h.force === true);
      return { header: { input }, segments: [] };
    });
    rpc.handle('group.r2-resolve', async (_peer, h) => {
      const action = h.action as RecoveryAction | 'release';
      if (!['apply', 'discard', 'none', 'release'].includes(action)) throw invalidArgument('bad group.r2-resolve');
      return { header: await this.r2Resolve(h.member as GroupMemberRef, action), segments: [] };
    });
  }
}
