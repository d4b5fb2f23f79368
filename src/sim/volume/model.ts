// The oracle's model of one volume: what a read may return, what must survive a crash, and which
// tracks the change tracker must cover. It is built only from what the host saw (calls and
// acknowledgements) and from which byte ranges were handed to the disk, never from the volume's
// internal state.
//
// Ordering is real-time order, as a host sees it: a mutation acknowledged before another
// overlapping one was issued is superseded by it; overlapping mutations in flight together may
// take effect in either order (NBD lets a server process concurrent requests in any order).
import { TrackBitmap } from '../../core/bitmap/track-bitmap.js';
import { UNIT_BYTES } from './pattern.js';

export type MutationKind = 'write' | 'zero' | 'trim';

/** One possible content of a unit, with when it was issued and acknowledged (logical time). */
interface Version {
  readonly id: number;
  /** The unit's content id: the write's id, or 0 for zeros. */
  readonly content: number;
  readonly issuedAt: number;
  ackedAt: number;
}

export interface Mutation extends Version {
  readonly kind: MutationKind;
  readonly firstUnit: number;
  readonly units: number;
  readonly fua: boolean;
  /** Spans more extents than the activity log may hold hot: the volume may refuse it. */
  readonly oversized: boolean;
}

export interface ReadTicket {
  readonly firstUnit: number;
  readonly units: number;
  /** Acknowledged, not superseded contents of each unit when the read was issued. */
  readonly visibleAtStart: readonly (readonly Version[])[];
  readonly inFlightAtStart: readonly Mutation[];
  readonly nextIdAtStart: number;
}

const NEVER = Number.POSITIVE_INFINITY;
const supersedes = (later: Version, earlier: Version): boolean => earlier.ackedAt < later.issuedAt;

export class VolumeModel {
  readonly units: number;
  /** Per unit, the acknowledged versions no later acknowledged version supersedes. */
  private readonly visible: Version[][];
  /** Per unit, the versions that may be on the media after a crash. */
  private readonly candidates: Version[][];
  private readonly mutations = new Map<number, Mutation>();
  private readonly inFlight = new Map<number, Mutation>();
  /** Acknowledged mutations not yet known durable. */
  private readonly unflushed = new Set<Mutation>();
  private nextId = 1;
  /** Logical time: bumped at every issue and acknowledgement. */
  private now = 0;
  /** Tracks the change tracker must cover: handed to the disk since the last completed reset. */
  required: TrackBitmap;
  private resetting: TrackBitmap | undefined;
  /** A reset in flight at a crash may or may not have become durable: either outcome is allowed. */
  private resetAtCrash: TrackBitmap | undefined;

  constructor(readonly sizeBytes: number, readonly trackBytes: number, trackCount: number) {
    this.units = sizeBytes / UNIT_BYTES;
    const zeros: Version = { id: 0, content: 0, issuedAt: -1, ackedAt: -1 };
    this.visible = Array.from({ length: this.units }, () => [zeros]);
    this.candidates = Array.from({ length: this.units }, () => [zeros]);
    this.required = new TrackBitmap(trackCount);
  }

  get inFlightCount(): number {
    return this.inFlight.size;
  }

  issue(kind: MutationKind, firstUnit: number, units: number, fua: boolean, oversized = false): Mutation {
    const id = this.nextId++;
    const m: Mutation = {
      id, content: kind === 'write' ? id : 0, issuedAt: ++this.now, ackedAt: NEVER, kind, firstUnit, units, fua, oversized,
    };
    this.mutations.set(id, m);
    this.inFlight.set(id, m);
    for (let u = firstUnit; u < firstUnit + units; u++) this.candidates[u]!.push(m);
    return m;
  }

  /** The volume refused the mutation before touching the disk: it never happens. */
  refuse(m: Mutation): void {
    this.inFlight.delete(m.id);
    for (let u = m.firstUnit; u < m.firstUnit + m.units; u++) {
      this.candidates[u] = this.candidates[u]!.filter((v) => v !== m);
    }
  }

  acknowledge(m: Mutation): void {
    this.inFlight.delete(m.id);
    m.ackedAt = ++this.now;
    for (let u = m.firstUnit; u < m.firstUnit + m.units; u++) {
      const kept = this.visible[u]!.filter((v) => !supersedes(m, v));
      kept.push(m);
      this.visible[u] = kept;
    }
    if (m.fua) this.guarantee(m);
    else this.unflushed.add(m);
  }

  /** The mutations a flush issued now must make durable. */
  flushIssued(): Mutation[] {
    return [...this.unflushed];
  }

  flushAcknowledged(covered: readonly Mutation[]): void {
    for (const m of covered) {
      this.guarantee(m);
      this.unflushed.delete(m);
    }
  }

  /** `m` is durable: nothing it supersedes can be on the media any more. */
  private guarantee(m: Mutation): void {
    for (let u = m.firstUnit; u < m.firstUnit + m.units; u++) {
      this.candidates[u] = this.candidates[u]!.filter((v) => !supersedes(m, v));
    }
  }

  /** The disk was handed a mutation of these bytes (the volume decided to write them). */
  diskMutated(offset: number, length: number): void {
    const first = Math.floor(offset / this.trackBytes);
    const last = Math.floor((offset + length - 1) / this.trackBytes);
    this.required.setRange(first, last);
    this.resetting?.setRange(first, last);
  }

  /**
   * A change-tracker reset is issued while the disk still has `diskInFlight` mutations outstanding:
   * those may land after the reset, so the new interval starts with their tracks.
   */
  resetIssued(diskInFlight: readonly { offset: number; length: number }[]): void {
    const next = new TrackBitmap(this.required.size);
    for (const r of diskInFlight) {
      next.setRange(Math.floor(r.offset / this.trackBytes), Math.floor((r.offset + r.length - 1) / this.trackBytes));
    }
    this.resetting = next;
  }

  resetAcknowledged(): void {
    if (this.resetting) this.required = this.resetting;
    this.resetting = undefined;
  }

  /** What the in-memory tracker must cover right now (a reset in progress has cleared it). */
  get requiredNow(): TrackBitmap {
    return this.resetting ?? this.required;
  }

  get resetInProgress(): boolean {
    return this.resetting !== undefined;
  }

  beginRead(firstUnit: number, units: number): ReadTicket {
    return {
      firstUnit,
      units,
      visibleAtStart: this.visible.slice(firstUnit, firstUnit + units),
      inFlightAtStart: [...this.inFlight.values()],
      nextIdAtStart: this.nextId,
    };
  }

  /** Checks a completed read; returns a description of the first wrong unit, or undefined. */
  checkRead(ticket: ReadTicket, observed: Int32Array): string | undefined {
    let racing: Mutation[] | undefined;
    for (let i = 0; i < ticket.units; i++) {
      const got = observed[i]!;
      const visible = ticket.visibleAtStart[i]!;
      if (visible.some((v) => v.content === got)) continue;
      const u = ticket.firstUnit + i;
      if (!racing) {
        racing = [...ticket.inFlightAtStart];
        for (let id = ticket.nextIdAtStart; id < this.nextId; id++) racing.push(this.mutations.get(id)!);
      }
      if (racing.some((m) => u >= m.firstUnit && u < m.firstUnit + m.units && m.content === got)) continue;
      return `unit ${u} (byte ${u * UNIT_BYTES}) read ${describe(got)}, expected ${visible.map((v) => describe(v.content)).join(' or ')}` +
        (racing.length > 0 ? ' or a racing mutation\'s data' : '');
    }
    return undefined;
  }

  /** Checks a read of the whole volume with nothing in flight. */
  checkQuiet(observed: Int32Array): string | undefined {
    return this.checkRead(this.beginRead(0, this.units), observed);
  }

  /** Power loss: operations in flight will never be acknowledged; a reset in progress may or may not have happened. */
  crash(): void {
    this.inFlight.clear();
    this.unflushed.clear();
    if (this.resetting) this.resetAtCrash = this.resetting;
    this.resetting = undefined;
  }

  /**
   * Checks a recovered change tracker: it must cover every track handed to the disk since the last
   * completed reset, or, when a reset was in flight at the crash, since that reset. Returns the
   * tracks missing (undefined when covered) and adopts the claim that held.
   */
  checkRecoveredTracker(recovered: TrackBitmap): TrackBitmap | undefined {
    const pending = this.resetAtCrash;
    this.resetAtCrash = undefined;
    if (this.required.isSubsetOf(recovered)) return undefined;
    if (pending && pending.isSubsetOf(recovered)) {
      this.required = pending;
      return undefined;
    }
    return this.required.copy().andNot(recovered);
  }

  /**
   * After recovery (or a clean shutdown): checks each unit's contents against what may be on the
   * media, then adopts them as the new, durable state. Returns the first violation, or undefined.
   */
  reconcile(observed: Int32Array): string | undefined {
    let problem: string | undefined;
    const at = ++this.now;
    for (let u = 0; u < this.units; u++) {
      const got = observed[u]!;
      const list = this.candidates[u]!;
      if (problem === undefined && !list.some((v) => v.content === got)) {
        problem = `after the crash unit ${u} (byte ${u * UNIT_BYTES}) holds ${describe(got)}, but only ` +
          `${list.map((v) => describe(v.content)).join(' or ')} may be there`;
      }
      // What is on the media now is durable and is the only thing a read may return.
      const now: Version = { id: 0, content: got, issuedAt: at, ackedAt: at };
      this.candidates[u] = [now];
      this.visible[u] = [now];
    }
    return problem;
  }
}

function describe(content: number): string {
  if (content === 0) return 'zeros';
  if (content < 0) return 'garbage';
  return `data of write #${content}`;
}
