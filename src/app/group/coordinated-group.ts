// The coordinator role for one consistency group on this array: the pure GroupCoordinator driven by
// a timer, its commands delivered to the members (this array's pairs directly, other arrays' over
// the link) and their answers fed back. Commands that get no answer are re-sent by the machine.
//
// Tags never repeat: before any switch command with tag X goes out, X is written to the group's
// record. After a restart the coordinator first runs the switch to that tag again (it may have
// reached only some members; those that have it answer at once), then tags grow.
import { GroupCoordinator, type CoordinatorCommand, type CoordinatorPhase, type GroupStall } from '../../core/group/coordinator.js';
import { memberKey, type GroupMemberRef, type GroupRecord, type MembershipTable } from '../../core/group/group-record.js';
import type { Timers } from '../../ports/timers.js';
import { answerToEvent, type MemberAnswer, type MemberCommand } from '../../core/group/member.js';

/** How often the coordinator looks at its timers. */
const TICK_MS = 20;
/** A command without an answer is sent again after this long. */
const RETRY_MS = 300;
/** A member that does not open its window, switch or store the table this long is evicted. */
const SWITCH_TIMEOUT_MS = 2500;

export interface CoordinatedGroupHost {
  readonly arrayName: string;
  readonly timers: Timers;
  /** No switch for this long: the group reports itself stalled (default: GroupCoordinator's). */
  readonly stallAfterMs?: number;
  nowMs(): number;
  /** Persists the group's record (members and highest tag). */
  save(record: GroupRecord): Promise<void>;
  /** Delivers a command to a member (locally or over the link) and returns its answer. */
  deliver(member: GroupMemberRef, command: MemberCommand): Promise<MemberAnswer>;
  onEvent(message: string, fields: Record<string, unknown>): void;
  /** A member follows another coordinator with a newer epoch: this one must stop. */
  superseded(coordinator: string, epoch: number): void;
}

export class CoordinatedGroup {
  private readonly machine: GroupCoordinator;
  private recordValue: GroupRecord;
  /** Every member the machine may still talk to (members, joining, leaving, just evicted). */
  private readonly refs = new Map<string, GroupMemberRef>();
  private savedTag: number;
  private saving: Promise<void> = Promise.resolve();
  private readonly stopTimer: () => void;
  /** Why members were evicted (kept for `group show` and a waiting `group add`). */
  readonly evictions = new Map<string, string>();
  private closed = false;

  constructor(private readonly host: CoordinatedGroupHost, record: GroupRecord) {
    this.recordValue = record;
    this.savedTag = record.tag;
    this.machine = new GroupCoordinator({
      members: [], tag: record.tag, cycleMs: record.cycleMs, retryMs: RETRY_MS, switchTimeoutMs: SWITCH_TIMEOUT_MS, nowMs: host.nowMs(),
      // A restart may have cut a switch short (some members at the recorded tag, some before it):
      // that switch runs once more before tags grow.
      redoSwitch: record.tag > 0,
      ...(host.stallAfterMs !== undefined ? { stallAfterMs: host.stallAfterMs } : {}),
    });
    // Joining every stored member makes the machine store the table on all of them first: after a
    // restart each member learns the coordinator is back, and with which tag.
    for (const m of record.members) {
      this.refs.set(memberKey(m), m);
      this.run(this.machine.join(memberKey(m), host.nowMs()));
    }
    this.stopTimer = host.timers.every(TICK_MS, () => {
      this.run(this.machine.tick(host.nowMs()));
      this.noteStall();
    });
  }

  get record(): GroupRecord {
    return this.recordValue;
  }

  get phase(): CoordinatorPhase {
    return this.machine.phase;
  }

  get tag(): number {
    return this.machine.tag;
  }

  get switchCount(): number {
    return this.machine.switchCount;
  }

  waitingFor(): string[] {
    return this.machine.waitingFor();
  }

  /** Why the group has not switched for a while (null while it switches). */
  stall(): GroupStall | null {
    return this.machine.stall(this.host.nowMs());
  }

  lastSwitchAgeSeconds(): number {
    return Math.max(0, this.host.nowMs() - this.machine.lastSwitchAtMs) / 1000;
  }

  /** The timeline says when a group starts and stops being stalled, and why. */
  private noteStall(): void {
    const stall = this.machine.stall(this.host.nowMs());
    if ((stall === null) === (this.stalledCause === null)) return;
    this.stalledCause = stall?.cause ?? null;
    if (stall) this.host.onEvent('group stalled', { group: this.recordValue.name, cause: stall.cause, lastSwitchAgeSeconds: this.lastSwitchAgeSeconds() });
    else this.host.onEvent('group switching again', { group: this.recordValue.name });
  }

  private stalledCause: string | null = null;

  isMember(key: string): boolean {
    return this.machine.members.includes(key);
  }

  /** No membership change is being stored on the members. */
  get settled(): boolean {
    return this.machine.phase !== 'reconfiguring';
  }

  async join(member: GroupMemberRef): Promise<void> {
    const key = memberKey(member);
    this.refs.set(key, member);
    this.evictions.delete(key);
    // Recorded first: a coordinator restarted mid-join still stores the table on the new member.
    await this.save({ ...this.recordValue, members: [...this.recordValue.members, member] });
    this.run(this.machine.join(key, this.host.nowMs()));
  }

  async leave(member: GroupMemberRef): Promise<void> {
    const key = memberKey(member);
    await this.save({ ...this.recordValue, members: this.recordValue.members.filter((m) => memberKey(m) !== key) });
    this.run(this.machine.leave(key, this.host.nowMs()));
  }

  close(): void {
    this.closed = true;
    this.stopTimer();
  }

  private save(record: GroupRecord): Promise<void> {
    this.recordValue = record;
    const done = this.saving.then(() => this.host.save(record));
    this.saving = done.catch(() => undefined);
    return done;
  }

  private run(commands: CoordinatorCommand[]): void {
    if (this.closed) return;
    for (const command of commands) {
      if (command.kind === 'dropped') {
        this.recordDeparture(command.member, command.reason);
        continue;
      }
      if (command.kind !== 'switch') {
        this.deliver(command);
        continue;
      }
      if (command.tag > this.savedTag) {
        const tag = command.tag;
        this.savedTag = tag;
        this.tagSaved = this.save({ ...this.recordValue, tag }).catch((error: unknown) => {
          this.savedTag = Math.min(this.savedTag, tag - 1);
          this.host.onEvent('group: cannot record the next tag; switch postponed', { group: this.recordValue.name, error: String(error) });
          throw error;
        });
      }
      // Every switch command waits until its tag is on disk.
      this.tagSaved.then(() => this.deliver(command), () => undefined);
    }
  }

  private tagSaved: Promise<void> = Promise.resolve();

  /** The machine let a member go that said it is out of the group: say so, and keep it out of the record. */
  private recordDeparture(key: string, reason: string): void {
    this.evictions.set(key, `left on its own: ${reason}`);
    this.host.onEvent('group member left on its own', { group: this.recordValue.name, member: key, reason });
    this.save({ ...this.recordValue, members: this.recordValue.members.filter((m) => memberKey(m) !== key) })
      .catch((error: unknown) => this.host.onEvent('group: cannot record a departure', { group: this.recordValue.name, error: String(error) }));
  }

  private deliver(command: Exclude<CoordinatorCommand, { kind: 'dropped' }>): void {
    const ref = this.refs.get(command.member);
    if (!ref) return;
    const wire = this.toWire(command);
    if (command.kind === 'evict') {
      this.evictions.set(command.member, command.reason);
      this.host.onEvent('group member evicted', { group: this.recordValue.name, member: command.member, reason: command.reason });
      this.save({ ...this.recordValue, members: this.recordValue.members.filter((m) => memberKey(m) !== command.member) })
        .catch((error: unknown) => this.host.onEvent('group: cannot record an eviction', { group: this.recordValue.name, error: String(error) }));
    }
    this.host.deliver(ref, wire).then((answer) => {
      if (this.closed) return;
      if (answer.kind === 'superseded') {
        // Another array took the role over while this one was away: stop coordinating at once.
        this.close();
        this.host.superseded(answer.coordinator, answer.epoch);
        return;
      }
      const event = answerToEvent(command.member, answer);
      if (event) this.run(this.machine.handle(event, this.host.nowMs()));
    }, () => {
      // No answer (link down, member busy): the machine asks again after RETRY_MS.
    });
  }

  private toWire(command: Exclude<CoordinatorCommand, { kind: 'dropped' }>): MemberCommand {
    switch (command.kind) {
      case 'query-ready': return { kind: 'query-ready', tag: this.machine.tag };
      case 'open-window': return { kind: 'open-window' };
      case 'switch': return { kind: 'switch', tag: command.tag };
      case 'close-window': return { kind: 'close-window' };
      case 'evict': return { kind: 'evict', reason: command.reason };
      case 'store-table': {
        const table: MembershipTable = {
          group: this.recordValue.name, coordinator: this.host.arrayName, epoch: this.recordValue.epoch, version: command.table.version,
          cycleMs: this.recordValue.cycleMs, tag: command.table.tag,
          members: command.table.members.map((key) => this.refs.get(key)!),
        };
        return { kind: 'store-table', table };
      }
    }
  }
}
