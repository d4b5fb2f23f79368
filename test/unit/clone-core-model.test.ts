// Model-based randomized test of the clone-session core. A seeded Prng drives a simulated caller —
// the I/O path and copy engine executing the core's decisions with every I/O split into steps that
// interleave at random — against an in-test array model of STD and each clone volume, with crashes
// (reload from the last persisted record plus conservative maybe-written bitmaps).
//
// Oracle: after a split the clone equals STD's image at that instant; reads of STD (during restores
// too) return the logical image — the clone's image merged with later STD writes; an attached clone
// holds STD's image on every track it is not marked to copy; after a restore completes STD equals
// the clone; every command marks exactly the tracks the seed's rules require (bit-exact against an
// independent model of the protection and clone-changed bits) and an operation that nothing
// disturbed copies exactly those tracks; the 17th session is refused.
//
// TIDEMARK_SEED=n runs one seed; TIDEMARK_CLONE_SEEDS=n runs n seeds (default 300).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TrackBitmap } from '../../src/core/bitmap/track-bitmap.js';
import { decodeCloneSet, encodeCloneSet } from '../../src/core/clone/clone-codec.js';
import { CloneSet } from '../../src/core/clone/clone-set.js';
import type { CopyTicket, MirrorWrite, RestoreFirst, VolumeRef } from '../../src/core/clone/clone-types.js';
import { ErrorCode, isTidemarkError } from '../../src/core/errors.js';
import { decodeRecord, encodeRecord } from '../../src/core/lib/checksummed-record.js';
import { Prng } from '../../src/core/lib/prng.js';
import { makeGeometry, type Geometry } from '../../src/core/volume/geometry.js';

/** Cells per track: a host write may cover part of a track, which is the case a restore must merge. */
const CELLS = 4;
const STEPS = 1200;
const MAX_ACTIONS = 24;

type Phase = 'none' | 'attached' | 'split';

interface StdWrite {
  readonly kind: 'std-write';
  readonly first: number;
  readonly last: number;
  readonly cellFirst: number;
  readonly values: Uint32Array;
  stage: 'decide' | 'apply';
  writeId: number;
  /** Earlier overlapping writes this one must not overtake (the decision's `after`). */
  after: readonly number[];
  pending: Array<'std' | MirrorWrite>;
  readonly failed: MirrorWrite[];
}
interface StdRead { readonly kind: 'std-read'; readonly first: number; readonly last: number }
interface CloneWrite {
  readonly kind: 'clone-write';
  readonly clone: number;
  readonly first: number;
  readonly last: number;
  readonly cellFirst: number;
  readonly values: Uint32Array;
  readonly writeId: number;
  /** Earlier overlapping writes to the same clone: a volume applies overlapping writes in order. */
  after: readonly number[];
  applied: boolean;
}
interface Copy {
  readonly kind: 'copy';
  readonly ticket: CopyTicket;
  readonly clone: number;
  data: Uint32Array | null;
  written: boolean;
}
type Action = StdWrite | StdRead | CloneWrite | Copy;

interface OpCheck {
  /** Tracks the operation must copy, by the rules. */
  readonly expected: TrackBitmap;
  readonly done: TrackBitmap;
}

interface Persisted {
  readonly bytes: Uint8Array;
  readonly pb: Array<TrackBitmap | null>;
  readonly m4b: Array<TrackBitmap | null>;
}

class Sim {
  readonly prng: Prng;
  readonly n: number;
  readonly k: number;
  readonly geometry: Geometry;
  readonly stdRef: VolumeRef;
  readonly names: string[];
  set: CloneSet;
  // Physical volumes (what the disks hold) and the logical images hosts must see.
  readonly std: Uint32Array;
  readonly clones: Uint32Array[];
  readonly stdLogical: Uint32Array;
  readonly cloneLogical: Array<Uint32Array | null>;
  // The independent model of the seed's bits, and each clone's phase.
  pb: Array<TrackBitmap | null>;
  m4b: Array<TrackBitmap | null>;
  readonly phase: Phase[];
  readonly ops: Array<OpCheck | null>;
  actions: Action[] = [];
  // Tracks physically written since the last persist (what an activity log would cover).
  writtenStd: TrackBitmap;
  writtenClones: TrackBitmap[];
  persisted!: Persisted;
  stamp = 1;
  now = 0;
  readonly stats = { commands: 0, refused: 0, crashes: 0, reads: 0, copies: 0, redo: 0, opsChecked: 0, splits: 0, restores: 0, restoreFirst: 0, mirrorFailures: 0 };
  /** The most recent events, printed when the seed fails. */
  readonly trace: string[] = [];

  log(event: string): void {
    this.trace.push(`${this.now} ${event}`);
    if (this.trace.length > 2000) this.trace.shift();
  }

  constructor(readonly seed: number) {
    this.prng = new Prng(seed);
    this.n = this.prng.int(6, 48);
    this.k = this.prng.chance(0.08) ? 17 : this.prng.int(2, 5);
    this.geometry = makeGeometry(this.n * 4096, 4096);
    this.stdRef = { name: 'std', geometry: this.geometry };
    this.names = Array.from({ length: this.k }, (_, i) => `clone${i}`);
    this.set = new CloneSet(this.stdRef);
    const cells = this.n * CELLS;
    this.std = new Uint32Array(cells).map(() => this.stamp++);
    this.clones = this.names.map(() => new Uint32Array(cells).map(() => this.stamp++));
    this.stdLogical = this.std.slice();
    this.cloneLogical = this.names.map(() => null);
    this.pb = this.names.map(() => null);
    this.m4b = this.names.map(() => null);
    this.phase = this.names.map(() => 'none');
    this.ops = this.names.map(() => null);
    this.writtenStd = new TrackBitmap(this.n);
    this.writtenClones = this.names.map(() => new TrackBitmap(this.n));
    this.persist();
  }

  // ------------------------------------------------------------ helpers

  private cloneIndex(name: string): number {
    const i = this.names.indexOf(name);
    assert.ok(i >= 0, `unknown clone ${name}`);
    return i;
  }

  private trackEquals(a: Uint32Array, b: Uint32Array, t: number): boolean {
    for (let c = t * CELLS; c < (t + 1) * CELLS; c++) if (a[c] !== b[c]) return false;
    return true;
  }

  private span(): { first: number; last: number; cellFirst: number; values: Uint32Array } {
    const cellFirst = this.prng.int(0, this.n * CELLS - 1);
    const length = this.prng.int(1, Math.min(3 * CELLS, this.n * CELLS - cellFirst));
    const values = new Uint32Array(length).map(() => this.stamp++);
    return { first: Math.floor(cellFirst / CELLS), last: Math.floor((cellFirst + length - 1) / CELLS), cellFirst, values };
  }

  /** Writes the cells of `values` that fall in tracks first..last of the span to `target`. */
  private applyCells(target: Uint32Array, cellFirst: number, values: Uint32Array, first: number, last: number): void {
    const lo = Math.max(cellFirst, first * CELLS);
    const hi = Math.min(cellFirst + values.length, (last + 1) * CELLS);
    for (let c = lo; c < hi; c++) target[c] = values[c - cellFirst]!;
  }

  private stdWritesInFlight(): StdWrite[] {
    return this.actions.filter((a): a is StdWrite => a.kind === 'std-write' && a.stage === 'apply');
  }

  private underStdWrite(t: number): boolean {
    return this.stdWritesInFlight().some((w) => w.first <= t && t <= w.last);
  }

  private underCloneWrite(k: number, t: number): boolean {
    return this.actions.some((a) => a.kind === 'clone-write' && a.clone === k && a.first <= t && t <= a.last);
  }

  private sessionOf(k: number): number | undefined {
    return this.set.sessionIdOf(this.names[k]!);
  }

  persist(): void {
    this.trace.push(`${this.now} persist`);
    this.persisted = {
      bytes: encodeRecord(encodeCloneSet(this.set)),
      pb: this.pb.map((b) => b?.copy() ?? null),
      m4b: this.m4b.map((b) => b?.copy() ?? null),
    };
    this.writtenStd.clearAll();
    for (const w of this.writtenClones) w.clearAll();
  }

  // ------------------------------------------------------------ actions

  /** A host I/O waits on unrestored tracks: restore each (or wait for the copy already running). */
  private restoreFirst(d: RestoreFirst): void {
    this.stats.restoreFirst++;
    const clone = this.cloneIndex(this.set.status(d.sessionId).clone);
    for (const t of d.tracks) {
      const c = this.set.claimRestore(d.sessionId, t);
      if (c.kind === 'claimed') this.actions.push({ kind: 'copy', ticket: c.ticket, clone, data: null, written: false });
    }
  }

  /** Advances one action by one step; true when it finished. */
  private step(a: Action): boolean {
    this.now++;
    switch (a.kind) {
      case 'std-write':
        return this.stepStdWrite(a);
      case 'std-read': {
        const d = this.set.stdRead(a.first, a.last);
        if (d.kind === 'restore-first') {
          this.restoreFirst(d);
          return false;
        }
        this.stats.reads++;
        for (let t = a.first; t <= a.last; t++) {
          if (this.underStdWrite(t)) continue; // a write in flight: either value is right
          assert.ok(this.trackEquals(this.std, this.stdLogical, t), `read of STD track ${t} returned the wrong image`);
        }
        return true;
      }
      case 'clone-write': {
        if (a.after.length > 0) {
          a.after = a.after.filter((id) => this.actions.some((b) => b.kind === 'clone-write' && b.writeId === id));
          if (a.after.length > 0) return false;
        }
        if (!a.applied) {
          this.applyCells(this.clones[a.clone]!, a.cellFirst, a.values, a.first, a.last);
          for (let t = a.first; t <= a.last; t++) this.writtenClones[a.clone]!.set(t);
          a.applied = true;
          return false;
        }
        this.set.cloneWriteDone(a.writeId);
        // A session terminated meanwhile leaves a free volume the model no longer follows.
        const image = this.cloneLogical[a.clone];
        if (image) this.applyCells(image, a.cellFirst, a.values, a.first, a.last);
        return true;
      }
      case 'copy':
        return this.stepCopy(a);
    }
  }

  private stepStdWrite(a: StdWrite): boolean {
    if (a.stage === 'decide') {
      const d = this.set.stdWrite(a.first, a.last);
      if (d.kind === 'restore-first') {
        this.restoreFirst(d);
        return false;
      }
      a.stage = 'apply';
      a.writeId = d.writeId;
      a.after = d.after;
      this.log(`std write ${a.writeId} tracks ${a.first}..${a.last} mirrors ${JSON.stringify(d.mirrors.map((m) => [m.clone, m.spans]))}`);
      a.pending = ['std', ...d.mirrors];
      for (let k = 0; k < this.k; k++) this.pb[k]?.setRange(a.first, a.last);
      return false;
    }
    if (a.after.length > 0) {
      const waiting = new Set(this.stdWritesInFlight().map((w) => w.writeId));
      a.after = a.after.filter((id) => waiting.has(id));
      if (a.after.length > 0) return false;
    }
    if (a.pending.length > 0) {
      const i = this.prng.int(0, a.pending.length - 1);
      const target = a.pending[i]!;
      a.pending.splice(i, 1);
      if (target === 'std') {
        this.applyCells(this.std, a.cellFirst, a.values, a.first, a.last);
        for (let t = a.first; t <= a.last; t++) this.writtenStd.set(t);
      } else if (this.prng.chance(0.03)) {
        a.failed.push(target); // the clone's disk refused it
        this.stats.mirrorFailures++;
      } else {
        const k = this.cloneIndex(target.clone);
        for (const s of target.spans) {
          this.applyCells(this.clones[k]!, a.cellFirst, a.values, s.first, s.last);
          for (let t = s.first; t <= s.last; t++) this.writtenClones[k]!.set(t);
        }
      }
      return false;
    }
    this.log(`std write ${a.writeId} done, failed ${a.failed.map((m) => m.clone).join(',')}`);
    const r = this.set.stdWriteDone(a.writeId, a.failed);
    assert.equal(r.persistBeforeAck, a.failed.some((m) => this.set.sessionIdOf(m.clone) === m.sessionId));
    for (const m of a.failed) this.ops[this.cloneIndex(m.clone)] = null; // work was added
    if (r.persistBeforeAck) this.persist();
    this.applyCells(this.stdLogical, a.cellFirst, a.values, a.first, a.last);
    return true;
  }

  private stepCopy(a: Copy): boolean {
    const { track, direction } = a.ticket;
    const [source, target, written] = direction === 'to-clone'
      ? [this.std, this.clones[a.clone]!, this.writtenClones[a.clone]!]
      : [this.clones[a.clone]!, this.std, this.writtenStd];
    if (a.data === null) {
      a.data = source.slice(track * CELLS, (track + 1) * CELLS);
      return false;
    }
    if (!a.written) {
      if (this.prng.chance(0.02)) {
        this.log(`copy ${direction} ${this.names[a.clone]} track ${track} failed`);
        this.set.copyFailed(a.ticket);
        return true;
      }
      target.set(a.data, track * CELLS);
      written.set(track);
      a.written = true;
      return false;
    }
    const out = this.set.copyDone(a.ticket);
    this.log(`copy ${a.ticket.direction} ${this.names[a.clone]} track ${track}: ${JSON.stringify(out)}`);
    this.stats.copies++;
    if (out.kind === 'redo') this.stats.redo++;
    if (out.kind === 'done') {
      const op = this.ops[a.clone];
      if (op) {
        assert.ok(op.expected.test(track), `seed ${this.seed}: copied track ${track} the rules did not ask for`);
        assert.ok(!op.done.test(track), `track ${track} copied twice in one operation`);
        op.done.set(track);
      }
      if (out.settled) {
        assert.ok(out.state === 'synchronized' || out.state === 'restored');
        if (op) {
          assert.ok(op.done.equals(op.expected), 'an undisturbed operation copies exactly the required tracks');
          assert.equal(this.set.status(a.ticket.sessionId).tracksCopied, op.expected.count());
          this.stats.opsChecked++;
          this.ops[a.clone] = null;
        }
        if (this.prng.chance(0.5)) this.persist();
      }
    }
    return true;
  }

  /** Steps random actions accepted by `allowed` while `busy` holds. */
  private drain(busy: () => boolean, allowed: (a: Action) => boolean): void {
    for (let guard = 0; busy(); guard++) {
      assert.ok(guard < 100_000, 'drain makes progress');
      const candidates = this.actions.filter(allowed);
      assert.ok(candidates.length > 0, 'something to step while draining');
      const a = this.prng.pick(candidates);
      if (this.step(a)) this.actions.splice(this.actions.indexOf(a), 1);
    }
  }

  /** The write window: new STD writes are held (not admitted), the admitted ones finish. */
  private drainStdWrites(): void {
    this.drain(() => this.stdWritesInFlight().length > 0, (a) => !(a.kind === 'std-write' && a.stage === 'decide'));
  }

  private drainCloneWrites(k: number): void {
    this.drain(() => this.actions.some((a) => a.kind === 'clone-write' && a.clone === k),
      (a) => a.kind === 'clone-write' && a.clone === k);
  }

  private drainCopies(serial: number): void {
    const mine = (a: Action): boolean => a.kind === 'copy' && a.ticket.serial === serial;
    this.drain(() => this.actions.some(mine), mine);
  }

  // ------------------------------------------------------------ commands

  private expectRefusal(code: string, run: () => unknown): void {
    this.stats.refused++;
    assert.throws(run, (e: unknown) => isTidemarkError(e) && e.code === code);
  }

  establish(k: number): void {
    const id = this.sessionOf(k);
    if (id === undefined) {
      if (this.set.sessionCount === 16) {
        this.expectRefusal(ErrorCode.LimitExceeded, () => this.set.establish({ name: this.names[k]!, geometry: this.geometry }, this.now));
        return;
      }
    } else {
      if (this.set.status(id).state !== 'split') {
        this.expectRefusal(ErrorCode.InvalidState, () => this.set.establish({ name: this.names[k]!, geometry: this.geometry }, this.now));
        return;
      }
    }
    this.drainCloneWrites(k); // the caller makes the clone not ready and drains its host I/O
    const s = this.set.establish({ name: this.names[k]!, geometry: this.geometry }, this.now);
    assert.equal(s.tracksToCopy, this.n);
    assert.equal(s.cloneAccess, 'not-ready');
    this.pb[k] = TrackBitmap.full(this.n);
    this.m4b[k] = new TrackBitmap(this.n);
    this.phase[k] = 'attached';
    this.cloneLogical[k] = null;
    this.ops[k] = { expected: TrackBitmap.full(this.n), done: new TrackBitmap(this.n) };
    this.persist();
  }

  split(k: number, differential: boolean): void {
    const id = this.sessionOf(k);
    if (id === undefined) return;
    const settled = (): boolean => ['synchronized', 'restored'].includes(this.set.status(id).state);
    if (settled() && this.stdWritesInFlight().length > 0 && this.prng.chance(0.3)) {
      this.expectRefusal(ErrorCode.VolumeBusy, () => this.set.split(id, differential, this.now));
    }
    this.drainStdWrites();
    if (!settled()) {
      this.expectRefusal(ErrorCode.InvalidState, () => this.set.split(id, differential, this.now));
      return;
    }
    const expected = this.pb[k]!.copy().or(this.m4b[k]!);
    const r = this.set.split(id, differential, this.now);
    if (differential) assert.ok(r.differential!.equals(expected), 'differential split marks exactly the changed tracks');
    else assert.equal(r.differential, null);
    assert.equal(r.status.cloneAccess, 'ready');
    // The oracle: the clone holds STD's image at the split instant.
    for (let t = 0; t < this.n; t++) assert.ok(this.trackEquals(this.clones[k]!, this.stdLogical, t), `split clone track ${t} differs from STD`);
    this.stats.splits++;
    this.cloneLogical[k] = this.stdLogical.slice();
    this.pb[k]!.clearAll();
    this.m4b[k]!.clearAll();
    this.phase[k] = 'split';
    this.ops[k] = null;
    this.persist();
  }

  reestablish(k: number): void {
    const id = this.sessionOf(k);
    if (id === undefined) return;
    if (this.set.status(id).state !== 'split') {
      this.expectRefusal(ErrorCode.InvalidState, () => this.set.reestablish(id, this.now));
      return;
    }
    this.drainCloneWrites(k);
    const expected = this.pb[k]!.copy().or(this.m4b[k]!);
    const s = this.set.reestablish(id, this.now);
    assert.equal(s.tracksToCopy, expected.count(), 'reestablish copies PB ∪ M4b');
    assert.ok(this.set.bitmaps(id).toClone.equals(expected));
    this.phase[k] = 'attached';
    this.cloneLogical[k] = null;
    this.ops[k] = { expected, done: new TrackBitmap(this.n) };
    this.persist();
  }

  restore(k: number, incremental: boolean): void {
    const id = this.sessionOf(k);
    if (id === undefined) return;
    const state = this.set.status(id).state;
    const other = this.set.list().some((s) => s.state === 'restoring' && s.sessionId !== id);
    if (state !== 'split' || other) {
      this.expectRefusal(ErrorCode.InvalidState, () => this.set.restore(id, incremental, this.now));
      return;
    }
    if (this.stdWritesInFlight().length > 0 && this.prng.chance(0.3)) {
      this.expectRefusal(ErrorCode.VolumeBusy, () => this.set.restore(id, incremental, this.now));
    }
    this.drainStdWrites();
    this.drainCloneWrites(k);
    const tracks = incremental ? this.pb[k]!.copy().or(this.m4b[k]!) : TrackBitmap.full(this.n);
    // The incremental rule is complete: outside PB ∪ M4b, STD and the clone already agree.
    const image = this.cloneLogical[k]!;
    for (let t = 0; t < this.n; t++) {
      if (!tracks.test(t)) assert.ok(this.trackEquals(this.stdLogical, image, t), `track ${t} differs but is not marked changed`);
    }
    const r = this.set.restore(id, incremental, this.now);
    assert.equal(r.status.tracksToCopy, tracks.count());
    assert.equal(r.othersMarkedTracks, tracks.count());
    assert.ok(this.set.bitmaps(id).toStd.equals(tracks));
    this.stats.restores++;
    this.stdLogical.set(image);
    this.pb[k]!.clearAll();
    for (let o = 0; o < this.k; o++) {
      if (o === k || this.phase[o] === 'none') continue;
      this.pb[o]!.or(tracks);
      if (this.phase[o] === 'attached' && !tracks.isEmpty()) this.ops[o] = null;
    }
    this.phase[k] = 'attached';
    this.cloneLogical[k] = null;
    this.ops[k] = { expected: tracks.copy(), done: new TrackBitmap(this.n) };
    this.persist();
  }

  terminate(k: number): void {
    const id = this.sessionOf(k);
    if (id === undefined) return;
    const s = this.set.status(id);
    if (s.state === 'restoring') {
      this.expectRefusal(ErrorCode.InvalidState, () => this.set.terminate(id));
      return;
    }
    this.drainCopies(s.serial);
    if (s.state !== 'split') this.drainStdWrites();
    const state = this.set.status(id).state;
    const r = this.set.terminate(id);
    assert.equal(r.cloneImage, state === 'synchronizing' ? 'partial' : 'whole');
    this.phase[k] = 'none';
    this.pb[k] = null;
    this.m4b[k] = null;
    this.cloneLogical[k] = null;
    this.ops[k] = null;
    this.persist();
  }

  // ------------------------------------------------------------ crash

  crash(): void {
    this.stats.crashes++;
    this.log('crash');
    const ambiguousStd = new TrackBitmap(this.n);
    for (const w of this.stdWritesInFlight()) ambiguousStd.setRange(w.first, w.last);
    const ambiguousClone = this.names.map(() => new TrackBitmap(this.n));
    for (const a of this.actions) if (a.kind === 'clone-write') ambiguousClone[a.clone]!.setRange(a.first, a.last);
    this.actions = [];

    this.set = decodeCloneSet(decodeRecord(this.persisted.bytes, 'clones/std'), this.stdRef);
    this.pb = this.persisted.pb.map((b) => b?.copy() ?? null);
    this.m4b = this.persisted.m4b.map((b) => b?.copy() ?? null);
    // What an activity log reports: every track written since the last persist, and then some.
    const extra = (b: TrackBitmap): TrackBitmap => {
      if (this.prng.chance(0.4)) {
        const f = this.prng.int(0, this.n - 1);
        b.setRange(f, Math.min(this.n - 1, f + this.prng.int(0, 4)));
      }
      return b;
    };
    const stdMaybe = extra(this.writtenStd.copy());
    const cloneMaybe = new Map(this.names.map((name, k) => [name, extra(this.writtenClones[k]!.copy())]));
    this.set.recover(stdMaybe, cloneMaybe, this.now);
    for (let k = 0; k < this.k; k++) {
      const id = this.sessionOf(k);
      assert.equal(id === undefined, this.phase[k] === 'none', 'commands are persisted before they take effect');
      if (id === undefined) continue;
      this.pb[k]!.or(stdMaybe);
      if (this.phase[k] === 'split') this.m4b[k]!.or(cloneMaybe.get(this.names[k]!)!);
      this.ops[k] = null;
    }
    // A write the host was never acknowledged may or may not have landed: the image is whatever
    // recovery now converges to — STD's data, or the clone's where a restore will bring it back.
    const restoring = this.set.list().find((s) => s.state === 'restoring');
    const pendingRestore = restoring ? this.set.bitmaps(restoring.sessionId).toStd : undefined;
    for (let t = ambiguousStd.nextSet(0); t !== -1; t = ambiguousStd.nextSet(t + 1)) {
      const source = pendingRestore?.test(t) ? this.clones[this.cloneIndex(restoring!.clone)]! : this.std;
      this.stdLogical.set(source.subarray(t * CELLS, (t + 1) * CELLS), t * CELLS);
    }
    for (let k = 0; k < this.k; k++) {
      const image = this.cloneLogical[k];
      const amb = ambiguousClone[k]!;
      if (!image) continue;
      for (let t = amb.nextSet(0); t !== -1; t = amb.nextSet(t + 1)) image.set(this.clones[k]!.subarray(t * CELLS, (t + 1) * CELLS), t * CELLS);
    }
    this.persist(); // the recovered state is the new baseline
  }

  // ------------------------------------------------------------ checks

  /** Finishes the I/O in flight (admitted writes, copies) and checks every invariant of the oracle. */
  quiesceAndCheck(): void {
    this.drain(() => this.actions.some((a) => (a.kind === 'std-write' && a.stage === 'apply') || a.kind === 'clone-write' || a.kind === 'copy'),
      (a) => (a.kind === 'std-write' && a.stage === 'apply') || a.kind === 'clone-write' || a.kind === 'copy');
    this.set.checkInvariants();
    const restoring = this.set.list().find((s) => s.state === 'restoring');
    const pendingRestore = restoring ? this.set.bitmaps(restoring.sessionId).toStd : new TrackBitmap(this.n);
    for (let t = 0; t < this.n; t++) {
      if (!pendingRestore.test(t)) assert.ok(this.trackEquals(this.std, this.stdLogical, t), `STD track ${t} is not its logical image`);
    }
    for (let k = 0; k < this.k; k++) {
      const id = this.sessionOf(k);
      assert.equal(id === undefined, this.phase[k] === 'none');
      if (id === undefined) continue;
      const s = this.set.status(id);
      const bits = this.set.bitmaps(id);
      assert.equal(s.state === 'split', this.phase[k] === 'split', `phase of ${this.names[k]}`);
      assert.ok(bits.protection.equals(this.pb[k]!), `protection bits of ${this.names[k]}: core ${bits.protection.toArray()} model ${this.pb[k]!.toArray()}`);
      assert.ok(bits.cloneChanged.equals(this.m4b[k]!), `clone-changed bits of ${this.names[k]}`);
      const clone = this.clones[k]!;
      if (s.state === 'split') {
        const image = this.cloneLogical[k]!;
        const changed = bits.protection.copy().or(bits.cloneChanged);
        for (let t = 0; t < this.n; t++) {
          assert.ok(this.trackEquals(clone, image, t), `split clone ${this.names[k]} track ${t} is not its image`);
          // Never miss: wherever STD and the clone differ, a reestablish or restore would copy.
          if (!this.trackEquals(clone, this.stdLogical, t)) assert.ok(changed.test(t), `track ${t} differs but no bit says so`);
        }
      } else {
        for (let t = 0; t < this.n; t++) {
          if (!bits.toClone.test(t)) assert.ok(this.trackEquals(clone, this.stdLogical, t), `attached clone ${this.names[k]} (${s.state}) track ${t} is stale but not marked`);
        }
        if (s.state === 'restored') {
          for (let t = 0; t < this.n; t++) assert.ok(this.trackEquals(this.std, clone, t), 'restored: STD equals the clone');
        }
      }
    }
  }

  // ------------------------------------------------------------ driver

  private hostIo(): void {
    const r = this.prng.next();
    if (r < 0.45) {
      const s = this.span();
      this.actions.push({ kind: 'std-write', ...s, stage: 'decide', writeId: 0, after: [], pending: [], failed: [] });
    } else if (r < 0.65) {
      const s = this.span();
      this.actions.push({ kind: 'std-read', first: s.first, last: s.last });
    } else {
      const k = this.prng.int(0, this.k - 1);
      const id = this.sessionOf(k);
      if (id === undefined) return;
      if (this.set.access(id).clone !== 'ready') {
        assert.throws(() => this.set.cloneWrite(id, 0, 0), (e: unknown) => isTidemarkError(e, ErrorCode.VolumeNotReady));
        return;
      }
      if (r < 0.85) {
        const s = this.span();
        const { writeId } = this.set.cloneWrite(id, s.first, s.last);
        this.log(`clone write ${writeId} ${this.names[k]} tracks ${s.first}..${s.last}`);
        this.m4b[k]!.setRange(s.first, s.last);
        const after = this.actions.filter((b): b is CloneWrite => b.kind === 'clone-write' && b.clone === k && b.first <= s.last && s.first <= b.last)
          .map((b) => b.writeId);
        this.actions.push({ kind: 'clone-write', clone: k, ...s, writeId, after, applied: false });
      } else {
        this.set.checkCloneAccess(id, 'read');
        const image = this.cloneLogical[k]!;
        for (let t = 0; t < this.n; t++) {
          if (!this.underCloneWrite(k, t)) assert.ok(this.trackEquals(this.clones[k]!, image, t), `read of split clone track ${t}`);
        }
      }
    }
  }

  private engine(): void {
    const attached = this.set.list().filter((s) => s.state !== 'split');
    if (attached.length === 0) return;
    const s = this.prng.pick(attached);
    const clone = this.cloneIndex(s.clone);
    const tickets = this.set.nextCopy(s.sessionId, this.prng.int(1, 6));
    if (tickets.length > 0) this.log(`engine ${s.clone}: ${tickets.map((t) => `${t.direction}:${t.track}`).join(' ')}`);
    for (const ticket of tickets) {
      this.actions.push({ kind: 'copy', ticket, clone, data: null, written: false });
    }
  }

  private command(): void {
    this.stats.commands++;
    const k = this.prng.int(0, this.k - 1);
    const id = this.sessionOf(k);
    const state = id === undefined ? 'none' : this.set.status(id).state;
    type Command = 'establish' | 'split' | 'split-diff' | 'reestablish' | 'restore' | 'restore-inc' | 'terminate' | 'wait';
    const all: Command[] = ['establish', 'split', 'split-diff', 'reestablish', 'restore', 'restore-inc', 'terminate'];
    // Mostly what an operator would run in this state; a quarter at random, to exercise refusals.
    const sensible: Record<string, Command[]> = {
      none: ['establish'],
      synchronizing: ['wait', 'wait', 'wait', 'terminate'],
      synchronized: ['split', 'split-diff', 'split', 'terminate'],
      restored: ['split', 'split-diff', 'terminate'],
      restoring: ['wait'],
      split: ['reestablish', 'reestablish', 'restore', 'restore-inc', 'restore-inc', 'establish', 'terminate'],
    };
    const command = this.prng.chance(0.25) ? this.prng.pick(all) : this.prng.pick(sensible[state]!);
    this.log(`command ${command} ${this.names[k]} (state ${state})`);
    switch (command) {
      case 'establish': return this.establish(k);
      case 'split': return this.split(k, false);
      case 'split-diff': return this.split(k, true);
      case 'reestablish': return this.reestablish(k);
      case 'restore': return this.restore(k, false);
      case 'restore-inc': return this.restore(k, true);
      case 'terminate': return this.terminate(k);
      case 'wait': return;
    }
  }

  run(): void {
    if (this.k === 17) {
      for (let k = 0; k < 17; k++) this.establish(k);
      assert.equal(this.set.sessionCount, 16, 'the 17th session was refused');
      assert.equal(this.stats.refused, 1);
    }
    for (let i = 0; i < STEPS; i++) {
      const r = this.prng.next();
      if (r < 0.5 && this.actions.length > 0) {
        const a = this.prng.pick(this.actions);
        if (this.step(a)) this.actions.splice(this.actions.indexOf(a), 1);
      } else if (r < 0.72) {
        if (this.actions.length < MAX_ACTIONS) this.hostIo();
      } else if (r < 0.9) {
        this.engine();
      } else if (r < 0.96) {
        this.command();
      } else if (r < 0.972) {
        this.persist();
      } else if (r < 0.976) {
        this.crash();
      } else {
        this.quiesceAndCheck();
      }
    }
    this.liveness();
  }

  /** Host I/O stops; everything in flight finishes and every copy completes; then split all. */
  private liveness(): void {
    for (let guard = 0; ; guard++) {
      assert.ok(guard < 200_000, 'copies converge');
      if (this.actions.length > 0) {
        const a = this.prng.pick(this.actions);
        if (this.step(a)) this.actions.splice(this.actions.indexOf(a), 1);
        continue;
      }
      const work = this.set.list().filter((s) => s.tracksToCopy > 0);
      if (work.length === 0) break;
      this.engine();
    }
    this.quiesceAndCheck();
    for (let k = 0; k < this.k; k++) {
      const id = this.sessionOf(k);
      if (id === undefined) continue;
      const state = this.set.status(id).state;
      assert.ok(state === 'split' || state === 'synchronized' || state === 'restored', `settled: ${state}`);
      if (state !== 'split') this.split(k, true);
    }
    this.quiesceAndCheck();
  }
}

function runSeed(seed: number): Sim['stats'] {
  const sim = new Sim(seed);
  try {
    sim.run();
  } catch (error) {
    const e = error as Error;
    e.message = `clone model failed with seed ${seed} (rerun: TIDEMARK_SEED=${seed} node scripts/run-tests.mjs unit/clone-core-model): ${e.message}\nlast events:\n${sim.trace.join('\n')}`;
    throw e;
  }
  return sim.stats;
}

test('clone sessions against a byte-array model: random I/O, commands, copies and crashes', (t) => {
  const one = process.env.TIDEMARK_SEED;
  const seeds = one !== undefined ? [Number(one)] : Array.from({ length: Number(process.env.TIDEMARK_CLONE_SEEDS ?? 300) }, (_, i) => 0x5eed0000 + i);
  const total = { commands: 0, refused: 0, crashes: 0, reads: 0, copies: 0, redo: 0, opsChecked: 0, splits: 0, restores: 0, restoreFirst: 0, mirrorFailures: 0 };
  for (const seed of seeds) {
    const s = runSeed(seed);
    for (const key of Object.keys(total) as Array<keyof typeof total>) total[key] += s[key];
  }
  t.diagnostic(`${seeds.length} seeds: ${JSON.stringify(total)}`);
  // The run must have exercised what it claims to check.
  if (seeds.length >= 100) {
    assert.ok(total.crashes > 100 && total.redo > 10 && total.opsChecked > 100 && total.refused > 100 && total.splits > 100 &&
      total.restores > 50 && total.restoreFirst > 50 && total.mirrorFailures > 10, JSON.stringify(total));
  }
});
