// Seeded simulation of ordered asynchronous replication (SPEC §5) over the pure core machines:
// one or more R1 volumes (in-memory byte arrays) in a consistency group with a coordinator (or a
// lone standalone pair), a workload of dependent writes (each issued only after the previous one
// was acknowledged, spread across the group's volumes), a lossy / delaying / duplicating /
// reordering / partitioning transport between each R1 and its R2, R2 crashes mid-apply (restart
// from what it persisted), spilling on R1, and optionally a disaster on the R1 side (every R1
// array dies, at staggered times) after which the R2s run the group recovery decision.
//
// Group faults: the coordinator process crashes at random moments (also mid-switch, with member
// windows open) and restarts from what it persisted; member control links partition long enough
// for the coordinator to evict them (switchTimeoutMs); members' write windows time out when the
// coordinator vanishes; standalone pairs join the group mid-workload and members leave it.
//
// Oracle: after recovery, the writes present across the R2 volumes of the group's members are
// exactly the first K writes of the issued sequence for some K (dependent-write consistency across
// the group); see checkPrefix for which members count and why. Every other R2 (a standalone pair,
// a member that left, fell back or was evicted) must equal its own R1 at some cycle boundary: the
// first k of its own writes. Without a disaster, a fault-free liveness phase must bring every R2
// whose pair did not fall back to equal its R1.
import { Prng } from '../../core/lib/prng.js';
import { R1Cycles, type SpillRead } from '../../core/replication/cycles/r1-cycles.js';
import { R2Cycles, type PersistedCycle, type R2Persisted } from '../../core/replication/cycles/r2-cycles.js';
import type { R1Message, R2Message } from '../../core/replication/cycles/cycle-messages.js';
import { GroupCoordinator, type CoordinatorCommand, type CoordinatorEvent, type MembershipTable as CoordinatorTable } from '../../core/group/coordinator.js';
import { GroupMemberMachine, answerToEvent, type MemberAction, type MemberCommand, type MemberPairFacts } from '../../core/group/member.js';
import type { GroupMemberRef, MembershipTable } from '../../core/group/group-record.js';
import { decideGroupRecovery, type MemberRecoveryInput, type RecoveryAction } from '../../core/group/group-recovery.js';
import { Scheduler } from '../scheduler.js';

const RB = 4096;
/** The group's name, and its coordinator's (one coordinator process, restarted as new generations). */
const GROUP = 'g';
/** Member mN is the pair of volume "vol" on array mN. */
const memberRef = (name: string): GroupMemberRef => ({ array: name, volume: 'vol', pairId: name, r2Array: `${name}-r2`, r2Volume: 'vol' });
/** The coordinator machine's table as the daemon sends it to members. */
const toMemberTable = (t: CoordinatorTable, cycleMs: number): MembershipTable => ({
  group: GROUP, coordinator: GROUP, epoch: 0, version: t.version, cycleMs, tag: t.tag, members: t.members.map(memberRef),
});

export interface CyclesSimConfig {
  readonly members: number;
  readonly group: boolean;
  readonly writes: number;
  readonly volumeRecords: number;
  readonly trackRecords: number;
  readonly cycleMs: number;
  readonly lossRate: number;
  readonly dupRate: number;
  readonly maxDelayMs: number;
  readonly partitions: boolean;
  readonly r2Crashes: boolean;
  readonly disaster: boolean;
  readonly memoryBudgetRecords: number;
  readonly maxWriteMs: number;
  // ---- drawn after everything above (existing seeds keep their configs) ----
  /** Group: the coordinator process crashes now and then and restarts from its persisted state. */
  readonly coordinatorCrashes: boolean;
  /** Group: a member that has not opened its window / switched / stored the table this long is evicted (1e12: never). */
  readonly switchTimeoutMs: number;
  /** Group: a member closes a write window open this long on its own (only with a finite switchTimeoutMs). */
  readonly windowTimeoutMs: number;
  /** Group: coordinator ↔ member control links partition (long enough to get members evicted). */
  readonly controlPartitions: boolean;
  /** Group: standalone pairs (members beyond `members`) that join the group mid-workload. */
  readonly joiners: number;
  /** Group: one member asks to leave the group mid-workload. */
  readonly leave: boolean;
}

export interface CyclesSeedResult {
  readonly seed: number;
  readonly ok: boolean;
  readonly failure?: string;
  readonly config: CyclesSimConfig;
  readonly writesAcked: number;
  /** After a disaster: how many of the issued writes the recovered R2s hold. */
  readonly recoveredWrites: number | null;
  readonly switches: number;
  readonly r2Crashes: number;
  readonly spilled: number;
  readonly simMs: number;
  readonly coordinatorCrashes: number;
  readonly evictions: number;
  /** Members the coordinator let go because they said they were out of the group (fell back, left). */
  readonly drops: number;
  readonly windowTimeouts: number;
  readonly fallbacks: number;
  readonly joins: number;
  readonly leaves: number;
  /** Disasters where a member that joined recently had no group cycle yet and was left out of the group check. */
  readonly recentJoinExclusions: number;
  /** Members whose R2 the group check covered after a disaster. */
  readonly groupChecked: number;
}

export function describeCyclesConfig(c: CyclesSimConfig): string {
  return `${c.members} member(s) ${c.group ? 'group' : 'standalone'}, ${c.writes} writes, cycle ${c.cycleMs} ms, ` +
    `loss ${c.lossRate}, dup ${c.dupRate}, delay ≤${c.maxDelayMs} ms${c.partitions ? ', partitions' : ''}` +
    `${c.r2Crashes ? ', R2 crashes' : ''}${c.disaster ? ', R1 disaster' : ''}, budget ${c.memoryBudgetRecords} records` +
    (c.group ? `, switch timeout ${c.switchTimeoutMs >= 1e12 ? 'never' : `${c.switchTimeoutMs} ms`}` +
      `${c.switchTimeoutMs < 1e12 ? `, window timeout ${c.windowTimeoutMs} ms` : ''}` +
      `${c.coordinatorCrashes ? ', coordinator crashes' : ''}${c.controlPartitions ? ', control partitions' : ''}` +
      `${c.joiners > 0 ? `, ${c.joiners} joiner(s)` : ''}${c.leave ? ', a leave' : ''}` : '');
}

export function drawCyclesConfig(prng: Prng): CyclesSimConfig {
  const members = prng.pick([1, 1, 2, 3, 3]);
  return {
    members,
    group: members > 1 || prng.chance(0.5),
    writes: prng.int(40, 160),
    volumeRecords: prng.pick([8, 16, 32]),
    trackRecords: prng.pick([1, 4]),
    cycleMs: prng.pick([10, 20, 50]),
    lossRate: prng.pick([0, 0.02, 0.1, 0.25]),
    dupRate: prng.pick([0, 0.05, 0.2]),
    maxDelayMs: prng.pick([1, 5, 20]),
    partitions: prng.chance(0.3),
    r2Crashes: prng.chance(0.5),
    disaster: prng.chance(0.5),
    memoryBudgetRecords: prng.pick([2, 8, 1000]),
    maxWriteMs: prng.pick([1, 10, 40]),
    coordinatorCrashes: prng.chance(0.35),
    switchTimeoutMs: prng.pick([1e12, 40, 100, 300]),
    windowTimeoutMs: prng.pick([50, 150, 400, 1000]),
    controlPartitions: prng.chance(0.3),
    joiners: prng.pick([0, 0, 1, 1, 2]),
    leave: prng.chance(0.25),
  };
}

interface Member {
  readonly index: number;
  readonly name: string;
  readonly r1Vol: Uint8Array;
  r1: R1Cycles;
  r1Dead: boolean;
  windowOpen: boolean;
  windowWaiters: Array<() => void>;
  readonly spill: Map<string, Uint8Array>;
  r2: R2Cycles;
  readonly r2Vol: Uint8Array;
  r2Up: boolean;
  incarnation: number;
  readonly persisted: { appliedCycle: number; appliedTag: number | null; cycles: Map<number, PersistedCycle> };
  partitionedUntil: number;
  // ---- group membership (member side) ----
  /** Started as a standalone pair that joins the group later. */
  readonly joiner: boolean;
  /** The first cycle carrying a group tag (0: every cycle, an original member). */
  joinCycle: number;
  /** Group switches since the pair entered the group (for "joined recently"). */
  groupSwitches: number;
  wantsJoin: boolean;
  wantsLeave: boolean;
  /** Fell back to bitmaps (evicted, or its window timed out after it switched): suspended for good. */
  fallenBack: boolean;
  /** Newest membership table stored: (coordinator generation, table version). */
  tableGen: number;
  tableVersion: number;
  /** The member side of the group protocol: the daemon's machine. */
  readonly machine: GroupMemberMachine;
  controlPartitionedUntil: number;
}

interface IssuedWrite {
  readonly member: number;
  readonly offset: number;
  readonly data: Uint8Array;
}

/** What the coordinator process keeps durably (the app's rule: record a tag before sending it). */
interface CoordinatorDisk {
  /** The highest tag ever sent in a switch (or the initial capture tag). */
  tag: number;
  /** Its member list, recorded whenever it changes (before the commands that follow are sent). */
  members: string[];
  /** Evictions not yet acknowledged by the evicted member: re-sent until they are. */
  readonly evicts: Set<string>;
}

class SimFailure extends Error {}

/** Deliberate bugs, for tests that show the oracle catches them (test/sim/oracle-catches-bugs.test.ts). */
export interface CyclesSimBugs {
  /** A member whose window times out after it switched closes it and keeps capturing (no fallback). */
  readonly keepCapturingAfterSwitch?: boolean;
  /** A restarted coordinator moves to a larger tag at once instead of redoing the interrupted switch. */
  readonly restartWithLargerTag?: boolean;
}

export interface CyclesSeedOptions {
  readonly trace?: (line: string) => void;
  readonly bugs?: CyclesSimBugs;
}

export async function runCyclesSeed(
  seed: number, override: Partial<CyclesSimConfig> = {}, options: CyclesSeedOptions = {},
): Promise<CyclesSeedResult> {
  const { trace, bugs = {} } = options;
  const root = new Prng(seed);
  const config: CyclesSimConfig = { ...drawCyclesConfig(root.fork()), ...override };
  const net = root.fork();
  const work = root.fork();
  const faults = root.fork();
  // Randomness of the group faults (coordinator crashes, control partitions, joins, leaves) comes
  // from a stream of its own, so seeds without them run exactly as before.
  const groupFaults = root.fork();
  const sched = new Scheduler();
  const volumeBytes = config.volumeRecords * RB;
  const group = config.group;
  const joinerCount = group ? config.joiners : 0;
  const windowTimeoutMs = config.switchTimeoutMs < 1e12 ? config.windowTimeoutMs : null;
  /** A member not asked anything this long asks the coordinator whether it still belongs (the daemon: 10 s). */
  const silentCoordinatorMs = 10 * config.cycleMs + 10 * Math.min(config.switchTimeoutMs, 100);
  let failure: string | undefined;
  let timersOn = true;
  let r2CrashesOn = config.r2Crashes;
  let lossOn = true;
  let groupFaultsOn = true;
  let r2Crashes = 0;
  let spilled = 0;
  let coordinatorCrashCount = 0;
  let evictions = 0;
  /** Members the coordinator let go because they said they were out of the group. */
  let drops = 0;
  let windowTimeouts = 0;
  let fallbacks = 0;
  let joins = 0;
  let leaves = 0;
  let recentJoinExclusions = 0;
  let groupChecked = 0;
  const issued: IssuedWrite[] = [];
  let acked = 0;
  let writesDone = false;

  const fail = (why: string): void => {
    if (failure === undefined) failure = `${why} (at ${sched.nowMs} ms)`;
  };
  const guard = (fn: () => void) => (): void => {
    if (failure !== undefined) return;
    try {
      fn();
    } catch (error) {
      fail(error instanceof Error ? `${error.name}: ${error.message}\n${error.stack ?? ''}` : String(error));
    }
  };
  const at = (delayMs: number, fn: () => void): void => sched.at(delayMs, guard(fn));
  const log = (what: () => string): void => {
    if (trace) trace(`${sched.nowMs} ${what()}`);
  };

  const r1Base = {
    volumeBytes, trackBytes: config.trackRecords * RB, cycleMs: config.cycleMs,
    memoryBudgetBytes: config.memoryBudgetRecords * RB, captureLimitBytes: 1 << 30, maxBatchRecords: 3, maxInflightRecords: 8,
  };
  const r2Config = { volumeBytes };
  const firstTag = 100;
  const members: Member[] = [];
  for (let i = 0; i < config.members + joinerCount; i++) {
    const joiner = i >= config.members;
    const inGroup = group && !joiner;
    members.push({
      index: i, name: `m${i}`, r1Vol: new Uint8Array(volumeBytes), r1Dead: false, windowOpen: false, windowWaiters: [], spill: new Map(),
      r1: new R1Cycles({ ...r1Base, mode: inGroup ? 'group' : 'standalone' }, inGroup ? { cycle: 1, tag: firstTag, nowMs: 0 } : { cycle: 1, nowMs: 0 }),
      r2: new R2Cycles(r2Config, { appliedCycle: 0, appliedTag: inGroup ? firstTag - 1 : 0 }),
      r2Vol: new Uint8Array(volumeBytes), r2Up: true, incarnation: 0,
      persisted: { appliedCycle: 0, appliedTag: inGroup ? firstTag - 1 : 0, cycles: new Map() },
      partitionedUntil: 0,
      joiner, joinCycle: 0, groupSwitches: 0, wantsJoin: false, wantsLeave: false, fallenBack: false,
      tableGen: 0, tableVersion: 0, controlPartitionedUntil: 0,
      machine: new GroupMemberMachine({ name: `m${i}/vol`, windowTimeoutMs, silentCoordinatorMs }, null, 0),
    });
  }
  const byName = (name: string): Member => members[Number(name.slice(1))]!;
  const inGroupMode = (m: Member): boolean => m.r1.switchMode === 'group';

  // ---- transport ----------------------------------------------------------------------------
  const deliver = (m: Member, fn: () => void): void => {
    if (lossOn && (sched.nowMs < m.partitionedUntil || net.chance(config.lossRate))) return;
    const copies = lossOn && net.chance(config.dupRate) ? 2 : 1;
    for (let c = 0; c < copies; c++) at(net.int(0, config.maxDelayMs), fn);
  };
  const toR2 = (m: Member, msg: R1Message): void => deliver(m, () => {
    if (!m.r2Up) return;
    m.r2.handle(msg);
    runR2Actions(m);
  });
  const toR1 = (m: Member, msg: R2Message): void => deliver(m, () => {
    if (m.r1Dead) return;
    m.r1.receive(msg);
    for (const cycle of m.r1.takeReleasedSpill()) releaseSpill(m, cycle);
    pumpR1(m);
  });
  const releaseSpill = (m: Member, cycle: number): void => {
    for (const key of [...m.spill.keys()]) if (key.startsWith(`${cycle}:`)) m.spill.delete(key);
  };

  // ---- R1 -----------------------------------------------------------------------------------
  const pumpR1 = (m: Member): void => {
    if (m.r1Dead) return;
    const { messages, spillReads } = m.r1.nextToSend(sched.nowMs);
    for (const msg of messages) toR2(m, msg);
    for (const read of spillReads) {
      at(work.int(0, 2), () => {
        if (m.r1Dead) return;
        m.r1.spillRestored(read as SpillRead, (m.spill.get(`${read.cycle}:${read.record}`) ?? new Uint8Array(RB)).slice());
        pumpR1(m);
      });
    }
  };
  const maybeSpill = (m: Member): void => {
    if (!m.r1.overBudget) return;
    for (const w of m.r1.takeSpill(m.r1.memoryBytes - (config.memoryBudgetRecords * RB) / 2)) {
      const key = `${w.cycle}:${w.record}`;
      const slot = m.spill.get(key) ?? new Uint8Array(RB);
      for (const r of w.ranges) slot.set(w.data.subarray(r.start, r.end), r.start);
      m.spill.set(key, slot);
      spilled++;
    }
  };
  const r1Tick = (m: Member): void => {
    if (!timersOn || m.r1Dead) return;
    m.r1.retransmit(sched.nowMs, 4 * config.maxDelayMs + 10);
    if (!inGroupMode(m) && m.r1.canSwitch(sched.nowMs)) m.r1.switchCycle(sched.nowMs);
    pumpR1(m);
    at(5, () => r1Tick(m));
  };

  // ---- R2 -----------------------------------------------------------------------------------
  const runR2Actions = (m: Member): void => {
    const inc = m.incarnation;
    const alive = (): boolean => m.r2Up && m.incarnation === inc;
    for (const a of m.r2.poll()) {
      switch (a.kind) {
        case 'send':
          toR1(m, a.message);
          break;
        case 'persist-cycle':
          at(work.int(0, 3), () => {
            if (!alive()) return;
            m.persisted.cycles.set(a.cycle, { cycle: a.cycle, tag: a.tag, complete: true, committed: false, records: a.records });
            m.r2.cyclePersisted(a.cycle);
            runR2Actions(m);
          });
          break;
        case 'persist-commit':
          at(work.int(0, 3), () => {
            if (!alive()) return;
            const c = m.persisted.cycles.get(a.cycle)!;
            m.persisted.cycles.set(a.cycle, { ...c, committed: true });
            m.r2.commitPersisted(a.cycle);
            runR2Actions(m);
          });
          break;
        case 'apply': {
          // One record at a time, so a crash can leave a cycle half applied.
          const records = a.records;
          const step = (i: number): void => {
            if (!alive()) return;
            if (i < records.length) {
              const r = records[i]!;
              for (const range of r.ranges) m.r2Vol.set(r.data.subarray(range.start, range.end), r.record * RB + range.start);
              at(work.int(0, 2), () => step(i + 1));
              return;
            }
            m.persisted.appliedCycle = a.cycle;
            m.persisted.appliedTag = a.tag;
            m.persisted.cycles.delete(a.cycle);
            m.r2.applyDone(a.cycle);
            runR2Actions(m);
          };
          at(work.int(0, 2), () => step(0));
          break;
        }
        case 'discard':
          m.persisted.cycles.delete(a.cycle);
          break;
      }
    }
  };
  const crashR2 = (m: Member): void => {
    if (!r2CrashesOn || !m.r2Up) return;
    r2Crashes++;
    m.r2Up = false;
    m.incarnation++;
    at(faults.int(5, 60), () => {
      const snapshot: R2Persisted = {
        appliedCycle: m.persisted.appliedCycle, appliedTag: m.persisted.appliedTag, cycles: [...m.persisted.cycles.values()],
      };
      m.r2 = R2Cycles.recover(r2Config, snapshot);
      m.r2Up = true;
      runR2Actions(m);
    });
  };

  // ---- member side of the group protocol ----------------------------------------------------
  // Each R1 runs the daemon's member machine (core/group/member.ts); the sim carries out its actions
  // on the simulated cycles and write windows, as src/app/group/group-member.ts does on real pairs.
  const releaseWindow = (m: Member): void => {
    m.windowOpen = false;
    const waiters = m.windowWaiters.splice(0);
    for (const w of waiters) w();
  };
  /** Suspend the pair: ordered replication gives up (the app marks the returned tracks and suspends the pair). */
  const fallBack = (m: Member): void => {
    if (m.fallenBack) return;
    log(() => `${m.name} falls back`);
    m.fallenBack = true;
    fallbacks++;
    const { releasedSpillCycles } = m.r1.fallBackToBitmaps();
    for (const cycle of releasedSpillCycles) releaseSpill(m, cycle);
    m.spill.clear();
    m.wantsJoin = false;
    // Its hosts must not wait on a window of a group it no longer replicates for; and a member
    // the coordinator may still list asks to leave (it would also be let go at the next question).
    releaseWindow(m);
    m.wantsLeave = inGroupMode(m);
  };
  const memberFacts = (m: Member): MemberPairFacts => ({
    group: inGroupMode(m) && !m.fallenBack ? GROUP : null,
    replicating: !m.fallenBack,
    cycles: m.fallenBack ? null : { grouped: inGroupMode(m), ready: m.r1.isReady(), captureTag: m.r1.captureTag },
    notReadyReason: 'transmit cycle not sealed, or its commit not acknowledged',
  });
  const runMemberActions = (m: Member, actions: readonly MemberAction[]): void => {
    for (const a of actions) {
      switch (a.kind) {
        case 'hold-writes':
          m.windowOpen = true;
          runMemberActions(m, m.machine.held(a.window));
          break;
        case 'release-writes':
          if (m.windowOpen) releaseWindow(m);
          break;
        case 'arm-window-timer':
          at(a.afterMs, () => {
            if (m.r1Dead || !m.machine.windowOpen) return;
            const expired = m.machine.windowExpired(a.window);
            if (expired.length === 0) return;
            windowTimeouts++;
            log(() => `${m.name} window times out (falls back: ${expired.some((x) => x.kind === 'fall-back')})`);
            // The deliberate bug: close the window and keep capturing after a switch in it.
            runMemberActions(m, bugs.keepCapturingAfterSwitch ? expired.filter((x) => x.kind === 'release-writes') : expired);
          });
          break;
        case 'switch-cycles':
          m.r1.switchCycle(sched.nowMs, a.tag);
          m.groupSwitches++;
          pumpR1(m);
          break;
        case 'adopt-tag':
          break; // the simulated cycles always run: nothing waits for a tag
        case 'enter-group':
          if (inGroupMode(m)) break; // a newer table of the group it is in
          // No window of this generation is open: the capture cycle ends at the group's next switch.
          m.joinCycle = m.r1.enterGroup(a.table.tag);
          m.groupSwitches = 0;
          m.wantsJoin = false;
          joins++;
          break;
        case 'leave-group':
          m.wantsLeave = false;
          m.r1.leaveGroup();
          leaves++;
          break;
        case 'fall-back':
          fallBack(m);
          break;
        case 'keep-table':
          break; // the simulated member keeps its table in the machine only
      }
    }
  };
  /** Told it is no member (its leave request reached a coordinator that does not list it): it leaves. */
  const leaveNow = (m: Member): void => {
    m.wantsLeave = false;
    runMemberActions(m, m.machine.leave(memberFacts(m)));
  };

  // ---- coordinator --------------------------------------------------------------------------
  // The coordinator is a process: it crashes and restarts as a new generation from its disk. Its
  // commands and the members' answers travel over per-generation connections (an answer to a dead
  // generation is lost with its connection); members order membership tables by (generation,
  // version), since a new generation numbers its tables afresh.
  let coordinator: GroupCoordinator | null = null;
  let coordGen = 0;
  let switchesBefore = 0;
  /** Joins accepted and not yet in the coordinator's member list (durable with it). */
  let pendingJoins = new Set<string>();
  const disk: CoordinatorDisk = { tag: firstTag, members: members.filter((m) => group && !m.joiner).map((m) => m.name), evicts: new Set() };
  const coordinatorTimings = { cycleMs: config.cycleMs, retryMs: 10, switchTimeoutMs: group ? config.switchTimeoutMs : 1e12 };

  const controlLost = (m: Member): boolean => lossOn && sched.nowMs < m.controlPartitionedUntil;
  const control = (m: Member, delay: () => number, fn: () => void): void => {
    if (lossOn && net.chance(config.lossRate / 2)) return;
    if (controlLost(m)) return;
    at(delay(), fn);
  };
  /** Calls into the coordinator, records what must be durable, then sends the commands. */
  const coordinatorCall = (fn: (c: GroupCoordinator) => CoordinatorCommand[]): void => {
    const c = coordinator;
    if (!c) return;
    const cmds = fn(c);
    for (const cmd of cmds) {
      if (cmd.kind === 'switch') disk.tag = Math.max(disk.tag, cmd.tag);
      if (cmd.kind === 'evict') {
        disk.evicts.add(cmd.member);
        pendingJoins.delete(cmd.member);
        evictions++;
      }
      if (cmd.kind === 'dropped') {
        pendingJoins.delete(cmd.member);
        drops++;
        log(() => `g${coordGen} drops ${cmd.member}: ${cmd.reason}`);
      }
    }
    disk.tag = Math.max(disk.tag, c.tag);
    if (tornPending && c.switchCount > 0 && coordGen > 0) {
      tornPending = false;
      tornDisasterAtMs = sched.nowMs + groupFaults.int(0, 3 * config.cycleMs + 30);
    }
    for (const name of c.members) pendingJoins.delete(name);
    disk.members = [...c.members, ...pendingJoins];
    const switchSends = cmds.filter((cmd) => cmd.kind === 'switch').length;
    if (switchSends > 1 && tornAtSwitchSend !== null && --tornAtSwitchSend === 0) {
      // The planned torn switch: the process dies after sending the switch to some members only.
      tornAtSwitchSend = null;
      runCommands(cmds.slice(0, groupFaults.int(1, switchSends - 1)), coordGen);
      crashCoordinator();
      return;
    }
    if (config.coordinatorCrashes && groupFaultsOn && (c.phase === 'switching' || c.phase === 'closing') &&
        groupFaults.chance(switchSends > 0 ? 0.06 : 0.01)) {
      // The process dies part-way through sending: member windows are open, some members switched, some not.
      runCommands(cmds.slice(0, groupFaults.int(0, cmds.length)), coordGen);
      crashCoordinator();
      return;
    }
    runCommands(cmds, coordGen);
  };
  const runCommands = (cmds: CoordinatorCommand[], gen: number): void => {
    for (const cmd of cmds) {
      // A dropped member is only recorded (disk.members follows the coordinator's list): nothing to send.
      if (cmd.kind === 'dropped') continue;
      control(byName(cmd.member), () => net.int(0, 3), () => memberCommand(cmd, gen));
    }
  };
  const coordinatorEvent = (m: Member, event: CoordinatorEvent, gen: number): void => {
    control(m, () => net.int(0, 3), () => {
      if (!coordinator || gen !== coordGen) return;
      coordinatorCall((c) => c.handle(event, sched.nowMs));
    });
  };
  /**
   * Disaster seeds: the coordinator died mid-switch and the disaster is to strike soon after the
   * next generation completes a switch — the recovery point then falls on the torn switch, where
   * member windows may have timed out (some members had switched, some not) and writes went on.
   */
  let tornPending = false;
  /** Disaster seeds with crashes and window timeouts: the coordinator dies while sending its Nth switch to all members. */
  let tornAtSwitchSend = config.coordinatorCrashes && config.disaster && windowTimeoutMs !== null && groupFaults.chance(0.6)
    ? groupFaults.int(1, 12) : null;
  let tornDisasterAtMs = Infinity;
  const crashCoordinator = (): void => {
    if (!coordinator) return;
    log(() => `coordinator g${coordGen} crashes in ${coordinator?.phase} (disk tag ${disk.tag})`);
    // Down long enough, in some seeds, for member windows to time out (more often than not when they can).
    const restartDelayMs = groupFaults.int(5, Math.max(400, 2 * (windowTimeoutMs ?? 0)));
    if (config.disaster && windowTimeoutMs !== null && tornDisasterAtMs === Infinity && coordinator.phase === 'switching' && groupFaults.chance(0.7)) {
      tornPending = true;
    }
    coordinatorCrashCount++;
    switchesBefore += coordinator.switchCount;
    coordinator = null;
    at(restartDelayMs, () => restartCoordinator());
  };
  const restartCoordinator = (): void => {
    if (!timersOn || coordinator) return;
    coordGen++;
    log(() => `coordinator g${coordGen} restarts: tag ${disk.tag}, members ${disk.members.join(',')}`);
    // Restart from disk: the highest tag ever sent. That switch may have reached only some members
    // (crash mid-switch), so it is run again first (redoSwitch) — moving straight to a larger tag
    // would make the members that took it switch twice while the others switch once (seed 599).
    // The member list is re-announced (a table stored on every member) before the first switch,
    // through joins — a joiner whose table was lost in the crash enters the group then, at a moment
    // no window of this generation is open.
    coordinator = new GroupCoordinator({ members: [], tag: disk.tag, redoSwitch: !bugs.restartWithLargerTag, ...coordinatorTimings, nowMs: sched.nowMs });
    pendingJoins = new Set(disk.members);
    for (const name of disk.members) coordinatorCall((c) => c.join(name, sched.nowMs));
    const gen = coordGen;
    at(0, () => coordinatorTick(gen));
  };
  let lastEvictSendMs = -Infinity;
  const coordinatorTick = (gen: number): void => {
    if (!timersOn || !coordinator || gen !== coordGen) return;
    coordinatorCall((c) => c.tick(sched.nowMs));
    if (disk.evicts.size > 0 && sched.nowMs - lastEvictSendMs >= 10) {
      // The app re-sends an eviction until the member confirms it (the core sends it once).
      lastEvictSendMs = sched.nowMs;
      runCommands([...disk.evicts].map((name) => ({ kind: 'evict', member: name, reason: 're-sent' })), gen);
    }
    if (config.coordinatorCrashes && groupFaultsOn && groupFaults.chance(0.002)) crashCoordinator();
    at(5, () => coordinatorTick(gen));
  };
  /** A member's request to join or leave, handled by whichever generation is up when it arrives. */
  const request = (m: Member, kind: 'join' | 'leave'): void => {
    control(m, () => net.int(0, 3), () => {
      const c = coordinator;
      if (!c) return;
      const gen = coordGen;
      if (kind === 'join') {
        if (pendingJoins.has(m.name) || c.members.includes(m.name) || disk.evicts.has(m.name)) return;
        pendingJoins.add(m.name);
        coordinatorCall((co) => co.join(m.name, sched.nowMs));
        return;
      }
      if (c.members.includes(m.name)) {
        coordinatorCall((co) => co.leave(m.name, sched.nowMs));
      } else if (!pendingJoins.has(m.name)) {
        // Not a member (nor about to become one): tell it so; it leaves (or has fallen back already).
        control(m, () => net.int(0, 3), () => {
          if (gen === coordGen) leaveNow(m);
        });
      }
    });
  };
  const memberTick = (m: Member): void => {
    if (!timersOn || m.r1Dead) return;
    if (m.wantsJoin && !inGroupMode(m) && !m.fallenBack) request(m, 'join');
    if (m.wantsLeave) request(m, 'leave');
    if (m.machine.membershipCheckDue(sched.nowMs, memberFacts(m))) {
      // As the daemon's member does: is this pair still counted? (An answer from a dead generation is lost.)
      control(m, () => net.int(0, 3), () => {
        const c = coordinator;
        if (!c) return;
        const counted = c.members.includes(m.name) || pendingJoins.has(m.name);
        const gen = coordGen;
        control(m, () => net.int(0, 3), () => {
          if (gen !== coordGen || m.r1Dead) return;
          if (!counted) log(() => `${m.name} is not counted by g${gen}: leaves`);
          runMemberActions(m, m.machine.membershipAnswer(counted, memberFacts(m)));
        });
      });
    }
    at(15, () => memberTick(m));
  };

  const memberCommand = (cmd: CoordinatorCommand, gen: number): void => {
    const m = byName(cmd.member);
    if (m.r1Dead || cmd.kind === 'dropped') return;
    log(() => `${m.name} <- g${gen} ${cmd.kind}${cmd.kind === 'switch' ? ` ${cmd.tag}` : ''}${cmd.kind === 'store-table' ? ` v${cmd.table.version} [${cmd.table.members.join(',')}] tag ${cmd.table.tag}` : ''} ` +
      `(capture ${m.r1.captureCycle}/${m.r1.captureTag}, window ${m.windowOpen}, ${m.r1.switchMode}${m.fallenBack ? ', fell back' : ''})`);
    // Tables are ordered by (coordinator generation, version): a new generation numbers them afresh,
    // and one from an older generation may arrive late — the transport knows, so it says so.
    let staleTable = false;
    if (cmd.kind === 'store-table') {
      staleTable = !(gen > m.tableGen || (gen === m.tableGen && cmd.table.version > m.tableVersion));
      if (!staleTable) {
        m.tableGen = gen;
        m.tableVersion = cmd.table.version;
      }
    }
    const wire: MemberCommand = cmd.kind === 'store-table' ? { kind: 'store-table', table: toMemberTable(cmd.table, config.cycleMs) }
      : cmd.kind === 'query-ready' ? { kind: 'query-ready', tag: coordinator?.tag ?? 0 } : cmd;
    const reply = m.machine.command(wire, GROUP, GROUP, memberFacts(m), sched.nowMs, staleTable);
    runMemberActions(m, reply.actions);
    const answer = reply.answer;
    if (cmd.kind === 'switch' && answer?.kind === 'switch-failed' && answer.reason === 'no write window is open') {
      // Only a window the member closed on its own can be missing here (the coordinator opens one first).
      throw new SimFailure(`member ${cmd.member} asked to switch without its window open`);
    }
    if (cmd.kind === 'evict' && (answer?.kind === 'evicted' || answer?.kind === 'not-member')) {
      m.wantsLeave = false;
      // Confirm to the app layer, which re-sends evictions until confirmed.
      control(m, () => net.int(0, 3), () => { disk.evicts.delete(cmd.member); });
    }
    if (answer) {
      const event = answerToEvent(cmd.member, answer);
      if (event) coordinatorEvent(m, event, gen);
    }
  };

  // ---- workload -----------------------------------------------------------------------------
  const issue = (k: number): void => {
    if (k >= config.writes) {
      writesDone = true;
      return;
    }
    const m = members[work.int(0, members.length - 1)]!;
    if (m.r1Dead) return; // the application stops: its next write cannot complete
    if (m.windowOpen) {
      m.windowWaiters.push(guard(() => issue(k)));
      return;
    }
    const shape = work.int(0, 3);
    let offset: number;
    let length: number;
    if (shape === 0) { offset = work.int(0, volumeBytes - 1); length = work.int(1, Math.min(RB, volumeBytes - offset)); }
    else if (shape === 1) { offset = work.int(0, config.volumeRecords - 1) * RB; length = RB * work.int(1, Math.min(3, config.volumeRecords - offset / RB)); }
    else { offset = work.int(0, volumeBytes - 2); length = work.int(1, Math.min(3 * RB, volumeBytes - offset)); }
    const zero = work.chance(0.05);
    const data = new Uint8Array(length);
    if (!zero) work.fill(data);
    issued.push({ member: m.index, offset, data });
    // A suspended pair captures nothing (the app marks the write's tracks in its bitmap).
    const token = m.fallenBack ? null : m.r1.writeBegun();
    log(() => `write ${k} on ${m.name} begins in cycle ${token ? `${token.cycle}/${m.r1.captureTag}` : '(fell back)'}`);
    at(work.int(0, config.maxWriteMs), () => {
      if (m.r1Dead) return; // died before the write completed: it never happened
      m.r1Vol.set(data, offset);
      if (token) {
        m.r1.write(token, offset, length, zero ? null : data);
        m.r1.writeDone(token);
      }
      acked = k + 1;
      maybeSpill(m);
      pumpR1(m);
      at(work.int(0, 3), () => issue(k + 1));
    });
  };

  // ---- faults -------------------------------------------------------------------------------
  const faultTick = (): void => {
    if (!timersOn) return;
    for (const m of members) {
      if (config.partitions && faults.chance(0.01)) m.partitionedUntil = sched.nowMs + faults.int(10, 200);
      if (faults.chance(0.004)) crashR2(m);
    }
    if (group && config.controlPartitions && groupFaultsOn) {
      for (const m of members) if (groupFaults.chance(0.006)) m.controlPartitionedUntil = sched.nowMs + groupFaults.int(20, 400);
    }
    at(5, faultTick);
  };

  const done = (): boolean => failure !== undefined;
  for (const m of members) at(0, () => r1Tick(m));
  if (group) {
    coordinator = new GroupCoordinator({ members: disk.members, tag: firstTag, ...coordinatorTimings, nowMs: 0 });
    at(0, () => coordinatorTick(coordGen));
    for (const m of members) at(0, () => memberTick(m));
    const horizonMs = 25 * config.writes;
    for (const m of members) {
      if (m.joiner) at(groupFaults.int(5, horizonMs), () => { if (!m.fallenBack) m.wantsJoin = true; });
    }
    if (config.leave) {
      const m = members[groupFaults.int(0, members.length - 1)]!;
      at(groupFaults.int(5, horizonMs), () => {
        if (inGroupMode(m) && !m.fallenBack) m.wantsLeave = true;
      });
    }
  }
  at(0, faultTick);
  at(0, () => issue(0));

  let recoveredWrites: number | null = null;
  const maxEvents = 2_000_000;
  if (config.disaster) {
    // The R1 side dies part-way through the workload, member by member within a short window.
    const dieAt = faults.int(20, 40 * config.writes);
    await sched.run(() => done() || sched.nowMs >= Math.min(dieAt, tornDisasterAtMs) || writesDone, maxEvents);
    log(() => `disaster${sched.nowMs >= tornDisasterAtMs ? ' (after a torn switch)' : ''}`);
    for (const m of members) {
      at(faults.int(0, 30), () => { m.r1Dead = true; });
    }
    await sched.run(() => done() || members.every((m) => m.r1Dead), maxEvents);
    timersOn = false;
    coordinator = null;
    // Drain: messages in flight land or not; R2s persist and apply what they can, crash or not.
    await sched.run(done, maxEvents);
    r2CrashesOn = false;
    for (const m of members) {
      if (!m.r2Up) fail(`R2 of member ${m.index} never restarted`);
    }
    if (!done()) {
      const outcome = recoverAfterDisaster(members, disk.members, fail, runR2Actions, log);
      if (outcome) {
        recentJoinExclusions += outcome.recentJoinExcluded ? 1 : 0;
        groupChecked = outcome.checked.length;
        await sched.run(done, maxEvents);
        if (!done()) {
          // The group's members together: one prefix of the issued sequence.
          if (outcome.checked.length > 0) recoveredWrites = checkPrefix(outcome.checked, issued, fail, 'the group');
          // Every other pair on its own: its R2 equals its R1 at some cycle boundary.
          for (const m of members) if (!outcome.checked.includes(m)) checkPrefix([m], issued, fail, `${m.name} on its own`);
        }
      }
    }
  } else {
    await sched.run(() => done() || writesDone, maxEvents);
    if (!done() && !writesDone) fail('workload did not finish');
    // Liveness: heal everything; every R2 must converge to its R1.
    lossOn = false;
    r2CrashesOn = false;
    groupFaultsOn = false;
    for (const m of members) m.partitionedUntil = 0;
    if (group && !coordinator) restartCoordinator();
    const healedAt = sched.nowMs;
    // (A complete, empty cycle may always be waiting for its commit: R2 is never idle while
    // switches go on, so "converged" is: nothing left to ship or apply, and equal volumes.)
    // A pair that fell back is suspended: its R2 only finishes applying what was committed.
    const converged = (): boolean => members.every((m) => {
      if (m.fallenBack) return m.r2Up && m.r2.stats().applyingCycle === null;
      const s = m.r1.stats();
      return m.r2Up && m.r2.stats().applyingCycle === null && s.capture.records === 0 && (s.transmit?.records ?? 0) === 0 &&
        (s.committing?.records ?? 0) === 0 && Buffer.compare(m.r1Vol, m.r2Vol) === 0;
    });
    await sched.run(() => done() || converged() || sched.nowMs > healedAt + 60 * config.cycleMs + 2000, maxEvents);
    if (!done() && !converged()) {
      const s = members.map((m) => `m${m.index}${m.fallenBack ? ' (fell back)' : ''}: r1 ${JSON.stringify(m.r1.stats().capture)} ` +
        `transmit ${JSON.stringify(m.r1.stats().transmit)} r2 ${JSON.stringify(m.r2.stats())}`);
      fail(`R2 did not converge to R1 within the bound after healing: ${s.join(' | ')}` +
        (coordinator ? ` (coordinator ${coordinator.phase}, waiting for ${coordinator.waitingFor().join(',')}, members ${coordinator.members.join(',')})` : ''));
    }
    // Liveness of the group itself: healed, it switches again within a bound (or has no member
    // left) — converged R2s alone would not show a group that stopped switching once idle.
    const switched = (): number => switchesBefore + (coordinator?.switchCount ?? 0);
    if (!done() && group && coordinator) {
      const before = switched();
      const boundMs = sched.nowMs + 20 * config.cycleMs + 10 * config.switchTimeoutMs + 1000;
      await sched.run(() => done() || coordinator === null || coordinator.members.length === 0 || switched() >= before + 2 || sched.nowMs > boundMs, maxEvents);
      if (!done() && coordinator && coordinator.members.length > 0 && switched() < before + 2) {
        fail(`the healed group did not switch twice within ${boundMs - healedAt} ms of healing: coordinator ${coordinator.phase}, ` +
          `waiting for ${coordinator.waitingFor().join(',') || 'nobody'}, members ${coordinator.members.join(',')}, ` +
          `stall: ${coordinator.stall(sched.nowMs)?.cause ?? 'none reported'}`);
      }
    }
    timersOn = false;
    if (!done()) for (const m of members) if (m.fallenBack) checkPrefix([m], issued, fail, `${m.name} (fell back) on its own`);
  }
  return {
    seed, ok: failure === undefined, ...(failure !== undefined ? { failure } : {}), config, writesAcked: acked, recoveredWrites,
    switches: group ? switchesBefore + (coordinator?.switchCount ?? 0) : members[0]!.r1.captureCycle - 1, r2Crashes, spilled, simMs: sched.nowMs,
    coordinatorCrashes: coordinatorCrashCount, evictions, drops, windowTimeouts, fallbacks, joins, leaves, recentJoinExclusions, groupChecked,
  };
}

/**
 * After a disaster: decide per R2 what to apply and return the members the group check covers.
 *
 * The group is what the coordinator's disk lists (it decides recovery at the remote site) minus
 * pairs that fell back (suspended: their R2 stays where it is). A member that joined maps its
 * cycles from before the join to "no group tag": they end at no group boundary (committedTag null
 * while its committed cycle precedes the join; a received cycle before the join counts as an
 * incomplete one, discarded). A member that joined but has no group cycle its R2 can reach makes
 * the decision inconsistent; that is expected only while it joined recently — fewer than two group
 * switches since it entered (after two, its first group cycle was sealed, i.e. persisted whole on
 * its R2) — and then the decision is taken again without it and the case counted.
 */
function recoverAfterDisaster(
  members: readonly Member[], listed: readonly string[], fail: (why: string) => void, runR2Actions: (m: Member) => void,
  log: (what: () => string) => void,
): { checked: Member[]; recentJoinExcluded: boolean } | null {
  let checked = members.filter((m) => listed.includes(m.name) && !m.fallenBack);
  for (const m of checked) {
    if (m.r1.switchMode !== 'group' && !m.joiner) {
      fail(`member ${m.name} is listed by the coordinator but is not a group member`);
      return null;
    }
  }
  const input = (m: Member): MemberRecoveryInput => {
    const s = m.r2.recoveryState();
    const inGroup = m.r1.switchMode === 'group';
    const joinCycle = inGroup ? m.joinCycle : Number.MAX_SAFE_INTEGER;
    return {
      member: m.name,
      committedTag: s.committedCycle < joinCycle ? null : s.committedTag,
      received: s.received === null ? null
        : s.received.cycle < joinCycle ? { tag: null, complete: false } : { tag: s.received.tag, complete: s.received.complete },
    };
  };
  const recent = (m: Member): boolean => m.r1.switchMode !== 'group' || (m.joinCycle > 0 && m.groupSwitches < 2);
  // Members present from the start began together at rest: before the first tag is a group point for them.
  const fromStart = (ms: readonly Member[]): { startIsGroupPoint: boolean } => ({ startIsGroupPoint: ms.every((m) => m.joinCycle === 0) });
  let decision = decideGroupRecovery(checked.map(input), fromStart(checked));
  let recentJoinExcluded = false;
  if (!decision.consistent) {
    const newcomers = checked.filter(recent);
    if (newcomers.length === 0) {
      fail(`group recovery: ${decision.problems.join('; ')} (inputs ${JSON.stringify(checked.map(input))})`);
      return null;
    }
    checked = checked.filter((m) => !recent(m));
    recentJoinExcluded = true;
    decision = decideGroupRecovery(checked.map(input), fromStart(checked));
    if (!decision.consistent) {
      fail(`group recovery without the recent joiner(s): ${decision.problems.join('; ')} (inputs ${JSON.stringify(checked.map(input))})`);
      return null;
    }
  }
  log(() => `recovery: target ${decision.targetTag}, ${JSON.stringify(checked.map(input))} -> ${decision.members.map((d) => `${d.member} ${d.action}`).join(', ')}`);
  for (const m of members) {
    const i = checked.indexOf(m);
    let action: RecoveryAction;
    if (i >= 0) {
      action = decision.members[i]!.action;
    } else {
      // On its own (standalone, left, fell back, not yet in the group): R2 ends at a boundary of its own R1.
      const received = m.r2.recoveryState().received;
      action = received === null ? 'none' : received.complete && !m.fallenBack ? 'apply' : 'discard';
    }
    m.r2.resolveAfterDisaster(action);
  }
  for (const m of members) runR2Actions(m);
  return { checked, recentJoinExcluded };
}

/**
 * The oracle: some K such that every R2 volume of `checked` equals what the first K issued writes
 * make of a zero volume. Tracks the number of differing bytes incrementally (cost: the bytes written).
 *
 * Which writes count. Every issued write keeps its place in the sequence, also writes to pairs
 * outside `checked` (one that fell back, was evicted, left, or joined too recently); only their
 * own volume is not compared, since their suspended or separate pair never promised to hold the
 * group's cut. That is honest because the group's guarantee does not depend on them: if a write on
 * A was issued after a write on E, itself issued after a write on B, then B's write completed
 * before A's began (through E), and the windows of the members that took part in a switch order
 * exactly such pairs, whatever E's pair did. (Keeping E's writes in the sequence or dropping them
 * is the same check — a cut of the full sequence restricted to `checked` is a cut of the filtered
 * one and vice versa — what matters is that all of `checked` share one cut.)
 */
function checkPrefix(checked: readonly Member[], issued: readonly IssuedWrite[], fail: (why: string) => void, what: string): number | null {
  const expected = new Map<number, Uint8Array>();
  let diff = 0;
  for (const m of checked) {
    expected.set(m.index, new Uint8Array(m.r2Vol.length));
    for (const b of m.r2Vol) if (b !== 0) diff++;
  }
  let last: number | null = diff === 0 ? 0 : null;
  for (let k = 0; k < issued.length; k++) {
    const w = issued[k]!;
    const exp = expected.get(w.member);
    if (exp) {
      const actual = checked.find((m) => m.index === w.member)!.r2Vol;
      for (let j = 0; j < w.data.length; j++) {
        const at = w.offset + j;
        const before = exp[at] !== actual[at];
        exp[at] = w.data[j]!;
        const after = exp[at] !== actual[at];
        if (before !== after) diff += after ? 1 : -1;
      }
    }
    if (diff === 0) last = k + 1;
  }
  if (last === null) {
    fail(`no prefix of the ${issued.length} issued writes matches the R2 volumes of ${what} after recovery`);
    return null;
  }
  return last;
}
