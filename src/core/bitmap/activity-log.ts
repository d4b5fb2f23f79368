// The activity log (after DRBD): the set of "hot" extents a volume may be writing to, persisted
// before the first write to an extent that is not yet hot. Change bitmaps are persisted only when
// an extent leaves the hot set or at a clean shutdown, so the common write — to an extent that is
// already hot — costs no metadata I/O. After a crash, recovery marks every track of every hot
// extent as changed: conservative (it may mark tracks that were not written), never the reverse.
//
// This module is the pure decision logic and the on-disk slot codec; the caller performs I/O.
import { assert } from '../lib/assert.js';
import { crc32c } from '../lib/crc32c.js';

const SLOT_MAGIC = 0x544d414c; // "TMAL"
/** A transaction written together with the bitmap delta of its evictions (one sync for both). */
const SLOT_WITH_DELTA_MAGIC = 0x544d4132; // "TMA2"
const SLOT_HEADER_BYTES = 24; // magic u32, extentTracks u32, seq f64, count u32, crc u32
const DELTA_REF_BYTES = 12; // TMA2: the delta's generation f64 and seq u32, before the extents

export interface ActivityLogConfig {
  /** Tracks per extent; an extent is the unit the log tracks. */
  readonly extentTracks: number;
  /** Most extents hot at once (bounded by what one slot can hold). */
  readonly maxActiveExtents: number;
  readonly slotCount: number;
  readonly slotBytes: number;
}

export const DEFAULT_ACTIVITY_LOG: ActivityLogConfig = {
  extentTracks: 64, // 4 MiB with 64 KiB tracks
  maxActiveExtents: 1000,
  slotCount: 8,
  slotBytes: 4096,
};

/** Extents one slot holds, whichever layout it takes. */
export const maxExtentsPerSlot = (slotBytes: number): number => Math.floor((slotBytes - SLOT_HEADER_BYTES - DELTA_REF_BYTES) / 4);

/** The bitmap delta a transaction was written with: recovery accepts the transaction only with it. */
export interface DeltaRef {
  readonly generation: number;
  readonly seq: number;
}

export interface Transaction {
  readonly seq: number;
  readonly slotIndex: number;
  /** The full hot set once this transaction is durable. */
  readonly extents: readonly number[];
  /** Extents dropped from the hot set: their bitmap bits must be durable before this transaction is written. */
  readonly evicted: readonly number[];
  readonly bytes: Uint8Array;
}

export interface RecoveredLog {
  readonly seq: number;
  readonly extentTracks: number;
  readonly extents: readonly number[];
  /** Written with this bitmap delta (TMA2 slots). */
  readonly delta?: DeltaRef;
}

export function encodeSlot(seq: number, extentTracks: number, extents: readonly number[], slotBytes: number, delta?: DeltaRef): Uint8Array {
  assert(extents.length <= maxExtentsPerSlot(slotBytes), `${extents.length} extents do not fit a ${slotBytes}-byte slot`);
  const out = new Uint8Array(slotBytes);
  const view = new DataView(out.buffer);
  view.setUint32(0, delta ? SLOT_WITH_DELTA_MAGIC : SLOT_MAGIC);
  view.setUint32(4, extentTracks);
  view.setFloat64(8, seq);
  view.setUint32(16, extents.length);
  let at = SLOT_HEADER_BYTES;
  if (delta) {
    view.setFloat64(at, delta.generation);
    view.setUint32(at + 8, delta.seq);
    at += DELTA_REF_BYTES;
  }
  for (let i = 0; i < extents.length; i++) view.setUint32(at + i * 4, extents[i]!);
  view.setUint32(20, crc32c(out.subarray(0, 20)) ^ crc32c(out.subarray(SLOT_HEADER_BYTES)));
  return out;
}

/** Decodes one slot; undefined for an empty, torn or foreign slot. */
export function decodeSlot(bytes: Uint8Array): RecoveredLog | undefined {
  if (bytes.length < SLOT_HEADER_BYTES + DELTA_REF_BYTES) return undefined;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const magic = view.getUint32(0);
  if (magic !== SLOT_MAGIC && magic !== SLOT_WITH_DELTA_MAGIC) return undefined;
  if ((crc32c(bytes.subarray(0, 20)) ^ crc32c(bytes.subarray(SLOT_HEADER_BYTES))) >>> 0 !== view.getUint32(20)) return undefined;
  const count = view.getUint32(16);
  const at = magic === SLOT_WITH_DELTA_MAGIC ? SLOT_HEADER_BYTES + DELTA_REF_BYTES : SLOT_HEADER_BYTES;
  if (at + count * 4 > bytes.length) return undefined;
  const extents: number[] = [];
  for (let i = 0; i < count; i++) extents.push(view.getUint32(at + i * 4));
  const delta = magic === SLOT_WITH_DELTA_MAGIC ? { generation: view.getFloat64(SLOT_HEADER_BYTES), seq: view.getUint32(SLOT_HEADER_BYTES + 8) } : undefined;
  return { seq: view.getFloat64(8), extentTracks: view.getUint32(4), extents, ...(delta ? { delta } : {}) };
}

/**
 * The newest valid slot, or an empty log when no slot was ever written. A slot written with a
 * bitmap delta counts only if `deltaDurable` says that delta is whole: the two were written with
 * one sync, and a crash before it completed may have kept the slot and torn the delta. The slot
 * before it stands then — its hot set still holds the extents the torn delta was for.
 */
export function recoverLog(slots: readonly Uint8Array[], deltaDurable: (ref: DeltaRef) => boolean = () => false): RecoveredLog | undefined {
  let best: RecoveredLog | undefined;
  for (const slot of slots) {
    const decoded = decodeSlot(slot);
    if (!decoded || (decoded.delta && !deltaDurable(decoded.delta))) continue;
    if (!best || decoded.seq > best.seq) best = decoded;
  }
  return best;
}

export class ActivityLog {
  /**
   * Durably hot extents, least recently used first: a use moves an extent to the end, so an eviction
   * reads its victims off the front instead of sorting the set (random writes over more extents than
   * the log holds evict on every transaction, and sorting a thousand extents each time was most of
   * the log's CPU).
   */
  private readonly hot = new Set<number>();
  /** The extent of the last admitted write while it is still the end of `hot` (-1: not known). */
  private lastUsed = -1;
  /** Extents waiting writes need, not yet in a transaction. */
  private readonly wanted = new Set<number>();
  /** Extent ranges of waiting writes since the last transaction, oldest first (with repeats). */
  private readonly requests: (readonly [number, number])[] = [];
  /** Extents being dropped by the transaction in flight: writes to them wait for the next one. */
  private readonly leaving = new Set<number>();
  private inFlight: Transaction | undefined;
  private seq: number;

  constructor(readonly config: ActivityLogConfig, recovered?: RecoveredLog) {
    assert(config.maxActiveExtents >= 16, 'activity log needs at least 16 extents');
    assert(config.maxActiveExtents <= maxExtentsPerSlot(config.slotBytes), 'activity log larger than a slot');
    assert(config.slotCount >= 2, 'activity log needs at least two slots');
    this.seq = recovered?.seq ?? 0;
    for (const extent of recovered?.extents ?? []) this.hot.add(extent);
  }

  extentOf(track: number): number {
    return Math.floor(track / this.config.extentTracks);
  }

  /** True when every extent of tracks first..last is durably hot, and marks them used. */
  admit(firstTrack: number, lastTrack: number): boolean {
    const first = this.extentOf(firstTrack);
    const last = this.extentOf(lastTrack);
    for (let e = first; e <= last; e++) {
      if (!this.hot.has(e) || this.leaving.has(e)) return false;
    }
    if (first !== this.lastUsed || last !== first) {
      for (let e = first; e <= last; e++) {
        this.hot.delete(e);
        this.hot.add(e);
      }
      this.lastUsed = last;
    }
    return true;
  }

  /** Registers the extents a waiting write needs. */
  request(firstTrack: number, lastTrack: number): void {
    for (let e = this.extentOf(firstTrack); e <= this.extentOf(lastTrack); e++) {
      if (!this.hot.has(e) || this.leaving.has(e)) this.wanted.add(e);
    }
    this.requests.push([this.extentOf(firstTrack), this.extentOf(lastTrack)]);
  }

  get hasWork(): boolean {
    return this.inFlight === undefined && this.wanted.size > 0;
  }

  get busy(): boolean {
    return this.inFlight !== undefined;
  }

  /** Builds the next transaction (at most one in flight). The caller persists it, then calls durable(). */
  nextTransaction(): Transaction | undefined {
    if (this.inFlight || this.wanted.size === 0) return undefined;
    const max = this.config.maxActiveExtents;
    // Serve waiting writes oldest first: take whole requests while they fit together, and never
    // evict an extent they need. (Filling the set with any wanted extents and evicting by recency
    // alone let concurrent writes evict each other's extents forever: a livelock.)
    const needed = new Set<number>();
    for (const [first, requestedLast] of this.requests) {
      let last = requestedLast;
      let extra = 0;
      for (let e = first; e <= last; e++) if (!needed.has(e)) extra++;
      if (needed.size + extra > max) {
        if (needed.size > 0) break;
        last = first + max - 1; // one write larger than the log: admit what fits (it cannot complete)
      }
      for (let e = first; e <= last; e++) needed.add(e);
    }
    this.requests.length = 0;
    const adds: number[] = [];
    for (const e of this.wanted) {
      if (adds.length === max) break;
      if (needed.size === 0 || needed.has(e)) adds.push(e);
    }
    const adding = new Set(adds);
    // Least recently used first, extents a waiting write needs last.
    let toEvict = this.hot.size - (max - adds.length);
    for (const e of adds) if (this.hot.has(e)) toEvict--;
    const evicted: number[] = [];
    if (toEvict > 0) {
      const neededHot: number[] = [];
      for (const e of this.hot) {
        if (evicted.length === toEvict) break;
        if (adding.has(e)) continue;
        if (!needed.has(e)) evicted.push(e);
        else if (neededHot.length < toEvict) neededHot.push(e);
      }
      for (const e of neededHot) if (evicted.length < toEvict) evicted.push(e);
    }
    for (const e of evicted) this.leaving.add(e);
    for (const e of adds) this.wanted.delete(e);
    const extents: number[] = [];
    for (const e of this.hot) if (!this.leaving.has(e) && !adding.has(e)) extents.push(e);
    for (const e of adds) extents.push(e);
    return this.begin(extents, evicted);
  }

  /** The transaction that empties the hot set: written at a clean point, after all bitmaps are durable. */
  cleanTransaction(): Transaction {
    assert(!this.inFlight, 'clean transaction while another is in flight');
    const evicted = [...this.hot];
    for (const e of evicted) this.leaving.add(e);
    return this.begin([], evicted);
  }

  private begin(extents: number[], evicted: number[]): Transaction {
    this.seq++;
    const txn: Transaction = {
      seq: this.seq,
      slotIndex: this.seq % this.config.slotCount,
      extents,
      evicted,
      bytes: encodeSlot(this.seq, this.config.extentTracks, extents, this.config.slotBytes),
    };
    this.inFlight = txn;
    return txn;
  }

  /** The transaction is on stable storage: its set becomes the hot set. */
  durable(seq: number): void {
    const txn = this.inFlight;
    assert(txn && txn.seq === seq, `durable(${seq}) without that transaction in flight`);
    this.inFlight = undefined;
    this.requests.length = 0; // waiters request again, oldest first
    for (const e of txn.evicted) {
      this.hot.delete(e);
      this.leaving.delete(e);
    }
    for (const e of txn.extents) if (!this.hot.has(e)) this.hot.add(e);
    this.lastUsed = -1; // extents were added after it
  }

  /** Writing the transaction failed: forget it; its extents are wanted again. */
  failed(seq: number): void {
    const txn = this.inFlight;
    assert(txn && txn.seq === seq, `failed(${seq}) without that transaction in flight`);
    this.inFlight = undefined;
    for (const e of txn.evicted) this.leaving.delete(e);
    for (const e of txn.extents) if (!this.hot.has(e)) this.wanted.add(e);
  }

  hotExtents(): number[] {
    return [...this.hot].sort((a, b) => a - b);
  }
}

