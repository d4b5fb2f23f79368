// The world a cascade session lives in, at the level of tracks: the middle array B (R2VOL fed by the
// first site, the clone session R2VOL→CVOL, the pair CVOL→CRVOL's outgoing bitmap and lifecycle)
// and the far array C (CRVOL and its protection clone CPROT). Both clone sessions are the product's
// core CloneSession; the pair's decisions are the product's PairLifecycle, its data a model of the
// rules the cascade relies on (docs/design/cascade.md): a copy into CVOL marks the pair's bitmap,
// and a link session lost re-marks what was shipped since the last flush round.
//
// Crashes are kill -9: data written survives (the page cache does), in-process state does not. A
// restarted array reloads its bitmaps conservatively: what was on disk plus every bit set in memory
// (the activity log covers those) plus a few spurious ones.
import { TrackBitmap } from '../../core/bitmap/track-bitmap.js';
import { CloneSession } from '../../core/clone/clone-session.js';
import type { Prng } from '../../core/lib/prng.js';
import type { PairIntent } from '../../core/replication/pair-record.js';
import { PairLifecycle, type LifecycleRecord, type PairFacts } from '../../core/replication/pair-lifecycle.js';

const TRACK_BYTES = 65536;

/** A clone session with its data volumes and what its array last persisted of it. */
export class SimClone {
  session: CloneSession;
  private disk: { state: CloneSession['state']; splitAtMs: number | null; bits: TrackBitmap[] };

  constructor(readonly std: Int32Array, readonly clone: Int32Array, nowMs: number, splitAlready = false) {
    const n = std.length;
    this.session = new CloneSession(0, 'std', 'clone', new TrackBitmap(n), new TrackBitmap(n), new TrackBitmap(n), new TrackBitmap(n));
    this.session.establish(nowMs);
    if (splitAlready) {
      // Made and split before the story starts: the clone equals STD.
      clone.set(std);
      this.session.toClone.clearAll();
      this.session.settle();
      this.session.split(nowMs);
    }
    this.disk = this.snapshot();
  }

  private snapshot(): { state: CloneSession['state']; splitAtMs: number | null; bits: TrackBitmap[] } {
    const s = this.session;
    return { state: s.state, splitAtMs: s.splitAtMs, bits: [s.protection.copy(), s.toClone.copy(), s.toStd.copy(), s.cloneOwn.copy()] };
  }

  persist(): void {
    this.disk = this.snapshot();
  }

  /** A write to STD (a host's or a replica's): protection always, the clone's bits while attached. */
  stdWritten(track: number): void {
    this.session.protection.set(track);
    if (this.session.attached) this.session.toClone.set(track);
  }

  /** The copy loop moves one track STD→clone; returns it (or -1 when there is nothing to copy). */
  copyOne(prng: Prng): number {
    const s = this.session;
    if (!s.attached) return -1;
    if (s.toClone.isEmpty()) {
      // The loop settles when it finds nothing left (after a restart too).
      s.settle();
      return -1;
    }
    const tracks = s.toClone.toArray();
    const t = prng.pick(tracks);
    this.clone[t] = this.std[t]!;
    s.copied(t, 'to-clone', TRACK_BYTES);
    if (s.toClone.isEmpty()) this.persist(); // the loop persists when it settles
    return t;
  }

  /** Split as the clone manager does: inside the write window, copy what is left, then split and persist. */
  split(nowMs: number, onCopy: (track: number) => void): void {
    const s = this.session;
    for (const t of s.toClone.toArray()) {
      this.clone[t] = this.std[t]!;
      s.copied(t, 'to-clone', TRACK_BYTES);
      onCopy(t);
    }
    s.settle();
    s.split(nowMs);
    this.persist();
  }

  reestablish(nowMs: number): void {
    this.session.reestablish(nowMs);
    this.persist();
  }

  /** kill -9 and restart: the persisted state, its bitmaps widened by what the activity log covers. */
  crash(prng: Prng): void {
    const s = this.session;
    const mem = [s.protection, s.toClone, s.toStd, s.cloneOwn];
    const bits = this.disk.bits.map((b, i) => b.copy().or(mem[i]!));
    const n = this.std.length;
    // Spurious hot tracks: marked on every position that writes mark in the persisted state.
    const attached = this.disk.state !== 'split';
    for (let i = prng.int(0, 2); i > 0; i--) {
      const t = prng.int(0, n - 1);
      bits[0]!.set(t);
      if (attached) bits[1]!.set(t);
    }
    this.session = new CloneSession(0, 'std', 'clone', bits[0]!, bits[1]!, bits[2]!, bits[3]!,
      { state: this.disk.state, operation: 'none', splitAtMs: this.disk.splitAtMs, progress: { tracksCopied: 0, bytesCopied: 0, startedAtMs: 0 } });
    this.persist();
  }
}

/**
 * The pair CVOL→CRVOL: B's half, its data bookkeeping here (the outgoing bitmap, what C has not
 * flushed) and its decisions in the product's PairLifecycle — when it reconciles, protects C's clone
 * and may ship — which cascade-sim.ts drives as PairManager does, including the turns between a
 * resume's record change and its resync in which a tick may come.
 */
export class SimPair {
  intent: PairIntent = 'suspended';
  out: TrackBitmap;
  outDisk: TrackBitmap;
  /** Shipped to C since the last flush round (cleared in memory, still set on disk). */
  unflushed: TrackBitmap;
  /** Made by `pair create`: the pair exists once it has one. */
  lifecycle: PairLifecycle | undefined;
  /** The lifecycle's step with C now (the reply, when it comes, names its epoch). */
  step: { kind: 'ask' | 'confirm' | 'protect'; epoch: number } | undefined;
  /** A resume changed the record; the app's 'resync' is still to come. */
  resyncPending = false;

  constructor(readonly trackCount: number) {
    this.out = new TrackBitmap(trackCount);
    this.outDisk = new TrackBitmap(trackCount);
    this.unflushed = new TrackBitmap(trackCount);
  }

  private record(): LifecycleRecord {
    return { role: 'R1', intent: this.intent, mode: 'adaptive', generation: 1, protects: true };
  }

  /** Nothing owed, shipped unacknowledged or waiting for a protection (PairRuntime.quiet). */
  get quiet(): boolean {
    return this.out.isEmpty() && !(this.lifecycle?.needsProtection ?? false) && this.step?.kind !== 'protect';
  }

  get mayShip(): boolean {
    return this.lifecycle?.mayShip ?? false;
  }

  get exists(): boolean {
    return this.lifecycle !== undefined;
  }

  facts(): PairFacts {
    return { quiet: this.quiet, owedTracks: this.out.count(), capturing: false, groupReady: true };
  }

  /** `pair create`: both halves made in one exchange (a live lifecycle: it ships at once). */
  create(linkUp: boolean): void {
    this.intent = 'replicating';
    this.lifecycle = new PairLifecycle(this.record(), { linkUp, live: true });
  }

  /** The record changed (suspend, resume), persisted already. */
  setIntent(intent: PairIntent): void {
    this.intent = intent;
    this.lifecycle?.handle({ type: 'record', record: this.record() }, 0);
  }

  flushRound(): void {
    this.outDisk = this.out.copy();
    this.unflushed.clearAll();
  }

  /** kill -9 of B: the bitmap from disk plus what the activity log covers; the lifecycle starts over. */
  crashR1(prng: Prng, linkUp: boolean): void {
    this.out = this.outDisk.copy().or(this.out);
    if (this.exists) for (let i = prng.int(0, 2); i > 0; i--) this.out.set(prng.int(0, this.trackCount - 1));
    this.unflushed.clearAll();
    this.outDisk = this.out.copy();
    this.step = undefined;
    this.resyncPending = false;
    if (this.exists) this.lifecycle = new PairLifecycle(this.record(), { linkUp, live: false });
  }

  /**
   * The link session ended: the step with C fails, R1 reconciles again and owes again what C had not
   * flushed. `reset`: C restarted (what it held undurably may be gone).
   */
  lostSession(reset: boolean): void {
    this.out.or(this.unflushed);
    this.unflushed.clearAll();
    const lc = this.lifecycle;
    if (!lc) return;
    lc.handle({ type: 'link-down' }, 0);
    if (this.step) {
      const step = this.step.kind === 'protect' ? 'protect' : 'reconcile';
      lc.handle({ type: 'step-failed', step, epoch: this.step.epoch, error: 'link session lost' }, 0);
      this.step = undefined;
    }
    if (reset) lc.handle({ type: 'session-reset' }, 0);
  }
}
