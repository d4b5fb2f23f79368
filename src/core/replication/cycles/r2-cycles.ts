// The R2 half of ordered asynchronous replication (SPEC §5), pure: no I/O, clock or randomness.
//
// R2 *receives* cycle N−1 while it *applies* cycle N−2. Three slots:
//   receiving — records of the next cycle, in memory; duplicates and retransmissions are
//               idempotent (per record, the highest version wins);
//   complete  — a cycle R1 sealed (count and version sum match), persisted whole before R2
//               acknowledges the seal; it waits for its commit;
//   applying  — a committed cycle (commit persisted) being written to the volume.
// A commit moves complete → applying only when the previous apply finished; only then is the
// commit acknowledged, and only then may R1 send the next cycle. So R2's volume always equals R1
// at a cycle boundary, except while a cycle applies — and that cycle is persisted and committed,
// so after a crash it is applied again from the start (idempotent: whole byte ranges, in order).
//
// The machine is driven by handle(message) and the completions of the work it asks for; poll()
// drains the actions: messages to send and what the caller must persist or apply.
import { assert, assertInteger } from '../../lib/assert.js';
import { ErrorCode, TidemarkError, invalidState } from '../../errors.js';
import { assertRanges } from './record-ranges.js';
import type { CycleRecord, R1Message, R2Message } from './cycle-messages.js';

export interface R2CyclesConfig {
  readonly volumeBytes: number;
  /** Default 4096. */
  readonly recordBytes?: number;
}

export interface R2Start {
  /** R2's image equals R1 at the boundary after this cycle (R1's first capture cycle − 1). */
  readonly appliedCycle: number;
  readonly appliedTag: number | null;
}

/** A cycle as the caller persists it. Only complete cycles are ever asked to be persisted. */
export interface PersistedCycle {
  readonly cycle: number;
  readonly tag: number;
  readonly complete: boolean;
  readonly committed: boolean;
  readonly records: readonly CycleRecord[];
}

/** Everything R2 needs to restart: what it persisted through its actions. */
export interface R2Persisted {
  readonly appliedCycle: number;
  readonly appliedTag: number | null;
  readonly cycles: readonly PersistedCycle[];
}

export type R2Action =
  | { readonly kind: 'send'; readonly message: R2Message }
  /** Persist the cycle whole (complete, not committed), then call cyclePersisted(cycle). */
  | { readonly kind: 'persist-cycle'; readonly cycle: number; readonly tag: number; readonly records: readonly CycleRecord[] }
  /** Mark the persisted cycle committed, then call commitPersisted(cycle). */
  | { readonly kind: 'persist-commit'; readonly cycle: number }
  /**
   * Write the records' ranges to the volume (any order: a cycle holds one entry per record), make
   * them durable, persist appliedCycle = cycle (and drop the cycle's persisted data) atomically,
   * then call applyDone(cycle).
   */
  | { readonly kind: 'apply'; readonly cycle: number; readonly tag: number; readonly records: readonly CycleRecord[] }
  /** Delete the cycle's persisted data (an incomplete one found at recovery, or discarded by a group decision). */
  | { readonly kind: 'discard'; readonly cycle: number };

/** What a member reports to the group recovery decision (core/group/group-recovery.ts). */
export interface R2RecoveryState {
  readonly appliedCycle: number;
  readonly appliedTag: number | null;
  /** The newest cycle R2 reaches without R1: committed cycles are always finished. */
  readonly committedCycle: number;
  readonly committedTag: number | null;
  /** The received cycle beyond that, if any: complete (sealed and persisted) or not. */
  readonly received: { readonly cycle: number; readonly tag: number | null; readonly complete: boolean } | null;
}

interface Held {
  readonly cycle: number;
  readonly tag: number;
  readonly records: readonly CycleRecord[];
  persisted: boolean;
  committed: boolean;
  commitPersisted: boolean;
}

export class R2Cycles {
  private readonly recordBytes: number;
  private applied: number;
  private appliedTagValue: number | null;
  private applying: Held | null = null;
  private complete: Held | null = null;
  private receiving: Map<number, CycleRecord> | null = null;
  private outbox: R2Action[] = [];
  private failure: TidemarkError | null = null;
  private resolved = false;

  constructor(private readonly config: R2CyclesConfig, start: R2Start) {
    this.recordBytes = config.recordBytes ?? 4096;
    assertInteger(start.appliedCycle, 'appliedCycle');
    assert(start.appliedCycle >= 0, 'appliedCycle is not negative');
    this.applied = start.appliedCycle;
    this.appliedTagValue = start.appliedTag;
  }

  /** Restart from what the caller persisted: a committed cycle is applied again; incomplete ones are discarded. */
  static recover(config: R2CyclesConfig, persisted: R2Persisted): R2Cycles {
    const r2 = new R2Cycles(config, { appliedCycle: persisted.appliedCycle, appliedTag: persisted.appliedTag });
    const corrupt = (why: string): TidemarkError =>
      new TidemarkError(ErrorCode.MetadataCorrupt, `persisted ordered-replication state is inconsistent: ${why}`,
        { appliedCycle: persisted.appliedCycle, cycles: persisted.cycles.map((c) => c.cycle) });
    const cycles = [...persisted.cycles].sort((a, b) => a.cycle - b.cycle);
    let expected = persisted.appliedCycle + 1;
    for (const c of cycles) {
      if (c.cycle <= persisted.appliedCycle || !c.complete) {
        r2.outbox.push({ kind: 'discard', cycle: c.cycle }); // applied already, or never sealed
        continue;
      }
      if (c.cycle !== expected) throw corrupt(`cycle ${c.cycle} where ${expected} was expected`);
      const held: Held = { cycle: c.cycle, tag: c.tag, records: c.records, persisted: true, committed: c.committed, commitPersisted: c.committed };
      if (r2.applying === null && r2.complete === null && c.committed) {
        r2.applying = held;
        r2.outbox.push({ kind: 'apply', cycle: held.cycle, tag: held.tag, records: held.records });
      } else if (r2.complete === null) {
        r2.complete = held;
      } else {
        throw corrupt(`more than two cycles past the applied one`);
      }
      expected++;
    }
    r2.checkInvariants();
    return r2;
  }

  /** Actions to perform, in order. */
  poll(): R2Action[] {
    const out = this.outbox;
    this.outbox = [];
    return out;
  }

  /** One message from R1. A protocol violation throws and is sticky. */
  handle(message: R1Message): void {
    if (this.failure) throw this.failure;
    if (this.resolved) throw this.protocol('the pair was recovered after a disaster; R1 must re-establish it', message);
    switch (message.kind) {
      case 'records': return this.onRecords(message);
      case 'seal': return this.onSeal(message);
      case 'commit': return this.onCommit(message);
    }
  }

  private top(): number {
    return this.complete?.cycle ?? this.applying?.cycle ?? this.applied;
  }

  private send(message: R2Message): void {
    this.outbox.push({ kind: 'send', message });
  }

  private protocol(why: string, message: R1Message): TidemarkError {
    const error = new TidemarkError(ErrorCode.Protocol, `ordered replication: ${why}`, {
      kind: message.kind, cycle: message.cycle, appliedCycle: this.applied, top: this.top(),
    });
    this.failure = error;
    return error;
  }

  private onRecords(message: Extract<R1Message, { kind: 'records' }>): void {
    const acks = message.records.map((r) => ({ record: r.record, version: r.version }));
    const top = this.top();
    if (message.cycle <= top) {
      this.send({ kind: 'records-ack', cycle: message.cycle, records: acks }); // a late duplicate
      return;
    }
    if (message.cycle !== top + 1 || this.complete !== null) {
      throw this.protocol(`records for cycle ${message.cycle} while receiving ${this.complete ? 'nothing (a sealed cycle awaits its commit)' : top + 1}`, message);
    }
    const slot = this.receiving ??= new Map();
    for (const r of message.records) {
      if (!Number.isSafeInteger(r.record) || r.record < 0 || (r.record + 1) * this.recordBytes > this.config.volumeBytes ||
          !Number.isSafeInteger(r.version) || r.version < 1 || r.data.length !== this.recordBytes || r.ranges.length === 0) {
        throw this.protocol(`malformed record ${r.record}`, message);
      }
      try {
        assertRanges(r.ranges, this.recordBytes);
      } catch {
        throw this.protocol(`malformed ranges in record ${r.record}`, message);
      }
      const held = slot.get(r.record);
      if (!held || held.version < r.version) slot.set(r.record, r);
    }
    this.send({ kind: 'records-ack', cycle: message.cycle, records: acks });
  }

  private onSeal(message: Extract<R1Message, { kind: 'seal' }>): void {
    const c = this.complete;
    if (c && c.cycle === message.cycle) {
      if (c.tag !== message.tag) throw this.protocol(`seal tag ${message.tag} differs from ${c.tag}`, message);
      if (c.persisted) this.send({ kind: 'seal-ack', cycle: message.cycle });
      return; // acknowledged once persisted
    }
    if (message.cycle <= (this.applying?.cycle ?? this.applied)) {
      this.send({ kind: 'seal-ack', cycle: message.cycle });
      return;
    }
    if (c !== null || message.cycle !== this.top() + 1) throw this.protocol(`seal of cycle ${message.cycle} out of order`, message);
    const slot = this.receiving ?? new Map<number, CycleRecord>();
    let versionSum = 0;
    for (const r of slot.values()) versionSum += r.version;
    if (slot.size > message.recordCount || versionSum > message.versionSum) {
      throw this.protocol(`holds more than R1 sealed (${slot.size} records, version sum ${versionSum})`, message);
    }
    if (slot.size < message.recordCount || versionSum < message.versionSum) {
      this.send({ kind: 'seal-nack', cycle: message.cycle, recordCount: slot.size });
      return;
    }
    const records = [...slot.values()].sort((a, b) => a.record - b.record);
    this.complete = { cycle: message.cycle, tag: message.tag, records, persisted: false, committed: false, commitPersisted: false };
    this.receiving = null;
    this.outbox.push({ kind: 'persist-cycle', cycle: message.cycle, tag: message.tag, records });
    this.checkInvariants();
  }

  private onCommit(message: Extract<R1Message, { kind: 'commit' }>): void {
    const c = this.complete;
    if (c && c.cycle === message.cycle) {
      if (c.tag !== message.tag) throw this.protocol(`commit tag ${message.tag} differs from ${c.tag}`, message);
      if (!c.persisted) throw this.protocol(`commit of cycle ${message.cycle} before its seal was acknowledged`, message);
      if (!c.committed) {
        c.committed = true;
        this.outbox.push({ kind: 'persist-commit', cycle: c.cycle });
      }
      return; // acknowledged when it moves to the apply slot
    }
    if (message.cycle <= (this.applying?.cycle ?? this.applied)) {
      this.send({ kind: 'commit-ack', cycle: message.cycle });
      return;
    }
    throw this.protocol(`commit of cycle ${message.cycle}, which is not sealed here`, message);
  }

  cyclePersisted(cycle: number): void {
    const c = this.complete;
    if (!c || c.cycle !== cycle || c.persisted) throw invalidState(`cycle ${cycle} was not waiting to be persisted`);
    c.persisted = true;
    if (!this.resolved) this.send({ kind: 'seal-ack', cycle });
    this.advance();
  }

  commitPersisted(cycle: number): void {
    const c = this.complete;
    if (!c || c.cycle !== cycle || !c.committed || c.commitPersisted) throw invalidState(`commit of cycle ${cycle} was not waiting to be persisted`);
    c.commitPersisted = true;
    this.advance();
  }

  applyDone(cycle: number): void {
    const a = this.applying;
    if (!a || a.cycle !== cycle) throw invalidState(`cycle ${cycle} is not being applied`);
    this.applied = a.cycle;
    this.appliedTagValue = a.tag;
    this.applying = null;
    this.advance();
  }

  private advance(): void {
    const c = this.complete;
    if (this.applying === null && c && c.commitPersisted) {
      this.applying = c;
      this.complete = null;
      this.outbox.push({ kind: 'apply', cycle: c.cycle, tag: c.tag, records: c.records });
      if (!this.resolved) this.send({ kind: 'commit-ack', cycle: c.cycle });
    }
    this.checkInvariants();
  }

  // ---- disaster recovery ----------------------------------------------------------------------

  recoveryState(): R2RecoveryState {
    const c = this.complete;
    const committed = c && c.committed ? c : this.applying;
    let received: R2RecoveryState['received'] = null;
    if (c && !c.committed) received = { cycle: c.cycle, tag: c.tag, complete: c.persisted };
    else if (!c && this.receiving && this.receiving.size > 0) received = { cycle: this.top() + 1, tag: null, complete: false };
    return {
      appliedCycle: this.applied,
      appliedTag: this.appliedTagValue,
      committedCycle: committed?.cycle ?? this.applied,
      committedTag: committed ? committed.tag : this.appliedTagValue,
      received,
    };
  }

  /**
   * R1 is gone: finish with what R2 holds. The incomplete receive slot is dropped; a complete,
   * uncommitted cycle is applied or discarded as the group decision says ('apply' for a lone pair
   * is always consistent). Committed cycles finish applying. R2 accepts no more R1 messages.
   */
  resolveAfterDisaster(decision: 'apply' | 'discard' | 'none'): void {
    this.resolved = true;
    this.receiving = null;
    const c = this.complete;
    if (c && !c.committed) {
      if (decision === 'apply') {
        if (!c.persisted) throw invalidState(`cycle ${c.cycle} is not complete and cannot be applied`);
        c.committed = true;
        this.outbox.push({ kind: 'persist-commit', cycle: c.cycle });
      } else {
        this.complete = null;
        this.outbox.push({ kind: 'discard', cycle: c.cycle });
      }
    } else if (decision === 'apply') {
      throw invalidState('no complete received cycle to apply');
    }
    this.checkInvariants();
  }

  // ---- reporting ------------------------------------------------------------------------------

  get appliedCycle(): number {
    return this.applied;
  }

  get appliedTag(): number | null {
    return this.appliedTagValue;
  }

  /** The cycle boundary R2 reaches on its own (committed cycles finish applying after any crash). */
  get recoverablePoint(): { readonly cycle: number; readonly tag: number | null } {
    const s = this.recoveryState();
    return { cycle: s.committedCycle, tag: s.committedTag };
  }

  /** Nothing received, waiting or applying. */
  get idle(): boolean {
    return this.applying === null && this.complete === null && (this.receiving === null || this.receiving.size === 0);
  }

  get failed(): TidemarkError | null {
    return this.failure;
  }

  stats(): { appliedCycle: number; applyingCycle: number | null; completeCycle: number | null; receivingCycle: number | null; receivedRecords: number } {
    return {
      appliedCycle: this.applied,
      applyingCycle: this.applying?.cycle ?? null,
      completeCycle: this.complete?.cycle ?? null,
      receivingCycle: this.complete ? null : this.top() + 1,
      receivedRecords: this.receiving?.size ?? 0,
    };
  }

  private checkInvariants(): void {
    const a = this.applying;
    const c = this.complete;
    if (a) assert(a.cycle === this.applied + 1 && a.committed && a.commitPersisted, 'applying is the next committed cycle');
    if (c) assert(c.cycle === (a?.cycle ?? this.applied) + 1, 'complete follows applying');
    if (c && this.receiving) assert(this.receiving.size === 0, 'no receive slot while a sealed cycle waits');
  }
}
