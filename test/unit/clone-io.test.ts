// Host I/O decisions, copy races, persistence and crash recovery of the clone-session core.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TrackBitmap } from '../../src/core/bitmap/track-bitmap.js';
import { decodeCloneSet, encodeCloneSet } from '../../src/core/clone/clone-codec.js';
import { CloneSet } from '../../src/core/clone/clone-set.js';
import type { CopyTicket, VolumeRef } from '../../src/core/clone/clone-types.js';
import { ErrorCode, isTidemarkError } from '../../src/core/errors.js';
import { decodeRecord, encodeRecord } from '../../src/core/lib/checksummed-record.js';
import { makeGeometry } from '../../src/core/volume/geometry.js';

const TRACKS = 40;
const geometry = makeGeometry(TRACKS * 4096, 4096);
const STD: VolumeRef = { name: 'std', geometry };
const vol = (name: string): VolumeRef => ({ name, geometry });

function drain(set: CloneSet, id: number): void {
  for (let tickets = set.nextCopy(id, 64); tickets.length > 0; tickets = set.nextCopy(id, 64)) {
    for (const t of tickets) set.copyDone(t);
  }
}

function proceed(set: CloneSet, first: number, last = first) {
  const d = set.stdWrite(first, last);
  assert.equal(d.kind, 'proceed');
  if (d.kind !== 'proceed') throw new Error('unreachable');
  return d;
}

test('while synchronizing, a write is mirrored only to tracks the clone already holds', () => {
  const set = new CloneSet(STD);
  set.establish(vol('c'), 0);
  const tickets = set.nextCopy(0, 10); // tracks 0..9 in flight
  for (const t of tickets.slice(0, 5)) set.copyDone(t); // 0..4 copied
  const d = proceed(set, 3, 12);
  assert.deepEqual(d.mirrors.map((m) => m.spans), [[{ first: 3, last: 4 }]]);
  set.stdWriteDone(d.writeId);
  // Tracks 5..9 were in flight when the write came: those copies may carry old data and are redone.
  for (const t of tickets.slice(5)) assert.deepEqual(set.copyDone(t), { kind: 'redo' });
  assert.equal(set.status(0).tracksToCopy, TRACKS - 5);
  assert.equal(set.status(0).tracksCopied, 5);
  drain(set, 0);
  assert.equal(set.status(0).state, 'synchronized');
  assert.equal(set.status(0).tracksCopied, TRACKS, 'each track counted once');
  // Synchronized: every write is mirrored whole; split sessions mirror nothing.
  const e = proceed(set, 0, TRACKS - 1);
  assert.deepEqual(e.mirrors[0]!.spans, [{ first: 0, last: TRACKS - 1 }]);
  set.stdWriteDone(e.writeId);
  set.split(0, false, 1);
  const f = proceed(set, 0, 0);
  assert.deepEqual(f.mirrors, []);
  set.stdWriteDone(f.writeId);
});

test('a copy is not handed out for a track under an STD write in flight', () => {
  const set = new CloneSet(STD);
  set.establish(vol('c'), 0);
  const d = proceed(set, 0, 1);
  assert.deepEqual(d.mirrors, [], 'nothing copied yet: nothing to mirror');
  const tickets = set.nextCopy(0, 3);
  assert.deepEqual(tickets.map((t) => t.track), [2, 3, 4]);
  set.stdWriteDone(d.writeId);
  for (const t of tickets) set.copyDone(t);
  const rest = set.nextCopy(0, 64);
  assert.deepEqual(rest.slice(0, 2).map((t) => t.track), [5, 6]);
  assert.ok(rest.some((t) => t.track === 0) && rest.some((t) => t.track === 1), 'the scan wraps around to them');
});

test('nextCopy is bounded per session, and a failed copy is handed out again', () => {
  const set = new CloneSet({ name: 'big', geometry: makeGeometry(1000 * 4096, 4096) });
  set.establish({ name: 'c', geometry: makeGeometry(1000 * 4096, 4096) }, 0);
  const first = set.nextCopy(0, 500);
  assert.equal(first.length, 64);
  assert.equal(set.nextCopy(0, 10).length, 0, 'no room until some finish');
  set.copyFailed(first[0]!);
  assert.ok(set.bitmaps(0).toClone.test(first[0]!.track), 'still to copy');
  assert.equal(set.status(0).copiesInFlight, 63);
  // The scan moves on from where it stopped (fairness), and comes back to the failed track.
  const seen: number[] = [];
  for (const t of first.slice(1)) set.copyDone(t);
  for (let tickets = set.nextCopy(0, 64); tickets.length > 0; tickets = set.nextCopy(0, 64)) {
    for (const t of tickets) {
      seen.push(t.track);
      set.copyDone(t);
    }
  }
  assert.equal(seen[0], 64);
  assert.ok(seen.includes(first[0]!.track));
  assert.equal(set.status(0).state, 'synchronized');
  assert.equal(set.status(0).tracksCopied, 1000);
});

test('instant restore: reads and writes of unrestored tracks restore them first; the write is then mirrored', () => {
  const set = new CloneSet(STD);
  set.establish(vol('c'), 0);
  drain(set, 0);
  set.split(0, false, 1);
  set.restore(0, false, 2);
  const r = set.stdRead(5, 6);
  assert.deepEqual(r, { kind: 'restore-first', sessionId: 0, serial: 1, tracks: [5, 6] });
  const w = set.stdWrite(6, 7);
  assert.equal(w.kind, 'restore-first');
  // The host claims 5 and 6; then the background engine takes the rest, 7 among them.
  const c5 = set.claimRestore(0, 5);
  const c6 = set.claimRestore(0, 6);
  assert.equal(c5.kind, 'claimed');
  const background = set.nextCopy(0, 64);
  assert.equal(background.length, TRACKS - 2, 'claimed tracks are not handed out twice');
  const bg = background.find((t) => t.track === 7)!;
  for (const t of background) if (t !== bg) set.copyDone(t);
  assert.equal(set.claimRestore(0, 7).kind, 'in-flight');
  assert.equal(set.claimRestore(0, 5).kind, 'in-flight');
  if (c5.kind === 'claimed') set.copyDone(c5.ticket);
  if (c6.kind === 'claimed') set.copyDone(c6.ticket);
  assert.deepEqual(set.stdRead(5, 6), { kind: 'proceed' });
  assert.equal(set.stdWrite(6, 7).kind, 'restore-first', '7 is still in flight');
  set.copyDone(bg);
  assert.equal(set.claimRestore(0, 7).kind, 'not-needed');
  const ok = proceed(set, 6, 7);
  assert.deepEqual(ok.mirrors[0]!.spans, [{ first: 6, last: 7 }], 'a restored track is mirrored: STD and clone stay equal');
  set.stdWriteDone(ok.writeId);
  drain(set, 0);
  assert.equal(set.status(0).state, 'restored');
  assert.equal(set.status(0).tracksCopied, TRACKS);
});

test('a failed mirror write becomes copy work and must be persisted before the host is acknowledged', () => {
  const set = new CloneSet(STD);
  set.establish(vol('c'), 0);
  drain(set, 0);
  const d = proceed(set, 8, 9);
  assert.deepEqual(set.stdWriteDone(d.writeId, d.mirrors), { persistBeforeAck: true });
  const s = set.status(0);
  assert.equal(s.state, 'synchronizing');
  assert.equal(s.operation, 'resync');
  assert.equal(s.tracksToCopy, 2);
  const e = proceed(set, 20);
  assert.deepEqual(set.stdWriteDone(e.writeId), { persistBeforeAck: false });
});

test('a copy ticket that outlives its session is ignored, even when the slot is reused', () => {
  const set = new CloneSet(STD);
  set.establish(vol('c'), 0);
  const [t] = set.nextCopy(0, 1);
  assert.throws(() => set.terminate(0), (e: unknown) => isTidemarkError(e, ErrorCode.VolumeBusy), 'a copy would land on a ready clone');
  set.copyFailed(t!);
  const d = set.stdWrite(0, 0);
  assert.throws(() => set.terminate(0), (e: unknown) => isTidemarkError(e, ErrorCode.VolumeBusy), 'so would a mirror write');
  if (d.kind === 'proceed') set.stdWriteDone(d.writeId);
  set.terminate(0);
  set.establish(vol('d'), 1);
  assert.deepEqual(set.copyDone(t!), { kind: 'ignored' });
  assert.equal(set.status(0).tracksCopied, 0);
  set.copyFailed(t!);
});

test('host access: STD always ready; the clone only when split', () => {
  const set = new CloneSet(STD);
  set.establish(vol('c'), 0);
  assert.deepEqual(set.access(0), { std: 'ready', clone: 'not-ready' });
  drain(set, 0);
  assert.equal(set.access(0).clone, 'not-ready');
  set.split(0, false, 1);
  assert.equal(set.access(0).clone, 'ready');
  set.restore(0, true, 2);
  assert.equal(set.access(0).clone, 'not-ready');
  assert.throws(() => set.cloneWrite(0, 0, 0), (e: unknown) => isTidemarkError(e, ErrorCode.VolumeNotReady));
  drain(set, 0);
  assert.equal(set.access(0).clone, 'not-ready', 'restored: still attached');
});

test('encode/decode round-trips every session inside a checksummed record; damage is MetadataCorrupt', () => {
  const set = new CloneSet(STD);
  set.establish(vol('alpha'), 10);
  set.establish(vol('βeta'), 11);
  drain(set, 1);
  set.split(1, false, 12);
  set.cloneWriteDone(set.cloneWrite(1, 3, 4).writeId);
  proceedDone(set, 7);
  for (const t of set.nextCopy(0, 5)) set.copyDone(t);
  const bytes = encodeRecord(encodeCloneSet(set));
  const back = decodeCloneSet(decodeRecord(bytes, 'clones/std'), STD);
  assert.deepEqual(back.list(), set.list());
  for (const id of [0, 1]) {
    const a = set.bitmaps(id);
    const b = back.bitmaps(id);
    for (const k of ['protection', 'cloneChanged', 'toClone', 'toStd'] as const) assert.ok(a[k].equals(b[k]), `${k} of ${id}`);
  }
  // A new session after reload gets a fresh serial (old tickets can never match it).
  back.terminate(0);
  assert.equal(back.establish(vol('gamma'), 13).serial, 3);

  const raw = encodeCloneSet(set);
  const corrupt = (bytes: Uint8Array, other = STD): void => assert.throws(() => decodeCloneSet(bytes, other),
    (e: unknown) => isTidemarkError(e, ErrorCode.MetadataCorrupt));
  corrupt(raw.subarray(0, raw.length - 1));
  corrupt(new Uint8Array([...raw, 0]));
  corrupt(raw, { name: 'other', geometry });
  corrupt(raw, { name: 'std', geometry: makeGeometry(41 * 4096, 4096) });
  const badState = raw.slice();
  badState[badState.indexOf(0x61 /* 'a' of alpha */) - 2 - 8 - 3] = 9;
  corrupt(badState);
  assert.throws(() => decodeRecord(bytes.map((b, i) => (i === bytes.length - 3 ? b ^ 1 : b)), 'clones/std'),
    (e: unknown) => isTidemarkError(e, ErrorCode.MetadataCorrupt));
});

function proceedDone(set: CloneSet, first: number, last = first): void {
  set.stdWriteDone(proceed(set, first, last).writeId);
}

test('recovery: maybe-written tracks become protection / clone-changed bits when split, copy work when attached', () => {
  const set = new CloneSet(STD);
  const split = set.establish(vol('split'), 0).sessionId;
  drain(set, split);
  set.split(split, false, 1);
  const synced = set.establish(vol('synced'), 1).sessionId;
  drain(set, synced);
  const restoring = set.establish(vol('restoring'), 2).sessionId;
  drain(set, restoring);
  set.split(restoring, false, 3);
  set.restore(restoring, true, 4); // nothing changed: restored at once
  assert.equal(set.status(restoring).state, 'restored');
  set.split(restoring, false, 5);
  proceedDone(set, 0, 1);
  set.restore(restoring, true, 6); // restores 0..1
  const persisted = encodeCloneSet(set);

  const back = decodeCloneSet(persisted, STD);
  const stdMaybe = new TrackBitmap(TRACKS);
  stdMaybe.setRange(1, 3);
  const cloneMaybe = new Map<string, TrackBitmap>();
  for (const [name, range] of [['split', [10, 11]], ['synced', [20, 20]], ['restoring', [30, 30]]] as const) {
    const b = new TrackBitmap(TRACKS);
    b.setRange(range[0], range[1]);
    cloneMaybe.set(name, b);
  }
  const report = back.recover(stdMaybe, cloneMaybe, 7);
  assert.deepEqual(report.sessions.map((s) => [s.clone, s.addedTracks, s.state]), [
    ['split', 2, 'split'],
    ['synced', 3, 'synchronizing'], // 2..3 written, 20 on the clone (0..1 were already marked by the restore)
    ['restoring', 3, 'restoring'], // 2..3 and 30 to the clone; 1 stays a restore
  ]);
  assert.deepEqual(back.bitmaps(split).protection.toArray(), [0, 1, 2, 3]);
  assert.deepEqual(back.bitmaps(split).cloneChanged.toArray(), [10, 11]);
  assert.deepEqual(back.bitmaps(synced).toClone.toArray(), [0, 1, 2, 3, 20]);
  assert.deepEqual(back.bitmaps(restoring).toStd.toArray(), [0, 1]);
  assert.deepEqual(back.bitmaps(restoring).toClone.toArray(), [2, 3, 30]);
  // The restoring session settles only when both directions are done.
  drain(back, restoring);
  assert.equal(back.status(restoring).state, 'restored');
  drain(back, synced);
  assert.equal(back.status(synced).state, 'synchronized');
});

test('a restore makes other sessions’ in-flight copies stale', () => {
  const set = new CloneSet(STD);
  const a = set.establish(vol('a'), 0).sessionId;
  drain(set, a);
  set.split(a, false, 1);
  const b = set.establish(vol('b'), 2).sessionId;
  const inFlight: CopyTicket[] = set.nextCopy(b, 4);
  set.restore(a, false, 3);
  for (const t of inFlight) assert.deepEqual(set.copyDone(t), { kind: 'redo' });
  assert.deepEqual(set.nextCopy(b, 64), [], 'nothing until a restores');
});
