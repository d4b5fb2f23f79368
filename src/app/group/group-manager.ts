// Consistency groups on this array (SPEC §5): the groups it coordinates, and its pair halves'
// membership. `group show` given to a member's array is answered by asking the coordinator.
import { ErrorCode, TidemarkError, invalidArgument, invalidState, notFound } from '../../core/errors.js';
import { decodeJson, encodeJson } from '../../core/lib/checksummed-record.js';
import { checkGroupName, memberKey, parseGroupRecord, type GroupMemberRef, type GroupRecord } from '../../core/group/group-record.js';
import { CoordinatedGroup } from './coordinated-group.js';
import type { GroupStall } from '../../core/group/coordinator.js';
import type { GroupStats } from '../metrics.js';
import { GroupMemberSide, type GroupMemberHost, type GroupRecoveryReport, type MemberAnswer, type MemberCommand, type MemberStatus } from './group-member.js';
import type { GroupMemberViewBody, GroupViewBody } from '../../adapters/http/group-routes.js';

export const DEFAULT_GROUP_CYCLE_MS = 1000;
export const MIN_GROUP_CYCLE_MS = 100;
const CONTROL_TIMEOUT_MS = 10_000;
/** How often a restarted member that has not heard from its coordinator asks whether it still belongs. */
const MEMBERSHIP_CHECK_MS = 3000;
/** `group add` / `group remove` wait this long for the table to reach every member. */
const MEMBERSHIP_WAIT_MS = 20_000;

// A group's status is the API's shape: the schema is its one definition.
export type GroupMemberView = GroupMemberViewBody;
export type GroupView = GroupViewBody;

const recordKey = (name: string): string => `group/${name}`;
const stallView = (stall: GroupStall | null): { cause: string } | null => (stall ? { cause: stall.cause } : null);

export class GroupManager {
  readonly member: GroupMemberSide;
  private readonly coordinated = new Map<string, CoordinatedGroup>();

  private readonly stopChecks: () => void;

  private constructor(host: Omit<GroupMemberHost, 'isMemberHere'>) {
    this.host = { ...host, isMemberHere: (group, key) => this.isMemberHere(group, key) };
    this.member = new GroupMemberSide(this.host);
    this.registerHandlers();
    this.stopChecks = host.timers.every(MEMBERSHIP_CHECK_MS, () => void this.member.checkMembership().catch(() => undefined));
  }

  private readonly host: GroupMemberHost;
  private loaded = false;

  /** Undefined: this array does not coordinate the group. */
  private isMemberHere(group: string, key: string): boolean | undefined {
    // Still loading the groups it coordinates: do not let a member conclude anything.
    if (!this.loaded) return true;
    const g = this.coordinated.get(group);
    return g ? g.record.members.some((m) => memberKey(m) === key) : undefined;
  }

  static async open(host: Omit<GroupMemberHost, 'isMemberHere'>): Promise<GroupManager> {
    const manager = new GroupManager(host);
    await manager.member.load();
    for (const key of await host.meta.list('group/')) {
      const bytes = await host.meta.read(key);
      if (!bytes) continue;
      const record = parseGroupRecord(decodeJson(bytes, key), key);
      if (record.coordinator === host.arrayName) manager.startCoordinating(record);
    }
    manager.loaded = true;
    return manager;
  }

  close(): void {
    this.stopChecks();
    for (const g of this.coordinated.values()) g.close();
    this.member.close();
  }

  private startCoordinating(record: GroupRecord): CoordinatedGroup {
    const group = new CoordinatedGroup({
      arrayName: this.host.arrayName, timers: this.host.timers, nowMs: this.host.nowMs,
      ...(this.host.stallAfterMs !== undefined ? { stallAfterMs: this.host.stallAfterMs } : {}),
      save: (r) => this.host.meta.write(recordKey(r.name), encodeJson(r)),
      deliver: (m, command) => this.deliver(record.name, m, command),
      onEvent: this.host.onEvent,
      superseded: (coordinator, epoch) => void this.superseded(record.name, group, coordinator, epoch),
    }, record);
    this.coordinated.set(record.name, group);
    return group;
  }

  private async deliver(group: string, m: GroupMemberRef, command: MemberCommand): Promise<MemberAnswer> {
    if (m.array === this.host.arrayName) return this.member.command(m.volume, command, group, this.host.arrayName);
    const reply = await this.host.rpc.request(m.array, { op: 'group.command', group, volume: m.volume, command }, [], CONTROL_TIMEOUT_MS);
    return reply.header.answer;
  }

  /** Another array took the coordinator role over: forget the group here. */
  private async superseded(name: string, group: CoordinatedGroup, coordinator: string, epoch: number): Promise<void> {
    if (this.coordinated.get(name) !== group) return;
    this.coordinated.delete(name);
    await this.host.meta.delete(recordKey(name)).catch(() => undefined);
    this.host.onEvent('group: another array coordinates it now; stopped coordinating', { group: name, coordinator, epoch });
  }

  /**
   * Makes this array the group's coordinator after the old one was lost (SPEC §5: switching stops
   * until it returns or another array takes over). This array must hold a member's table (R1 or R2
   * half). The members' current capture tags are asked first: the new coordinator starts from the
   * highest and redoes that switch, like a restarted one; its newer epoch fences the old coordinator.
   */
  async takeOver(name: string, options: { force: boolean }): Promise<GroupView> {
    checkGroupName(name);
    if (this.coordinated.has(name)) throw new TidemarkError(ErrorCode.AlreadyExists, `${this.host.arrayName} coordinates group ${name} already`);
    const table = this.member.knownGroups().find((t) => t.group === name);
    if (!table) throw notFound(`no member of group ${name} on ${this.host.arrayName}: take over on an array that holds one (R1 or R2)`, { group: name });
    if (!options.force && this.host.rpc.isUp(table.coordinator)) {
      const reply = await this.host.rpc.request(table.coordinator, { op: 'group.locate', group: name }, [], 5000).catch(() => undefined);
      if (reply?.header.coordinates === true) {
        throw invalidState(`${table.coordinator} still coordinates group ${name}; take over only when it is lost (or --force)`, { coordinator: table.coordinator });
      }
    }
    let tag = table.tag;
    for (const m of table.members) {
      try {
        const status = await this.memberStatus(m, 5000);
        if (status.captureTag !== null) tag = Math.max(tag, status.captureTag);
      } catch {
        // Unreachable: its tag is at most one switch ahead of those reached, which the redone switch and the next one cover.
      }
    }
    const record: GroupRecord = { name, coordinator: this.host.arrayName, epoch: table.epoch + 1, cycleMs: table.cycleMs, members: table.members, tag };
    await this.host.meta.write(recordKey(name), encodeJson(record));
    this.startCoordinating(record);
    this.host.onEvent('group coordinator role taken over', { group: name, from: table.coordinator, epoch: record.epoch, tag });
    return this.show(name);
  }

  /** A member's cycles as its R1 array reports them (this array's own directly). */
  private async memberStatus(m: GroupMemberRef, timeoutMs: number): Promise<MemberStatus> {
    if (m.array === this.host.arrayName) return this.member.memberStatus(m.volume);
    const reply = await this.host.rpc.request(m.array, { op: 'group.member-status', volume: m.volume }, [], timeoutMs);
    return reply.header.status as MemberStatus;
  }

  private coordinatedGroup(name: string): CoordinatedGroup {
    const g = this.coordinated.get(name);
    if (g) return g;
    const known = this.member.knownGroups().find((t) => t.group === name);
    if (known) throw invalidState(`group ${name} is coordinated by ${known.coordinator}; give the command there`, { group: name, coordinator: known.coordinator });
    throw notFound(`no group named ${JSON.stringify(name)} on ${this.host.arrayName}`, { group: name });
  }

  // ---- commands ----

  async create(name: string, cycleMs = DEFAULT_GROUP_CYCLE_MS): Promise<GroupView> {
    checkGroupName(name);
    if (!Number.isSafeInteger(cycleMs) || cycleMs < MIN_GROUP_CYCLE_MS) throw invalidArgument(`--cycle-ms must be a whole number of at least ${MIN_GROUP_CYCLE_MS}`);
    if (this.coordinated.has(name) || this.member.knownGroups().some((t) => t.group === name)) {
      throw new TidemarkError(ErrorCode.AlreadyExists, `group ${name} already exists`, { group: name });
    }
    const record: GroupRecord = { name, coordinator: this.host.arrayName, epoch: 0, cycleMs, members: [], tag: 0 };
    await this.host.meta.write(recordKey(name), encodeJson(record));
    this.startCoordinating(record);
    this.host.onEvent('group created', { group: name, cycleMs });
    return this.show(name);
  }

  async delete(name: string): Promise<void> {
    const g = this.coordinatedGroup(name);
    if (g.record.members.length > 0) throw invalidState(`group ${name} still has ${g.record.members.length} member(s); remove them first`);
    g.close();
    this.coordinated.delete(name);
    await this.host.meta.delete(recordKey(name));
    this.host.onEvent('group deleted', { group: name });
  }

  /**
   * Adds the pair whose R1 half is `volume` on `array` (this array by default). Given to a member's
   * array that does not coordinate the group, it is passed on to the coordinator.
   */
  async add(name: string, volume: string, array = this.host.arrayName): Promise<GroupView> {
    if (!this.coordinated.has(name) && array === this.host.arrayName) return this.onCoordinator(name, 'group.add', volume);
    const g = this.coordinatedGroup(name);
    const key = memberKey({ array, volume });
    if (g.record.members.some((m) => memberKey(m) === key)) throw new TidemarkError(ErrorCode.AlreadyExists, `${key} is already in group ${name}`);
    const ref = array === this.host.arrayName
      ? this.member.memberInfo(volume, name)
      : (await this.host.rpc.request(array, { op: 'group.member-info', volume, group: name }, [], CONTROL_TIMEOUT_MS)).header.member;
    await g.join(ref);
    await this.waitSettled(g, () => g.isMember(key) || g.evictions.has(key));
    if (!g.isMember(key)) throw new TidemarkError(ErrorCode.Unavailable, `${key} did not store the membership table: ${g.evictions.get(key) ?? 'no answer'}`);
    this.host.onEvent('group member added', { group: name, member: key });
    return this.show(name);
  }

  async remove(name: string, volume: string, array = this.host.arrayName): Promise<GroupView> {
    if (!this.coordinated.has(name) && array === this.host.arrayName) return this.onCoordinator(name, 'group.remove', volume);
    const g = this.coordinatedGroup(name);
    const key = memberKey({ array, volume });
    const ref = g.record.members.find((m) => memberKey(m) === key);
    if (!ref) throw notFound(`${key} is not in group ${name}`);
    await g.leave(ref);
    await this.waitSettled(g, () => !g.isMember(key));
    this.host.onEvent('group member removed', { group: name, member: key });
    return this.show(name);
  }

  private async waitSettled(g: CoordinatedGroup, done: () => boolean): Promise<void> {
    const deadline = this.host.nowMs() + MEMBERSHIP_WAIT_MS;
    while (!(done() && g.settled)) {
      if (this.host.nowMs() > deadline) throw new TidemarkError(ErrorCode.Unavailable, `the membership of group ${g.record.name} did not settle within ${MEMBERSHIP_WAIT_MS / 1000} s`);
      await new Promise<void>((resolve) => this.host.timers.after(20, resolve));
    }
  }

  list(): Array<{ name: string; coordinator: string; members: number; coordinatedHere: boolean }> {
    const out = new Map<string, { name: string; coordinator: string; members: number; coordinatedHere: boolean }>();
    for (const t of this.member.knownGroups()) out.set(t.group, { name: t.group, coordinator: t.coordinator, members: t.members.length, coordinatedHere: false });
    for (const g of this.coordinated.values()) out.set(g.record.name, { name: g.record.name, coordinator: this.host.arrayName, members: g.record.members.length, coordinatedHere: true });
    return [...out.values()].sort((a, b) => a.name.localeCompare(b.name));
  }

  async show(name: string): Promise<GroupView> {
    const g = this.coordinated.get(name);
    if (!g) {
      const known = this.member.knownGroups().find((t) => t.group === name);
      if (!known) throw notFound(`no group named ${JSON.stringify(name)} on ${this.host.arrayName}`, { group: name });
      const reply = await this.host.rpc.request(known.coordinator, { op: 'group.show', group: name }, [], CONTROL_TIMEOUT_MS);
      return reply.header.view as GroupView;
    }
    const members = await Promise.all(g.record.members.map(async (m): Promise<GroupMemberView> => {
      try {
        const status = await this.memberStatus(m, 2000);
        return { ...m, member: memberKey(m), status, error: null };
      } catch (error) {
        return { ...m, member: memberKey(m), status: null, error: error instanceof Error ? error.message : String(error) };
      }
    }));
    return {
      name, coordinator: this.host.arrayName, cycleMs: g.record.cycleMs, phase: g.phase, tag: g.tag, switches: g.switchCount,
      waitingFor: g.waitingFor(), lagSeconds: Math.max(0, ...members.map((m) => m.status?.lagSeconds ?? 0)), members,
      evicted: [...g.evictions].map(([member, reason]) => ({ member, reason })),
      lastSwitchAgeSeconds: g.lastSwitchAgeSeconds(), stalled: stallView(g.stall()),
    };
  }

  /** For metrics: the groups this array coordinates. */
  stats(): GroupStats[] {
    return [...this.coordinated.values()].map((g) => ({
      group: g.record.name, tag: g.tag, switches: g.switchCount, members: g.record.members.length, waiting: g.waitingFor().length,
      lastSwitchAgeSeconds: g.lastSwitchAgeSeconds(), stalled: g.stall() ? 1 : 0,
    }));
  }

  recover(name: string, options: { dryRun: boolean; force: boolean }): Promise<GroupRecoveryReport> {
    checkGroupName(name);
    return this.member.recover(name, options);
  }

  /**
   * A membership change given to a member's array: passed to the coordinator, as named by a table
   * this array holds or else found among its peers.
   */
  private async onCoordinator(name: string, op: 'group.add' | 'group.remove', volume: string): Promise<GroupView> {
    const coordinator = this.member.knownGroups().find((t) => t.group === name)?.coordinator ?? await this.locate(name);
    const reply = await this.host.rpc.request(coordinator, { op, group: name, volume }, [], MEMBERSHIP_WAIT_MS + CONTROL_TIMEOUT_MS);
    return reply.header.view as GroupView;
  }

  /** Which peer coordinates the group (asked of every peer whose link is up). */
  private async locate(name: string): Promise<string> {
    const peers = this.host.peers().filter((p) => this.host.rpc.isUp(p));
    const answers = await Promise.all(peers.map(async (p) => {
      try {
        const reply = await this.host.rpc.request(p, { op: 'group.locate', group: name }, [], 5000);
        return reply.header.coordinates === true ? p : undefined;
      } catch {
        return undefined;
      }
    }));
    const found = answers.find((p) => p !== undefined);
    if (!found) throw notFound(`no group named ${JSON.stringify(name)} here or on a reachable peer of ${this.host.arrayName}`, { group: name });
    return found;
  }

  private registerHandlers(): void {
    const { rpc } = this.host;
    rpc.handle('group.show', async (_peer, h) => ({ header: { view: await this.show(h.group) }, segments: [] }));
    rpc.handle('group.locate', async (_peer, h) => ({ header: { coordinates: this.coordinated.has(h.group) }, segments: [] }));
    rpc.handle('group.is-member', async (_peer, h) => ({ header: { member: this.isMemberHere(h.group, h.member) ?? null }, segments: [] }));
    rpc.handle('group.add', async (peer, h) => ({ header: { view: await this.add(h.group, h.volume, peer) }, segments: [] }));
    rpc.handle('group.remove', async (peer, h) => ({ header: { view: await this.remove(h.group, h.volume, peer) }, segments: [] }));
  }
}
