// The R1 half of ordered asynchronous replication (SPEC §5), pure: no I/O, clock or randomness.
//
// R1 *captures* cycle C while it *transmits* cycle T = C−1 (and, until R2 acknowledges the commit
// of T−1, keeps T−1's data as the *committing* cycle). A host write takes a token from
// writeBegun() when it is admitted; its bytes are captured into the token's cycle when it
// completes (write()), so a write begun before a switch lands in the cycle it began in even if it
// completes after the switch. Each cycle holds per 4 KiB record exactly the byte ranges its
// writes wrote (merged, later bytes over earlier), in a buffer of its own: a write in cycle C to a
// record the transmitting cycle also holds never alters what T sends.
//
// Protocol per transmit cycle T (see cycle-messages.ts):
//   commit(T−1) sent at the switch → commit-ack → records of T sent in bounded batches → each
//   acknowledged (per record version) → when every write begun in T has completed and every record
//   is acknowledged, seal(T, count, versionSum) → seal-ack (R2 persisted T whole) → T is done.
// A switch C → C+1 is allowed when T is done (or there is no T), the commit of T−1 was
// acknowledged, and (standalone mode) cycleMs passed since the last switch. It makes T the
// committing cycle (commit(T) goes out next), C the transmit cycle and C+1 the capture cycle.
// T's data is kept until commit(T) is acknowledged, because until then R2 may lose it (a restart
// before persisting) and ask for everything again (seal-nack).
//
// Memory: every record buffer counts recordBytes. overBudget says the caller should spill
// (takeSpill → write the slots; records later needed for sending come back through spillReads /
// spillRestored). overLimit says capture outgrew the configured limit: the caller falls back to
// bitmaps (fallBackToBitmaps), which returns every track the cycles held.
import { assert, assertInteger } from '../../lib/assert.js';
import { invalidArgument, invalidState } from '../../errors.js';
import { addRange, assertRanges, coversRange, overlay, rangesBytes, unionRanges, type ByteRange } from './record-ranges.js';
import type { CycleRecord, R1Message, R2Message } from './cycle-messages.js';

export interface R1CyclesConfig {
  readonly volumeBytes: number;
  readonly trackBytes: number;
  /** Default 4096. */
  readonly recordBytes?: number;
  /** Minimum time between switches in standalone mode (the app enforces its 100 ms floor). */
  readonly cycleMs: number;
  /** 'group': a coordinator decides when to switch and supplies the tag; cycleMs is its business. */
  readonly mode: 'standalone' | 'group';
  /** Record buffers in memory above this: overBudget (spill). */
  readonly memoryBudgetBytes: number;
  /** Records held in memory and spilled above this: overLimit (fall back to bitmaps). */
  readonly captureLimitBytes: number;
  /** Records per 'records' message. */
  readonly maxBatchRecords: number;
  /** Records sent and not yet acknowledged, plus spilled records being read back. */
  readonly maxInflightRecords: number;
}

export interface R1Start {
  /** The first capture cycle; R2 starts with appliedCycle = cycle − 1. */
  readonly cycle: number;
  /** Group mode: the coordinator's tag for the first cycle. Standalone: the tag is the cycle number. */
  readonly tag?: number;
  readonly nowMs: number;
}

export interface WriteToken {
  readonly id: number;
  readonly cycle: number;
}

/** The token as R1Cycles keeps it: whether it is still open lives on it (no lookup table per write). */
interface OpenToken extends WriteToken {
  readonly owner: R1Cycles;
  open: boolean;
}

export type SwitchBlocker =
  | 'fallen-back' | 'cycle-time' | 'writes-open' | 'commit-unacked' | 'transmit-unacked' | 'seal-unacked';

export interface SwitchResult {
  /** The cycle whose commit now goes out (null at the first switch). */
  readonly committing: { readonly cycle: number; readonly tag: number } | null;
  readonly transmitCycle: number;
  readonly captureCycle: number;
  readonly captureTag: number;
}

/** A record's in-memory bytes to write into the caller's spill slot (cycle, record): only `ranges`. */
export interface SpillWrite {
  readonly cycle: number;
  readonly record: number;
  readonly epoch: number;
  readonly ranges: readonly ByteRange[];
  readonly data: Uint8Array;
}

/** Read the spill slot (cycle, record) and hand it to spillRestored with this epoch. */
export interface SpillRead {
  readonly cycle: number;
  readonly record: number;
  readonly epoch: number;
}

export interface CycleStats {
  readonly cycle: number;
  readonly tag: number;
  readonly records: number;
  /** Bytes the cycle's writes wrote (what will be shipped). */
  readonly bytes: number;
  readonly openWrites: number;
}

export interface R1Stats {
  readonly capture: CycleStats;
  readonly transmit: (CycleStats & { readonly pending: number; readonly inflight: number; readonly acked: number; readonly sealed: boolean }) | null;
  readonly committing: CycleStats | null;
  readonly memoryBytes: number;
  readonly spilledRecords: number;
  readonly overBudget: boolean;
  readonly overLimit: boolean;
  readonly fallenBack: boolean;
  readonly lastSwitchMs: number;
}

type EntryState = 'pending' | 'restoring' | 'inflight' | 'acked';

interface Entry {
  readonly record: number;
  version: number;
  mem: Uint8Array | null;
  memRanges: ByteRange[];
  diskRanges: ByteRange[];
  spillEpoch: number;
  bytes: number;
  state: EntryState;
  sentAtMs: number;
}

class Cycle {
  readonly entries = new Map<number, Entry>();
  openWrites = 0;
  bytes = 0;
  // Transmit bookkeeping (used once the cycle transmits).
  readonly pending = new Set<number>();
  readonly restoring = new Set<number>();
  /** Pending records just read back from spill: sent before the other pending ones (never in `pending`). */
  readonly restored = new Set<number>();
  readonly inflight = new Set<number>();
  acked = 0;
  sealSentAtMs: number | null = null;
  sealAcked = false;
  commitSentAtMs: number | null = null;
  hadSpill = false;

  constructor(readonly cycle: number, public tag: number) {}

  stats(): CycleStats {
    return { cycle: this.cycle, tag: this.tag, records: this.entries.size, bytes: this.bytes, openWrites: this.openWrites };
  }

  versionSum(): number {
    let sum = 0;
    for (const e of this.entries.values()) sum += e.version;
    return sum;
  }
}

export class R1Cycles {
  private readonly recordBytes: number;
  private capture: Cycle;
  private transmit: Cycle | null = null;
  private committing: Cycle | null = null;
  private nextToken = 1;
  private lastSwitchMs: number;
  private memRecords = 0;
  private diskRecords = 0;
  private fallenBack = false;
  private readonly releasedSpill: number[] = [];
  /** Record buffers no longer used, for reuse (see releaseBuffer). */
  private readonly spare: Uint8Array[] = [];
  /** Who decides switches now: starts as config.mode; a pair joins or leaves a group mid-stream. */
  private mode: 'standalone' | 'group';

  constructor(private readonly config: R1CyclesConfig, start: R1Start) {
    this.mode = config.mode;
    this.recordBytes = config.recordBytes ?? 4096;
    assertInteger(config.volumeBytes, 'volumeBytes');
    assert(config.volumeBytes > 0 && config.volumeBytes % this.recordBytes === 0, 'volume is whole records');
    assert(config.trackBytes % this.recordBytes === 0, 'tracks are whole records');
    assert(config.cycleMs > 0 && config.maxBatchRecords > 0 && config.maxInflightRecords > 0, 'positive limits');
    assert(config.memoryBudgetBytes > 0 && config.captureLimitBytes > 0, 'positive memory limits');
    assertInteger(start.cycle, 'start cycle');
    assert(start.cycle >= 1, 'cycles start at 1 (R2 starts applied at cycle − 1)');
    const tag = this.tagFor(start.cycle, start.tag);
    this.capture = new Cycle(start.cycle, tag);
    this.lastSwitchMs = start.nowMs;
  }

  private tagFor(cycle: number, tag: number | undefined): number {
    if (this.mode === 'standalone') {
      // A pair that left a group keeps its tags growing past the group's.
      const own = this.capture === undefined ? cycle : Math.max(cycle, this.capture.tag + 1);
      if (tag !== undefined && tag !== own) throw invalidArgument('a standalone pair tags its cycles itself');
      return own;
    }
    if (tag === undefined) throw invalidArgument('a group member needs the coordinator tag for each cycle');
    assertInteger(tag, 'tag');
    return tag;
  }

  // ---- the write path -------------------------------------------------------------------------

  /** A host write was admitted (it holds its place in the volume's write order): it belongs to the capture cycle. */
  writeBegun(): WriteToken {
    if (this.fallenBack) throw invalidState('ordered replication fell back to bitmaps');
    const token: OpenToken = { id: this.nextToken++, cycle: this.capture.cycle, owner: this, open: true };
    this.capture.openWrites++;
    return token;
  }

  /**
   * A write's bytes reached the volume: capture them into the token's cycle. `data` null means
   * zeroes (write-zeroes, trim). Returns false when nothing was captured (fallen back: the caller
   * marks the write's tracks in its bitmap instead).
   */
  write(token: WriteToken, offset: number, length: number, data: Uint8Array | null): boolean {
    if (this.fallenBack) return false;
    // (Messages built only on failure: this runs for every host write.)
    if (!this.isOpen(token)) assert(false, `write token ${token.id} is not open`);
    if (!(Number.isSafeInteger(offset) && Number.isSafeInteger(length) && offset >= 0 && length >= 0 &&
      offset + length <= this.config.volumeBytes)) assert(false, `write ${offset}+${length} outside the volume`);
    assert(data === null || data.length === length, 'data length matches');
    if (length === 0) return true;
    const cycle = this.cycleByNumber(token.cycle);
    if (cycle === null || (cycle !== this.capture && cycle !== this.transmit)) assert(false, `write of cycle ${token.cycle} after its cycle closed`);
    assert(cycle.sealSentAtMs === null && !cycle.sealAcked, 'no write lands in a sealed cycle');
    const rb = this.recordBytes;
    const end = offset + length;
    for (let rec = Math.floor(offset / rb); rec * rb < end; rec++) {
      const recStart = rec * rb;
      const s = Math.max(offset, recStart) - recStart;
      const e = Math.min(end, recStart + rb) - recStart;
      let entry = cycle.entries.get(rec);
      if (!entry) {
        entry = { record: rec, version: 0, mem: null, memRanges: [], diskRanges: [], spillEpoch: 0, bytes: 0, state: 'pending', sentAtMs: 0 };
        cycle.entries.set(rec, entry);
        if (cycle === this.transmit) cycle.pending.add(rec);
      }
      if (!entry.mem) {
        entry.mem = this.recordBuffer(s === 0 && e === rb && data !== null);
        this.memRecords++;
      }
      if (data) entry.mem.set(s === 0 && e === rb && data.length === rb ? data : data.subarray(recStart + s - offset, recStart + e - offset), s);
      else entry.mem.fill(0, s, e);
      entry.version++;
      // A rewrite of bytes the record holds already (the common case) changes neither its ranges nor its size.
      if (!coversRange(entry.memRanges, s, e)) {
        entry.memRanges = addRange(entry.memRanges, s, e);
        const bytes = rangesBytes(entry.diskRanges.length === 0 ? entry.memRanges : unionRanges(entry.memRanges, entry.diskRanges));
        cycle.bytes += bytes - entry.bytes;
        entry.bytes = bytes;
      }
      if (cycle === this.transmit && entry.state !== 'pending' && entry.state !== 'restoring') this.toPending(cycle, entry);
    }
    return true;
  }

  /** The write finished (or failed: then it captured nothing, or the caller marks its tracks). */
  writeDone(token: WriteToken): void {
    if (!this.isOpen(token)) assert(false, `write token ${token.id} is not open`);
    (token as OpenToken).open = false;
    if (this.fallenBack) return;
    const cycle = this.cycleByNumber(token.cycle);
    assert(cycle !== null && cycle.openWrites > 0, 'open write count');
    cycle.openWrites--;
  }

  private isOpen(token: WriteToken): boolean {
    const t = token as Partial<OpenToken>;
    return t.owner === this && t.open === true;
  }

  // ---- switching ------------------------------------------------------------------------------

  /** Why a switch cannot happen now (empty: it can). Group members ignore 'cycle-time'. */
  switchBlockers(nowMs: number): SwitchBlocker[] {
    const out: SwitchBlocker[] = [];
    if (this.fallenBack) return ['fallen-back'];
    if (this.mode === 'standalone' && nowMs - this.lastSwitchMs < this.config.cycleMs) out.push('cycle-time');
    if (this.committing) out.push('commit-unacked');
    const t = this.transmit;
    if (t) {
      if (t.openWrites > 0) out.push('writes-open');
      if (t.acked < t.entries.size) out.push('transmit-unacked');
      if (!t.sealAcked) out.push('seal-unacked');
    }
    return out;
  }

  canSwitch(nowMs: number): boolean {
    return this.switchBlockers(nowMs).length === 0;
  }

  /** Group mode: ready for the coordinator's switch command (everything but the timer). */
  isReady(): boolean {
    return this.switchBlockers(Number.MAX_SAFE_INTEGER).filter((b) => b !== 'cycle-time').length === 0;
  }

  switchCycle(nowMs: number, tag?: number): SwitchResult {
    const blockers = this.switchBlockers(nowMs);
    if (blockers.length > 0) throw invalidState(`cannot switch cycles: ${blockers.join(', ')}`, { blockers });
    const nextCycle = this.capture.cycle + 1;
    assertInteger(nextCycle, 'cycle number');
    const nextTag = this.tagFor(nextCycle, tag);
    if (nextTag <= this.capture.tag) throw invalidArgument(`cycle tags must grow: ${nextTag} after ${this.capture.tag}`);
    const finished = this.transmit;
    if (finished) {
      assert(finished.openWrites === 0 && finished.sealAcked, 'a committed cycle is sealed');
      this.committing = finished;
      // R2 persisted it whole (seal-ack) and only its commit goes out now: its bytes are never sent
      // again. Its records stay (their tracks are owed if the cycles fall back before commit-ack), and
      // so do its spill slots (counted until the commit-ack releases the file).
      for (const entry of finished.entries.values()) {
        if (entry.mem) {
          this.memRecords--;
          this.releaseBuffer(entry.mem);
        }
        entry.mem = null;
        entry.memRanges = [];
      }
    }
    const t = this.capture;
    for (const rec of [...t.entries.keys()].sort((a, b) => a - b)) t.pending.add(rec);
    this.transmit = t;
    this.capture = new Cycle(nextCycle, nextTag);
    this.lastSwitchMs = nowMs;
    return {
      committing: finished ? { cycle: finished.cycle, tag: finished.tag } : null,
      transmitCycle: t.cycle, captureCycle: nextCycle, captureTag: nextTag,
    };
  }

  // ---- transmission ---------------------------------------------------------------------------

  /**
   * What to send now: the commit of the committing cycle (once; again after retransmit), then —
   * only once that commit is acknowledged — the transmit cycle's records in batches bounded by
   * maxBatchRecords and maxInflightRecords, and its seal when everything is acknowledged.
   * spillReads: spilled records the caller must read back (spillRestored) before they can be sent.
   */
  nextToSend(nowMs: number): { messages: R1Message[]; spillReads: SpillRead[] } {
    const messages: R1Message[] = [];
    const spillReads: SpillRead[] = [];
    if (this.fallenBack) return { messages, spillReads };
    const c = this.committing;
    if (c) {
      if (c.commitSentAtMs === null) {
        c.commitSentAtMs = nowMs;
        messages.push({ kind: 'commit', cycle: c.cycle, tag: c.tag });
      }
      return { messages, spillReads };
    }
    const t = this.transmit;
    if (!t) return { messages, spillReads };
    let batch: CycleRecord[] = [];
    // Records being read back count against the window too (they come into memory): a spilled cycle
    // is restored a window at a time, and what was restored goes out first.
    const take = (rec: number): boolean => {
      if (t.inflight.size + t.restoring.size >= this.config.maxInflightRecords) return false;
      const entry = t.entries.get(rec)!;
      t.pending.delete(rec);
      t.restored.delete(rec);
      if (entry.diskRanges.length > 0) {
        entry.state = 'restoring';
        t.restoring.add(rec);
        spillReads.push({ cycle: t.cycle, record: rec, epoch: entry.spillEpoch });
        return true;
      }
      assert(entry.mem !== null, 'a record to send has its bytes in memory');
      entry.state = 'inflight';
      entry.sentAtMs = nowMs;
      t.inflight.add(rec);
      batch.push({ record: rec, version: entry.version, ranges: entry.memRanges.slice(), data: entry.mem.slice() });
      if (batch.length >= this.config.maxBatchRecords) {
        messages.push({ kind: 'records', cycle: t.cycle, records: batch });
        batch = [];
      }
      return true;
    };
    for (const rec of t.restored) if (!take(rec)) break;
    for (const rec of t.pending) if (!take(rec)) break;
    if (batch.length > 0) messages.push({ kind: 'records', cycle: t.cycle, records: batch });
    if (t.openWrites === 0 && t.acked === t.entries.size && !t.sealAcked && t.sealSentAtMs === null) {
      t.sealSentAtMs = nowMs;
      messages.push({ kind: 'seal', cycle: t.cycle, tag: t.tag, recordCount: t.entries.size, versionSum: t.versionSum() });
    }
    return { messages, spillReads };
  }

  /** Messages sent at or before nowMs − olderThanMs and not yet acknowledged go out again (0: all of them, e.g. after a reconnect). */
  retransmit(nowMs: number, olderThanMs: number): void {
    const limit = nowMs - olderThanMs;
    const c = this.committing;
    if (c && c.commitSentAtMs !== null && c.commitSentAtMs <= limit) c.commitSentAtMs = null;
    const t = this.transmit;
    if (!t) return;
    for (const rec of [...t.inflight]) {
      const entry = t.entries.get(rec)!;
      if (entry.sentAtMs <= limit) this.toPending(t, entry);
    }
    if (!t.sealAcked && t.sealSentAtMs !== null && t.sealSentAtMs <= limit) t.sealSentAtMs = null;
  }

  /** One message from R2. Stale and duplicate answers are ignored. */
  receive(message: R2Message): void {
    if (this.fallenBack) return;
    switch (message.kind) {
      case 'records-ack': {
        const t = this.transmit;
        if (!t || t.cycle !== message.cycle) return;
        for (const { record, version } of message.records) {
          const entry = t.entries.get(record);
          if (!entry || entry.version !== version || entry.state === 'acked') continue;
          t.pending.delete(record);
          t.inflight.delete(record);
          t.restoring.delete(record); // acknowledged while being read back: the read result is ignored
          t.restored.delete(record);
          entry.state = 'acked';
          t.acked++;
        }
        return;
      }
      case 'seal-ack': {
        const t = this.transmit;
        if (t && t.cycle === message.cycle && t.sealSentAtMs !== null) t.sealAcked = true;
        return;
      }
      case 'seal-nack': {
        const t = this.transmit;
        if (!t || t.cycle !== message.cycle || t.sealAcked) return;
        // R2 lost its receive slot (a restart): everything of the cycle goes again.
        for (const entry of t.entries.values()) if (entry.state === 'acked' || entry.state === 'inflight') this.toPending(t, entry);
        t.sealSentAtMs = null;
        return;
      }
      case 'commit-ack': {
        const c = this.committing;
        if (!c || c.cycle !== message.cycle) return;
        this.dropCycle(c);
        this.committing = null;
        return;
      }
    }
  }

  private toPending(t: Cycle, entry: Entry): void {
    if (entry.state === 'acked') t.acked--;
    t.inflight.delete(entry.record);
    t.restoring.delete(entry.record);
    t.restored.delete(entry.record);
    entry.state = 'pending';
    t.pending.add(entry.record);
  }

  private dropCycle(c: Cycle): void {
    for (const entry of c.entries.values()) {
      if (entry.mem) this.memRecords--;
      if (entry.diskRanges.length > 0) this.diskRecords--;
    }
    if (c.hadSpill) this.releasedSpill.push(c.cycle);
    c.entries.clear();
  }

  // ---- memory and spill -----------------------------------------------------------------------

  /** (Asked after every captured write: no array built.) */
  private heldRecords(): number {
    return this.capture.entries.size + (this.transmit?.entries.size ?? 0) + (this.committing?.entries.size ?? 0);
  }

  get memoryBytes(): number {
    return this.memRecords * this.recordBytes;
  }

  /** Records with bytes in a spill slot (as stats().spilledRecords, without building the stats). */
  get spilledRecords(): number {
    return this.diskRecords;
  }

  get overBudget(): boolean {
    return this.memoryBytes > this.config.memoryBudgetBytes;
  }

  get overLimit(): boolean {
    return this.heldRecords() * this.recordBytes > this.config.captureLimitBytes;
  }

  /**
   * Moves up to maxBytes of record buffers out of memory: the caller writes each SpillWrite's
   * ranges into its slot (cycle, record), keeping writes and reads of a slot in order (a FIFO per
   * spill file does). Records that no host write touches again go first, each written once: the
   * transmit cycle's acknowledged records (read back only after a seal-nack), then its pending ones,
   * the last to be sent first (read back once, when their turn comes). Capture-cycle records go
   * last: hosts rewrite them, and every rewrite of a spilled record brings it back into memory to
   * be spilled again. Records in flight or just read back stay; the committing cycle holds no bytes.
   */
  takeSpill(maxBytes: number): SpillWrite[] {
    const out: SpillWrite[] = [];
    let freed = 0;
    const spill = (c: Cycle, entry: Entry): boolean => {
      if (freed >= maxBytes) return false;
      // Records just read back are about to be sent: spilling them again would only thrash.
      if (!entry.mem || entry.state === 'inflight' || entry.state === 'restoring' || c.restored.has(entry.record)) return true;
      entry.spillEpoch++;
      out.push({ cycle: c.cycle, record: entry.record, epoch: entry.spillEpoch, ranges: entry.memRanges, data: entry.mem });
      if (entry.diskRanges.length === 0) this.diskRecords++;
      entry.diskRanges = unionRanges(entry.diskRanges, entry.memRanges);
      entry.mem = null;
      entry.memRanges = [];
      this.memRecords--;
      c.hadSpill = true;
      freed += this.recordBytes;
      return true;
    };
    const t = this.transmit;
    if (t) {
      for (const entry of t.entries.values()) if (entry.state === 'acked' && !spill(t, entry)) return out;
      const pending = [...t.pending];
      for (let i = pending.length - 1; i >= 0; i--) if (!spill(t, t.entries.get(pending[i]!)!)) return out;
    }
    for (const entry of this.capture.entries.values()) if (!spill(this.capture, entry)) return out;
    return out;
  }

  /** The bytes of spill slot (cycle, record) as read for a SpillRead; a stale read (re-spilled since) is ignored and asked again. */
  spillRestored(read: SpillRead, slot: Uint8Array): void {
    assert(slot.length === this.recordBytes, 'a spill slot is one record');
    const t = this.transmit;
    if (this.fallenBack || !t || t.cycle !== read.cycle) return;
    const entry = t.entries.get(read.record);
    if (!entry || entry.state !== 'restoring') return;
    if (entry.spillEpoch === read.epoch) {
      const merged = this.recordBuffer(false);
      overlay(merged, slot, entry.diskRanges);
      if (entry.mem) {
        overlay(merged, entry.mem, entry.memRanges);
        this.releaseBuffer(entry.mem);
      } else {
        this.memRecords++;
      }
      entry.memRanges = unionRanges(entry.diskRanges, entry.memRanges);
      assertRanges(entry.memRanges, this.recordBytes);
      entry.mem = merged;
      entry.diskRanges = [];
      this.diskRecords--;
    }
    t.restoring.delete(entry.record);
    entry.state = 'pending';
    t.restored.add(entry.record);
  }

  /**
   * Buffers of SpillWrites the caller has written (and no longer refers to): reused for later
   * records (within the memory budget, see releaseBuffer), so a cycle that keeps spilling does not
   * keep allocating.
   */
  recycle(buffers: readonly Uint8Array[]): void {
    if (this.fallenBack) return;
    for (const b of buffers) if (b.length === this.recordBytes && b.byteOffset === 0) this.releaseBuffer(b);
  }

  /** Cycles whose spill slots the caller may delete now (their data is no longer needed). Drains the list. */
  takeReleasedSpill(): number[] {
    return this.releasedSpill.splice(0);
  }

  // ---- group membership ---------------------------------------------------------------------

  /**
   * The pair joins a consistency group (no group window is open): from now on the coordinator
   * switches cycles and tags them. The capture cycle takes the group's current capture tag: it
   * ends at the group's next switch, like every other member's. Earlier cycles keep their own tags
   * (they end at no group boundary); returns the capture cycle, the first one with a group tag.
   */
  enterGroup(tag: number): number {
    if (this.fallenBack) throw invalidState('ordered replication fell back to bitmaps');
    assertInteger(tag, 'tag');
    this.mode = 'group';
    this.capture.tag = tag;
    return this.capture.cycle;
  }

  /** The pair leaves its group: it switches on its own timer again, tags growing past the group's. */
  leaveGroup(): void {
    this.mode = 'standalone';
  }

  get switchMode(): 'standalone' | 'group' {
    return this.mode;
  }

  // ---- suspension -----------------------------------------------------------------------------

  /**
   * Gives up ordered replication (capture outgrew its limit, the link stayed down, the pair
   * suspends): returns every track whose data any cycle held, so the caller marks them invalid
   * for R2 (plus the tracks of writes still in flight, which it knows). Sticky: later writes
   * capture nothing and a new R1Cycles starts after the resync.
   */
  fallBackToBitmaps(): { tracks: number[]; releasedSpillCycles: number[] } {
    const tracks = new Set<number>();
    const perTrack = this.config.trackBytes / this.recordBytes;
    for (const c of this.cycles()) {
      for (const rec of c.entries.keys()) tracks.add(Math.floor(rec / perTrack));
      this.dropCycle(c);
    }
    this.fallenBack = true;
    this.spare.length = 0;
    this.transmit = null;
    this.committing = null;
    return { tracks: [...tracks].sort((a, b) => a - b), releasedSpillCycles: this.takeReleasedSpill() };
  }

  // ---- reporting ------------------------------------------------------------------------------

  get captureCycle(): number {
    return this.capture.cycle;
  }

  get captureTag(): number {
    return this.capture.tag;
  }

  stats(): R1Stats {
    const t = this.transmit;
    return {
      capture: this.capture.stats(),
      transmit: t ? {
        ...t.stats(), pending: t.pending.size + t.restoring.size + t.restored.size, inflight: t.inflight.size, acked: t.acked, sealed: t.sealAcked,
      } : null,
      committing: this.committing?.stats() ?? null,
      memoryBytes: this.memoryBytes,
      spilledRecords: this.diskRecords,
      overBudget: this.overBudget,
      overLimit: this.overLimit,
      fallenBack: this.fallenBack,
      lastSwitchMs: this.lastSwitchMs,
    };
  }

  private cycles(): Cycle[] {
    const out: Cycle[] = [this.capture];
    if (this.transmit) out.push(this.transmit);
    if (this.committing) out.push(this.committing);
    return out;
  }

  private cycleByNumber(n: number): Cycle | null {
    if (this.capture.cycle === n) return this.capture;
    if (this.transmit?.cycle === n) return this.transmit;
    if (this.committing?.cycle === n) return this.committing;
    return null;
  }

  /**
   * A record buffer: a spare one (zeroed unless the caller overwrites all of it) or a new one.
   * Allocating and collecting 4 KiB buffers at host write rates costs more than the copy into them.
   */
  private recordBuffer(overwritten: boolean): Uint8Array {
    const spare = this.spare.pop();
    if (!spare) return new Uint8Array(this.recordBytes);
    if (!overwritten) spare.fill(0);
    return spare;
  }

  /**
   * A buffer no entry, message or spill write refers to any more. Spares plus buffers in use stay
   * within the memory budget, so keeping them never raises what the cycles hold beyond it.
   */
  private releaseBuffer(buffer: Uint8Array): void {
    if ((this.spare.length + this.memRecords) * this.recordBytes < this.config.memoryBudgetBytes) this.spare.push(buffer);
  }
}
