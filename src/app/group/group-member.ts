// A consistency group as seen from one array's pair halves (SPEC §5): on an R1, the coordinator's
// commands (ready?, open a write window, switch with a tag, close, store the membership table,
// evict) go to the member machine (src/core/group/member.ts, which the cycles simulator drives
// too) and its actions are carried out here on the real pair; on an R2, the membership table and,
// after a disaster, the recovery of its cycles.
import { ErrorCode, TidemarkError, invalidArgument, invalidState, notFound } from '../../core/errors.js';
import { memberKey, parseMembershipTable, type GroupMemberRef, type MembershipTable } from '../../core/group/group-record.js';
import { decideGroupRecovery, type GroupRecoveryDecision, type MemberRecoveryInput, type RecoveryAction } from '../../core/group/group-recovery.js';
import { GroupMemberMachine, type MemberAction, type MemberAnswer, type MemberCommand, type MemberPairFacts } from '../../core/group/member.js';
import { decodeJson, encodeJson } from '../../core/lib/checksummed-record.js';
import type { MetaStore } from '../../ports/meta-store.js';
import type { Timers } from '../../ports/timers.js';
import type { PairManager } from '../replication/pair-manager.js';
import type { PairRuntime } from '../replication/pair-runtime.js';
import type { PeerRpc } from '../replication/peer-rpc.js';
import type { MemberStatusView } from '../../adapters/http/group-routes.js';

export type { MemberAnswer, MemberCommand } from '../../core/group/member.js';

/** Longer than the coordinator can keep a window open (opening + switching + closing, with retries). */
export const WINDOW_TIMEOUT_MS = 8000;
/** A member not asked anything by its coordinator this long checks it still belongs. */
const SILENT_COORDINATOR_MS = 10_000;
const CONTROL_TIMEOUT_MS = 10_000;

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
  /** Groups coordinated here report a stall after this long without a switch (default: the coordinator's). */
  readonly stallAfterMs?: number;
  /** Whether the group (coordinated by this array) counts the member (undefined: no such group here). */
  isMemberHere(group: string, key: string): boolean | undefined;
  nowMs(): number;
  onEvent(message: string, fields: Record<string, unknown>): void;
}

/** A write window as held on the volume (the machine decides when; this is the hold itself). */
interface HeldWindow {
  readonly id: number;
  release: (() => void) | undefined;
  /** Settles when the hold took effect (or failed: the window closed while opening). */
  opened: Promise<void>;
  cancelTimer: () => void;
}

/** Why a member's cycles cannot switch now, in words for `group show`. */
function notReadyReason(r: PairRuntime): string {
  const a = r.capturing ? r.asyncR1 : undefined;
  if (!a) return `pair is ${r.state()}${r.lastError ? ` (${r.lastError})` : ''}`;
  if (a.groupFrom === null) return 'its cycles have not taken the group\'s tag yet';
  const transmit = a.cycles.stats().transmit;
  return transmit ? `cycle ${transmit.cycle} still transmitting or awaiting its commit acknowledgement` : 'previous commit not yet acknowledged';
}

/** The pair as the member machine needs to see it at a call. */
function pairFacts(r: PairRuntime): MemberPairFacts {
  const a = r.capturing ? r.asyncR1 : undefined;
  return {
    group: r.group?.name ?? null,
    replicating: r.record.intent === 'replicating',
    cycles: a && !a.stopped ? { grouped: a.groupFrom !== null, ready: a.cycles.isReady(), captureTag: a.cycles.captureTag } : null,
    notReadyReason: notReadyReason(r),
  };
}

const tableKey = (pairId: string): string => `group-member/${pairId}`;

export class GroupMemberSide {
  private readonly windows = new Map<string, HeldWindow>();
  /** Tables this array keeps, by pair id (R1 and R2 halves). */
  private readonly tables = new Map<string, MembershipTable>();
  /** The member machine of each R1 half that has been in a group since the array started, by pair id. */
  private readonly machines = new Map<string, GroupMemberMachine>();

  private readonly windowTimeoutMs: number;

  constructor(private readonly host: GroupMemberHost) {
    this.windowTimeoutMs = host.windowTimeoutMs ?? WINDOW_TIMEOUT_MS;
    this.registerHandlers();
  }

  private loaded = false;

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

  private machineFor(r: PairRuntime): GroupMemberMachine {
    let m = this.machines.get(r.record.id);
    if (!m) {
      m = new GroupMemberMachine({
        name: memberKey({ array: this.host.arrayName, volume: r.record.name }),
        windowTimeoutMs: this.windowTimeoutMs, silentCoordinatorMs: SILENT_COORDINATOR_MS,
      }, this.tables.get(r.record.id) ?? null);
      this.machines.set(r.record.id, m);
    }
    return m;
  }

  /**
   * Members in a group ask their coordinator whether they still belong when it has been silent
   * (or since a restart); the machine decides when, and what a "no" means.
   */
  async checkMembership(): Promise<void> {
    const now = this.host.nowMs();
    for (const r of this.host.pairs.halves()) {
      if (r.record.role !== 'R1' || !r.group) continue;
      const table = this.tables.get(r.record.id);
      if (!table) continue;
      const machine = this.machineFor(r);
      if (!machine.membershipCheckDue(now, pairFacts(r))) continue;
      const key = memberKey({ array: this.host.arrayName, volume: r.record.name });
      let member: boolean | undefined;
      if (table.coordinator === this.host.arrayName) {
        member = this.host.isMemberHere(table.group, key);
      } else if (this.host.rpc.isUp(table.coordinator)) {
        const reply = await this.host.rpc.request(table.coordinator, { op: 'group.is-member', group: table.group, member: key }, [], CONTROL_TIMEOUT_MS)
          .catch(() => undefined);
        member = reply ? reply.header.member ?? undefined : true;
      } else {
        continue;
      }
      const actions = machine.membershipAnswer(member, pairFacts(r));
      if (actions.length === 0) continue;
      await this.execute(r, actions, false);
      this.host.onEvent('pair left a group that no longer counts it', { pair: r.record.id, group: table.group });
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
    // Added explicitly: a table that lists it is welcome again, even if it left before.
    this.machineFor(r).rejoin();
    return { array: this.host.arrayName, volume: r.record.name, pairId: r.record.id, r2Array: r.record.peer, r2Volume: r.record.remoteVolume };
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
    if (command.kind === 'store-table' && command.table.coordinator !== from) throw invalidArgument('a membership table comes from its coordinator');
    const reply = this.machineFor(r).command(command, group, from, pairFacts(r), this.host.nowMs());
    try {
      await this.execute(r, reply.actions, command.kind === 'store-table');
    } catch (error) {
      // The cycles would not switch after all: the coordinator asks again (the machine already
      // counts the window as switched, so a timeout falls back — the safe side).
      if (command.kind === 'switch') return { kind: 'switch-failed', tag: command.tag, reason: error instanceof Error ? error.message : String(error) };
      throw error;
    }
    // A re-sent open-window answers once the hold has taken effect.
    if (reply.answer?.kind === 'window-opened') await this.windows.get(r.record.name)?.opened;
    if (!reply.answer) throw new TidemarkError(ErrorCode.InvalidState, `no answer to ${command.kind}`);
    return reply.answer;
  }

  /** Carries out the member machine's actions on the real pair, in order. `strict`: R2 must learn the table now. */
  private async execute(r: PairRuntime, actions: readonly MemberAction[], strict: boolean): Promise<void> {
    const volume = r.record.name;
    const pending: Promise<void>[] = [];
    for (const action of actions) {
      switch (action.kind) {
        case 'hold-writes':
          await this.hold(r, action.window);
          break;
        case 'release-writes':
          this.release(volume, action.window);
          break;
        case 'arm-window-timer': {
          const w = this.windows.get(volume);
          if (!w || w.id !== action.window) break;
          w.cancelTimer = this.host.timers.after(action.afterMs, () => {
            this.windowExpired(r, action.window).catch((error: unknown) =>
              this.host.onEvent('group: leaving after a window timeout failed', { volume, error: error instanceof Error ? error.message : String(error) }));
          });
          break;
        }
        case 'switch-cycles': {
          const a = r.capturing ? r.asyncR1 : undefined;
          if (!a) throw invalidState('the pair runs no cycles');
          a.switchTo(action.tag);
          if (r.group) r.group.tag = action.tag;
          break;
        }
        case 'adopt-tag':
          if (r.group && !r.capturing) r.group.tag = action.tag;
          break;
        case 'enter-group': {
          // No window is open while a table is stored: the capture cycle can take the group's tag.
          const a = r.capturing ? r.asyncR1 : undefined;
          if (a && a.groupFrom === null) a.enterGroup(action.table.tag);
          r.group = { name: action.table.group, tag: action.table.tag };
          break;
        }
        case 'leave-group': {
          r.group = undefined;
          const a = r.capturing ? r.asyncR1 : undefined;
          if (a && a.groupFrom !== null) a.leaveGroup();
          break;
        }
        case 'fall-back':
          // suspendForGroup stops the cycles before its first await, so no write after this point
          // is captured; the rest (saving, telling R2) need not keep the window's writes waiting.
          pending.push(this.host.pairs.suspendForGroup(volume, action.reason));
          strict = false;
          break;
        case 'keep-table': {
          await this.keepTable(r.record.id, action.table);
          const told = this.tellR2(r, action.table, action.table ? (r.capturing ? r.asyncR1?.groupFrom ?? null : null) : null);
          if (strict) await told;
          else await told.catch(() => undefined);
          break;
        }
      }
    }
    await Promise.all(pending);
  }

  /** Holds the volume's writes for window `id`; fails if the window closed while the hold was pending. */
  private async hold(r: PairRuntime, id: number): Promise<void> {
    const volume = r.record.name;
    const w: HeldWindow = { id, release: undefined, opened: Promise.resolve(), cancelTimer: () => undefined };
    this.windows.set(volume, w);
    w.opened = (async () => {
      const release = await r.volume.holdWrites();
      const follow = this.machineFor(r).held(id);
      if (this.windows.get(volume) !== w || follow.some((a) => a.kind === 'release-writes')) {
        release();
        throw new TidemarkError(ErrorCode.InvalidState, 'the window was closed while opening');
      }
      w.release = release;
      await this.execute(r, follow, false);
    })();
    await w.opened;
  }

  private release(volume: string, id: number): void {
    const w = this.windows.get(volume);
    if (!w || w.id !== id) return;
    this.windows.delete(volume);
    w.cancelTimer();
    w.release?.();
  }

  private async windowExpired(r: PairRuntime, id: number): Promise<void> {
    const actions = this.machineFor(r).windowExpired(id);
    if (actions.length === 0) return;
    const fellBack = actions.some((a) => a.kind === 'fall-back');
    await this.execute(r, actions, false);
    if (!fellBack) this.host.onEvent('group write window closed without a switch (coordinator silent)', { volume: r.record.localVolume });
  }

  /** The array stops: windows close (their timers with them). */
  close(): void {
    for (const [volume, w] of [...this.windows]) this.release(volume, w.id);
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
      .then((reply) => reply.header.input);
  }

  private resolveOn(m: GroupMemberRef, action: RecoveryAction | 'release'): Promise<{ appliedCycle: number; appliedTag: number | null }> {
    if (m.r2Array === this.host.arrayName) return this.r2Resolve(m, action);
    return this.host.rpc.request(m.r2Array, { op: 'group.r2-resolve', member: m, action }, [], CONTROL_TIMEOUT_MS * 6)
      .then(({ header }) => ({ appliedCycle: header.appliedCycle, appliedTag: header.appliedTag }));
  }

  // ---- requests from peer arrays ----

  private registerHandlers(): void {
    const { rpc } = this.host;
    rpc.handle('group.command', async (peer, h) => {
      const command = h.command;
      // The schema checked the table's shape; parsing also refuses a member listed twice.
      const checked: MemberCommand = command.kind === 'store-table' ? { ...command, table: parseMembershipTable(command.table, 'group.command') } : command;
      return { header: { answer: await this.command(h.volume, checked, h.group, peer) }, segments: [] };
    });
    rpc.handle('group.member-info', async (_peer, h) => ({ header: { member: this.memberInfo(h.volume, h.group) }, segments: [] }));
    rpc.handle('group.member-status', async (_peer, h) => ({ header: { status: this.memberStatus(h.volume) }, segments: [] }));
    rpc.handle('group.r2-table', async (peer, h) => {
      const pairId = h.pair;
      const r = this.host.pairs.halfById(pairId, peer);
      if (!r || r.record.role !== 'R2') throw notFound(`no R2 half of pair ${pairId} with ${peer} on ${this.host.arrayName}`);
      await this.keepTable(pairId, h.table === null ? null : parseMembershipTable(h.table, 'group.r2-table'));
      const groupFrom = h.groupFrom;
      if (r.asyncR2 && !r.asyncR2.stopped && (h.table === null || groupFrom !== null)) await r.asyncR2.setGroupFrom(groupFrom);
      return { header: {}, segments: [] };
    });
    rpc.handle('group.r2-state', async (_peer, h) => {
      const input = await this.r2State(h.member, h.force);
      return { header: { input }, segments: [] };
    });
    rpc.handle('group.r2-resolve', async (_peer, h) => {
      return { header: await this.r2Resolve(h.member, h.action), segments: [] };
    });
  }
}
