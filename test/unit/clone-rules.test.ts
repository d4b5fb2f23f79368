// The bitmap rules of each clone command, checked against seed 001 paragraph by paragraph
// (reference/seeds/001_f9b8b746165c93f8.txt ¶0029–0078), with exact bit counts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CloneSet } from '../../src/core/clone/clone-set.js';
import type { CloneSessionStatus, VolumeRef } from '../../src/core/clone/clone-types.js';
import { ErrorCode, isTidemarkError } from '../../src/core/errors.js';
import { makeGeometry } from '../../src/core/volume/geometry.js';

const TRACKS = 100;
const TRACK_BYTES = 4096;
const geometry = makeGeometry(TRACKS * TRACK_BYTES, TRACK_BYTES);
const STD: VolumeRef = { name: 'std', geometry };
const vol = (name: string): VolumeRef => ({ name, geometry });

/** Runs every copy of a session to completion, with no host I/O in between. */
function drain(set: CloneSet, id: number): CloneSessionStatus {
  for (;;) {
    const tickets = set.nextCopy(id, 64);
    if (tickets.length === 0) break;
    for (const t of tickets) assert.equal(set.copyDone(t).kind, 'done');
  }
  return set.status(id);
}

/** Establish and synchronize a session. */
function synced(set: CloneSet, name: string): number {
  const id = set.establish(vol(name), 0).sessionId;
  assert.equal(drain(set, id).state, 'synchronized');
  return id;
}

function write(set: CloneSet, first: number, last = first): void {
  const d = set.stdWrite(first, last);
  assert.equal(d.kind, 'proceed');
  if (d.kind === 'proceed') set.stdWriteDone(d.writeId);
}

function cloneWrite(set: CloneSet, id: number, first: number, last = first): void {
  set.cloneWriteDone(set.cloneWrite(id, first, last).writeId);
}

const rejects = (code: string) => (e: unknown): boolean => isTidemarkError(e) && e.code === code;

test('¶0032–0036, ¶0069: establish marks every track to copy and every protection bit changed; the clone is not ready', () => {
  const set = new CloneSet(STD);
  const s = set.establish(vol('bcv1'), 5);
  assert.equal(s.sessionId, 0);
  assert.equal(s.state, 'synchronizing');
  assert.equal(s.operation, 'establish');
  assert.equal(s.tracksToCopy, TRACKS);
  assert.equal(s.protectedTracks, TRACKS);
  assert.equal(s.cloneChangedTracks, 0);
  assert.equal(s.direction, 'to-clone');
  assert.deepEqual(set.access(0), { std: 'ready', clone: 'not-ready' });
  assert.throws(() => set.cloneWrite(0, 1, 1), rejects(ErrorCode.VolumeNotReady));
  assert.throws(() => set.checkCloneAccess(0, 'read'), rejects(ErrorCode.VolumeNotReady));
  const done = drain(set, 0);
  assert.equal(done.state, 'synchronized');
  assert.equal(done.tracksCopied, TRACKS);
  assert.equal(done.bytesCopied, TRACKS * TRACK_BYTES);
  assert.equal(done.tracksToCopy, 0);
  assert.equal(done.protectedTracks, TRACKS, '¶0069: PB stays changed until the split');
});

test('¶0037, ¶0056: split only from synchronized or restored, and only with STD writes drained', () => {
  const set = new CloneSet(STD);
  set.establish(vol('bcv1'), 0);
  assert.throws(() => set.split(0, false, 1), rejects(ErrorCode.InvalidState));
  drain(set, 0);
  const d = set.stdWrite(3, 4);
  assert.equal(d.kind, 'proceed');
  assert.throws(() => set.split(0, false, 1), rejects(ErrorCode.VolumeBusy), 'a write in flight would be torn by the split');
  if (d.kind === 'proceed') set.stdWriteDone(d.writeId);
  assert.equal(set.split(0, false, 1).status.state, 'split');
  assert.throws(() => set.split(0, false, 2), rejects(ErrorCode.InvalidState), 'already split');
});

test('¶0040, ¶0043–0044, ¶0070: a full split clears the session bits and makes the clone ready', () => {
  const set = new CloneSet(STD);
  synced(set, 'bcv1');
  write(set, 7);
  const { status, differential } = set.split(0, false, 9);
  assert.equal(differential, null);
  assert.equal(status.protectedTracks, 0);
  assert.equal(status.cloneChangedTracks, 0);
  assert.equal(status.splitAtMs, 9);
  assert.deepEqual(set.access(0), { std: 'ready', clone: 'ready' });
  set.checkCloneAccess(0, 'write');
});

test('¶0029, ¶0045, ¶0071, ¶0074: an STD write marks its tracks changed in every session; ¶0030, ¶0046, ¶0067: a clone write marks only its own bits', () => {
  const set = new CloneSet(STD);
  const a = synced(set, 'bcv1');
  const b = synced(set, 'bcv2');
  set.split(a, false, 1);
  set.split(b, false, 1);
  write(set, 1);
  write(set, 10, 12);
  assert.equal(set.status(a).protectedTracks, 4);
  assert.equal(set.status(b).protectedTracks, 4);
  assert.deepEqual(set.bitmaps(a).protection.toArray(), [1, 10, 11, 12]);
  cloneWrite(set, a, 0);
  cloneWrite(set, a, 50, 51);
  assert.equal(set.status(a).cloneChangedTracks, 3);
  assert.equal(set.status(b).cloneChangedTracks, 0);
  assert.equal(set.status(a).protectedTracks, 4, 'a clone write does not touch the PB table');
});

test('¶0041, ¶0078: a differential split reports the tracks the session saw change (the first one: all)', () => {
  const set = new CloneSet(STD);
  synced(set, 'bcv1');
  const first = set.split(0, true, 1).differential!;
  assert.equal(first.count(), TRACKS, 'after establish every track changed on the clone');
  write(set, 2);
  write(set, 40, 44);
  set.reestablish(0, 2);
  write(set, 60); // ¶0054: writes during the reestablish count too
  drain(set, 0);
  const second = set.split(0, true, 3).differential!;
  assert.deepEqual(second.toArray(), [2, 40, 41, 42, 43, 44, 60]);
  assert.equal(set.status(0).protectedTracks, 0);
});

test('¶0048–0053, ¶0075: reestablish copies exactly the tracks changed on STD OR on the clone', () => {
  const set = new CloneSet(STD);
  synced(set, 'bcv1');
  set.split(0, false, 1);
  write(set, 1, 3);
  cloneWrite(set, 0, 3, 5);
  const s = set.reestablish(0, 2);
  assert.equal(s.state, 'synchronizing');
  assert.equal(s.operation, 'reestablish');
  assert.equal(s.tracksToCopy, 5, '{1,2,3} ∪ {3,4,5}');
  assert.equal(s.tracksCopied, 0);
  assert.deepEqual(set.access(0).clone, 'not-ready', '¶0050 step 156');
  const tickets = set.nextCopy(0, 64);
  assert.deepEqual(tickets.map((t) => t.track), [1, 2, 3, 4, 5]);
  assert.ok(tickets.every((t) => t.direction === 'to-clone'));
  for (const t of tickets) set.copyDone(t);
  const done = set.status(0);
  assert.equal(done.state, 'synchronized');
  assert.equal(done.tracksCopied, 5);
  assert.equal(done.bytesCopied, 5 * TRACK_BYTES);
  // A reestablish with nothing changed is synchronized at once.
  set.split(0, false, 3);
  assert.equal(set.reestablish(0, 4).state, 'synchronized');
});

test('¶0055–0059: restore copies every track clone → STD; own PB unchanged, every other session all changed', () => {
  const set = new CloneSet(STD);
  const a = synced(set, 'bcv1');
  const b = synced(set, 'bcv2');
  set.split(a, false, 1);
  set.split(b, false, 1);
  write(set, 5);
  const { status, othersMarkedTracks } = set.restore(a, false, 2);
  assert.equal(status.state, 'restoring');
  assert.equal(status.operation, 'restore');
  assert.equal(status.direction, 'to-std');
  assert.equal(status.tracksToCopy, TRACKS);
  assert.equal(status.protectedTracks, 0, 'step 182');
  assert.equal(othersMarkedTracks, TRACKS);
  assert.equal(set.status(b).protectedTracks, TRACKS, 'step 183');
  assert.equal(set.access(a).clone, 'not-ready', 'step 176');
  const done = drain(set, a);
  assert.equal(done.state, 'restored');
  assert.equal(done.tracksCopied, TRACKS);
  assert.equal(set.split(a, false, 3).status.state, 'split', 'a restored session splits like a synchronized one');
});

test('¶0056: restore is refused with STD writes pending, from an attached clone, or during another restore', () => {
  const set = new CloneSet(STD);
  const a = synced(set, 'bcv1');
  const b = synced(set, 'bcv2');
  assert.throws(() => set.restore(a, false, 1), rejects(ErrorCode.InvalidState), 'the clone is not split');
  set.split(a, false, 1);
  set.split(b, false, 1);
  const d = set.stdWrite(0, 0);
  assert.throws(() => set.restore(a, true, 1), rejects(ErrorCode.VolumeBusy));
  if (d.kind === 'proceed') set.stdWriteDone(d.writeId);
  const w = set.cloneWrite(a, 0, 0);
  assert.throws(() => set.restore(a, true, 1), rejects(ErrorCode.VolumeBusy), 'a clone write in flight');
  set.cloneWriteDone(w.writeId);
  set.restore(a, false, 2);
  assert.throws(() => set.restore(b, false, 3), rejects(ErrorCode.InvalidState), 'one restore at a time');
  assert.throws(() => set.terminate(a), rejects(ErrorCode.InvalidState), 'STD would hold two images');
});

test('¶0060–0063, ¶0076: incremental restore copies only tracks changed on either side; others marked for those tracks', () => {
  const set = new CloneSet(STD);
  const a = synced(set, 'bcv1');
  const b = synced(set, 'bcv2');
  set.split(a, false, 1);
  set.split(b, false, 1);
  write(set, 10, 14); // both PB: 5 tracks
  cloneWrite(set, a, 14, 17); // a's M4b: 4 tracks, 1 shared
  cloneWrite(set, b, 90);
  const { status, othersMarkedTracks } = set.restore(a, true, 2);
  assert.equal(status.tracksToCopy, 8, '{10..14} ∪ {14..17}');
  assert.equal(status.operation, 'restore-incremental');
  assert.equal(status.protectedTracks, 0, 'step 205');
  assert.equal(othersMarkedTracks, 8);
  assert.deepEqual(set.bitmaps(b).protection.toArray(), [10, 11, 12, 13, 14, 15, 16, 17], 'step 206: b had 10..14, gains 15..17');
  assert.equal(set.status(b).cloneChangedTracks, 1, 'b’s own changes untouched');
  const tickets = set.nextCopy(a, 64);
  assert.deepEqual(tickets.map((t) => t.track), [10, 11, 12, 13, 14, 15, 16, 17]);
  assert.ok(tickets.every((t) => t.direction === 'to-std'));
  for (const t of tickets) set.copyDone(t);
  assert.equal(set.status(a).state, 'restored');
  assert.equal(set.status(a).tracksCopied, 8);
});

test('a restore marks attached sessions to copy again, only after each track is restored', () => {
  const set = new CloneSet(STD);
  const a = synced(set, 'bcv1');
  const b = synced(set, 'bcv2');
  set.split(a, false, 1);
  write(set, 3);
  set.restore(a, true, 2);
  const sb = set.status(b);
  assert.equal(sb.state, 'synchronizing', 'b’s clone must follow STD');
  assert.equal(sb.operation, 'resync');
  assert.equal(sb.tracksToCopy, 1);
  assert.deepEqual(set.nextCopy(b, 64), [], 'track 3 is not restored yet');
  const [t] = set.nextCopy(a, 64);
  set.copyDone(t!);
  const [u] = set.nextCopy(b, 64);
  assert.equal(u!.track, 3);
  set.copyDone(u!);
  assert.equal(set.status(b).state, 'synchronized');
});

test('FIG. 10 (¶0066–0078): the two-session example event by event', () => {
  const set = new CloneSet(STD);
  const T = 7;
  // 230: a write to STD before any session: nothing to mark.
  write(set, T);
  // 233/234: establish DDF(1) with BCV(1), synchronize, full split.
  const one = synced(set, 'bcv1');
  assert.equal(set.split(one, false, 1).status.protectedTracks, 0);
  // 231: HOST B writes BCV(1).
  cloneWrite(set, one, T);
  // 235: STD write: DDF(1) changed.
  write(set, T);
  assert.equal(set.status(one).protectedTracks, 1);
  // 236: establish DDF(2): all its bits changed, DDF(1) unaffected.
  const two = set.establish(vol('bcv2'), 2).sessionId;
  assert.equal(set.status(two).protectedTracks, TRACKS);
  assert.equal(set.status(one).protectedTracks, 1);
  drain(set, two);
  // 237: full split of DDF(2).
  set.split(two, false, 3);
  // 240: STD write marks both.
  write(set, T);
  assert.equal(set.status(one).protectedTracks, 1);
  assert.equal(set.status(two).protectedTracks, 1);
  // 241: reestablish DDF(1): PB(1) ∪ M4b(1) = {T}.
  assert.equal(set.reestablish(one, 4).tracksToCopy, 1);
  drain(set, one);
  // 242: incremental restore from BCV(2) (say its host changed T+1): DDF(2) unchanged, DDF(1) changed.
  cloneWrite(set, two, T + 1);
  const r = set.restore(two, true, 5);
  assert.equal(r.status.tracksToCopy, 2);
  assert.equal(set.status(two).protectedTracks, 0);
  assert.deepEqual(set.bitmaps(one).protection.toArray(), [T, T + 1]);
  drain(set, two);
  drain(set, one);
  // 243: STD write marks every session.
  write(set, 30);
  assert.ok(set.bitmaps(one).protection.test(30) && set.bitmaps(two).protection.test(30));
  // 244: differential split of BCV(2): what changed on BCV(2) since its last split propagates —
  // its host's T+1 and the mirrored STD write 30 (the seed's DDF(2) bits give {30}; T+1 is added
  // because a clone's own changes must reach its mirrors too). T is not: the restore copied T
  // from BCV(2) to STD, so BCV(2)'s T never changed.
  const diff = set.split(two, true, 6).differential!;
  assert.deepEqual(diff.toArray(), [T + 1, 30]);
});

test('a 17th session is refused with TM_ERR_LIMIT_EXCEEDED; terminate frees its slot', () => {
  const set = new CloneSet(STD);
  for (let i = 0; i < 16; i++) assert.equal(set.establish(vol(`c${i}`), 0).sessionId, i);
  assert.throws(() => set.establish(vol('c16'), 0), (e: unknown) =>
    isTidemarkError(e, ErrorCode.LimitExceeded) && (e.details as { limit: number }).limit === 16);
  assert.throws(() => set.establish(vol('c3'), 0), rejects(ErrorCode.InvalidState), 'c3 is synchronizing');
  const t = set.terminate(5);
  assert.equal(t.status.state, 'terminated');
  assert.equal(t.cloneImage, 'partial');
  assert.equal(set.establish(vol('c16'), 0).sessionId, 5);
  assert.equal(set.sessionCount, 16);
});

test('establish validates its clone, and re-establishing a split session copies everything again', () => {
  const set = new CloneSet(STD);
  assert.throws(() => set.establish(vol('std'), 0), rejects(ErrorCode.InvalidArgument));
  assert.throws(() => set.establish({ name: 'small', geometry: makeGeometry(4096 * 10, 4096) }, 0), rejects(ErrorCode.InvalidArgument));
  const id = synced(set, 'bcv1');
  set.split(id, false, 1);
  cloneWrite(set, id, 4);
  const again = set.establish(vol('bcv1'), 2);
  assert.equal(again.sessionId, id);
  assert.equal(again.tracksToCopy, TRACKS);
  assert.equal(again.cloneChangedTracks, 0);
  assert.throws(() => set.status(9), rejects(ErrorCode.NotFound));
});

test('execute() dispatches every command kind', () => {
  const set = new CloneSet(STD);
  const e = set.execute({ kind: 'establish', clone: vol('bcv1') }, 0);
  assert.equal(e.kind, 'established');
  drain(set, 0);
  const s = set.execute({ kind: 'split', sessionId: 0, differential: true }, 1);
  assert.ok(s.kind === 'split' && s.result.differential?.count() === TRACKS);
  assert.equal(set.execute({ kind: 'reestablish', sessionId: 0 }, 2).kind, 'reestablished');
  set.execute({ kind: 'split', sessionId: 0, differential: false }, 3);
  assert.equal(set.execute({ kind: 'restore', sessionId: 0, incremental: true }, 4).kind, 'restore-started');
  const t = set.execute({ kind: 'terminate', sessionId: 0 }, 5);
  assert.ok(t.kind === 'terminated' && t.result.cloneImage === 'whole');
});
