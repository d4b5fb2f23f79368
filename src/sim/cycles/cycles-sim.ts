// Seeded simulation of ordered asynchronous replication (SPEC §5) over the pure core machines:
// one or more R1 volumes (in-memory byte arrays) in a consistency group with a coordinator (or a
// lone standalone pair), a workload of dependent writes (each issued only after the previous one
// was acknowledged, spread across the group's volumes), a lossy / delaying / duplicating /
// reordering / partitioning transport between each R1 and its R2, R2 crashes mid-apply (restart
// from what it persisted), spilling on R1, and optionally a disaster on the R1 side (every R1
// array dies, at staggered times) after which the R2s run the group recovery decision.
//
// Oracle: after recovery, the writes present across all R2 volumes are exactly the first K writes
// of the issued sequence for some K (dependent-write consistency across the group). Without a
// disaster, a fault-free liveness phase must bring every R2 to equal its R1.
import { Prng } from '../../core/lib/prng.js';
import { R1Cycles, type SpillRead } from '../../core/replication/cycles/r1-cycles.js';
import { R2Cycles, type PersistedCycle, type R2Persisted } from '../../core/replication/cycles/r2-cycles.js';
import type { R1Message, R2Message } from '../../core/replication/cycles/cycle-messages.js';
import { GroupCoordinator, type CoordinatorCommand, type CoordinatorEvent } from '../../core/group/coordinator.js';
import { decideGroupRecovery } from '../../core/group/group-recovery.js';
import { Scheduler } from '../scheduler.js';

const RB = 4096;

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
}

export function describeCyclesConfig(c: CyclesSimConfig): string {
  return `${c.members} member(s) ${c.group ? 'group' : 'standalone'}, ${c.writes} writes, cycle ${c.cycleMs} ms, ` +
    `loss ${c.lossRate}, dup ${c.dupRate}, delay ≤${c.maxDelayMs} ms${c.partitions ? ', partitions' : ''}` +
    `${c.r2Crashes ? ', R2 crashes' : ''}${c.disaster ? ', R1 disaster' : ''}, budget ${c.memoryBudgetRecords} records`;
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
  };
}

interface Member {
  readonly index: number;
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
}

interface IssuedWrite {
  readonly member: number;
  readonly offset: number;
  readonly data: Uint8Array;
}

class SimFailure extends Error {}

export async function runCyclesSeed(seed: number, override: Partial<CyclesSimConfig> = {}): Promise<CyclesSeedResult> {
  const root = new Prng(seed);
  const config: CyclesSimConfig = { ...drawCyclesConfig(root.fork()), ...override };
  const net = root.fork();
  const work = root.fork();
  const faults = root.fork();
  const sched = new Scheduler();
  const volumeBytes = config.volumeRecords * RB;
  let failure: string | undefined;
  let timersOn = true;
  let coordinatorUp = config.group;
  let r2CrashesOn = config.r2Crashes;
  let lossOn = true;
  let r2Crashes = 0;
  let spilled = 0;
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

  const r1Config = {
    volumeBytes, trackBytes: config.trackRecords * RB, cycleMs: config.cycleMs, mode: config.group ? 'group' as const : 'standalone' as const,
    memoryBudgetBytes: config.memoryBudgetRecords * RB, captureLimitBytes: 1 << 30, maxBatchRecords: 3, maxInflightRecords: 8,
  };
  const r2Config = { volumeBytes };
  const firstTag = 100;
  const members: Member[] = [];
  for (let i = 0; i < config.members; i++) {
    members.push({
      index: i, r1Vol: new Uint8Array(volumeBytes), r1Dead: false, windowOpen: false, windowWaiters: [], spill: new Map(),
      r1: new R1Cycles(r1Config, config.group ? { cycle: 1, tag: firstTag, nowMs: 0 } : { cycle: 1, nowMs: 0 }),
      r2: new R2Cycles(r2Config, { appliedCycle: 0, appliedTag: config.group ? firstTag - 1 : 0 }),
      r2Vol: new Uint8Array(volumeBytes), r2Up: true, incarnation: 0,
      persisted: { appliedCycle: 0, appliedTag: config.group ? firstTag - 1 : 0, cycles: new Map() },
      partitionedUntil: 0,
    });
  }

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
    for (const cycle of m.r1.takeReleasedSpill()) for (const key of [...m.spill.keys()]) if (key.startsWith(`${cycle}:`)) m.spill.delete(key);
    pumpR1(m);
  });

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
    if (!config.group && m.r1.canSwitch(sched.nowMs)) m.r1.switchCycle(sched.nowMs);
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

  // ---- coordinator --------------------------------------------------------------------------
  const coordinator = config.group
    ? new GroupCoordinator({ members: members.map((m) => `m${m.index}`), tag: firstTag, cycleMs: config.cycleMs, retryMs: 10, switchTimeoutMs: 1e12, nowMs: 0 })
    : null;
  const control = (delay: () => number, fn: () => void): void => {
    if (lossOn && net.chance(config.lossRate / 2)) return;
    at(delay(), fn);
  };
  const runCommands = (cmds: CoordinatorCommand[]): void => {
    for (const cmd of cmds) control(() => net.int(0, 3), () => memberCommand(cmd));
  };
  const coordinatorEvent = (event: CoordinatorEvent): void => {
    control(() => net.int(0, 3), () => {
      if (!coordinatorUp || !coordinator) return;
      runCommands(coordinator.handle(event, sched.nowMs));
    });
  };
  const memberCommand = (cmd: CoordinatorCommand): void => {
    const m = members[Number(cmd.member.slice(1))]!;
    if (m.r1Dead) return;
    switch (cmd.kind) {
      case 'query-ready':
        coordinatorEvent({ kind: 'ready', member: cmd.member, ready: m.r1.isReady() });
        break;
      case 'open-window':
        m.windowOpen = true;
        coordinatorEvent({ kind: 'window-opened', member: cmd.member });
        break;
      case 'switch':
        if (m.r1.captureTag === cmd.tag) {
          coordinatorEvent({ kind: 'switched', member: cmd.member, tag: cmd.tag });
        } else if (m.r1.isReady()) {
          if (!m.windowOpen) throw new SimFailure(`member ${cmd.member} asked to switch without its window open`);
          m.r1.switchCycle(sched.nowMs, cmd.tag);
          pumpR1(m);
          coordinatorEvent({ kind: 'switched', member: cmd.member, tag: cmd.tag });
        } else {
          coordinatorEvent({ kind: 'switch-failed', member: cmd.member, tag: cmd.tag, reason: 'not ready' });
        }
        break;
      case 'close-window': {
        m.windowOpen = false;
        const waiters = m.windowWaiters.splice(0);
        for (const w of waiters) w();
        coordinatorEvent({ kind: 'window-closed', member: cmd.member });
        break;
      }
      case 'store-table':
        coordinatorEvent({ kind: 'table-stored', member: cmd.member, version: cmd.table.version });
        break;
      case 'evict':
        throw new SimFailure(`member ${cmd.member} evicted: ${cmd.reason}`);
    }
  };
  const coordinatorTick = (): void => {
    if (!timersOn || !coordinatorUp || !coordinator) return;
    runCommands(coordinator.tick(sched.nowMs));
    at(5, coordinatorTick);
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
    const token = m.r1.writeBegun();
    at(work.int(0, config.maxWriteMs), () => {
      if (m.r1Dead) return; // died before the write completed: it never happened
      m.r1Vol.set(data, offset);
      m.r1.write(token, offset, length, zero ? null : data);
      m.r1.writeDone(token);
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
    at(5, faultTick);
  };

  const done = (): boolean => failure !== undefined;
  for (const m of members) at(0, () => r1Tick(m));
  if (coordinator) at(0, coordinatorTick);
  at(0, faultTick);
  at(0, () => issue(0));

  let recoveredWrites: number | null = null;
  const maxEvents = 2_000_000;
  if (config.disaster) {
    // The R1 side dies part-way through the workload, member by member within a short window.
    const dieAt = faults.int(20, 40 * config.writes);
    await sched.run(() => done() || sched.nowMs >= dieAt || writesDone, maxEvents);
    for (const m of members) {
      at(faults.int(0, 30), () => { m.r1Dead = true; });
    }
    await sched.run(() => done() || members.every((m) => m.r1Dead), maxEvents);
    timersOn = false;
    coordinatorUp = false;
    // Drain: messages in flight land or not; R2s persist and apply what they can, crash or not.
    await sched.run(done, maxEvents);
    r2CrashesOn = false;
    for (const m of members) {
      if (!m.r2Up) fail(`R2 of member ${m.index} never restarted`);
    }
    if (!done()) {
      const inputs = members.map((m) => {
        const s = m.r2.recoveryState();
        return { member: `m${m.index}`, committedTag: s.committedTag, received: s.received ? { tag: s.received.tag, complete: s.received.complete } : null };
      });
      const decision = decideGroupRecovery(inputs);
      if (!decision.consistent) fail(`group recovery: ${decision.problems.join('; ')}`);
      for (const [i, d] of decision.members.entries()) {
        const m = members[i]!;
        m.r2.resolveAfterDisaster(d.action);
        runR2Actions(m);
      }
      await sched.run(done, maxEvents);
      if (!done()) recoveredWrites = checkPrefix(members, issued, fail);
    }
  } else {
    await sched.run(() => done() || writesDone, maxEvents);
    if (!done() && !writesDone) fail('workload did not finish');
    // Liveness: heal everything; every R2 must converge to its R1.
    lossOn = false;
    r2CrashesOn = false;
    for (const m of members) m.partitionedUntil = 0;
    const healedAt = sched.nowMs;
    // (A complete, empty cycle may always be waiting for its commit: R2 is never idle while
    // switches go on, so "converged" is: nothing left to ship or apply, and equal volumes.)
    const converged = (): boolean => members.every((m) => {
      const s = m.r1.stats();
      return m.r2Up && m.r2.stats().applyingCycle === null && s.capture.records === 0 && (s.transmit?.records ?? 0) === 0 &&
        (s.committing?.records ?? 0) === 0 && Buffer.compare(m.r1Vol, m.r2Vol) === 0;
    });
    await sched.run(() => done() || converged() || sched.nowMs > healedAt + 60 * config.cycleMs + 2000, maxEvents);
    if (!done() && !converged()) {
      const s = members.map((m) => `m${m.index}: r1 ${JSON.stringify(m.r1.stats().capture)} transmit ${JSON.stringify(m.r1.stats().transmit)} r2 ${JSON.stringify(m.r2.stats())}`);
      fail(`R2 did not converge to R1 within the bound after healing: ${s.join(' | ')}`);
    }
    timersOn = false;
  }
  return {
    seed, ok: failure === undefined, ...(failure !== undefined ? { failure } : {}), config, writesAcked: acked, recoveredWrites,
    switches: coordinator?.switchCount ?? members[0]!.r1.captureCycle - 1, r2Crashes, spilled, simMs: sched.nowMs,
  };
}

/**
 * The oracle: some K such that every R2 volume equals what the first K issued writes make of a
 * zero volume. Tracks the number of differing bytes incrementally (cost: the bytes written).
 */
function checkPrefix(members: readonly Member[], issued: readonly IssuedWrite[], fail: (why: string) => void): number | null {
  const expected = members.map((m) => new Uint8Array(m.r2Vol.length));
  let diff = 0;
  for (const m of members) for (const b of m.r2Vol) if (b !== 0) diff++;
  const matches: number[] = [];
  if (diff === 0) matches.push(0);
  for (let k = 0; k < issued.length; k++) {
    const w = issued[k]!;
    const exp = expected[w.member]!;
    const actual = members[w.member]!.r2Vol;
    for (let j = 0; j < w.data.length; j++) {
      const at = w.offset + j;
      const before = exp[at] !== actual[at];
      exp[at] = w.data[j]!;
      const after = exp[at] !== actual[at];
      if (before !== after) diff += after ? 1 : -1;
    }
    if (diff === 0) matches.push(k + 1);
  }
  if (matches.length === 0) {
    fail(`no prefix of the ${issued.length} issued writes matches the R2 volumes after recovery`);
    return null;
  }
  return matches[matches.length - 1]!;
}
