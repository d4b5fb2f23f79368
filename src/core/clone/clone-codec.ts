// Binary form of a whole clone-session set, persisted by the caller inside a checksummed record
// (src/core/lib/checksummed-record.ts: encodeRecord/decodeRecord). One record holds every session
// of one STD, so the sessions and their bitmaps are always read back as one consistent snapshot.
//
// Layout (big-endian):
//   u32 magic "TMCL", u16 version, u16 session count,
//   u32 trackCount, u32 trackBytes, f64 sizeBytes, f64 nextSerial, u16 std name length, std name,
//   per session: u8 id, u8 state, u8 operation, u8 flags (bit 0: started-at present, bit 1: split-at
//     present), f64 serial, u16 clone name length, clone name, f64 tracksCopied, f64 bytesCopied,
//     f64 operationStartedAtMs, f64 splitAtMs, then four bitmaps of ceil(trackCount/32)*4 bytes:
//     protection, cloneChanged, toClone, toStd.
// Copies and writes in flight are not stored: after a restart none are, and their tracks are still
// marked (a copy clears its bit only when done), or covered by the caller's maybe-written bitmaps.
import { TrackBitmap } from '../bitmap/track-bitmap.js';
import { ErrorCode, TidemarkError } from '../errors.js';
import { assert } from '../lib/assert.js';
import { CloneSet, type SessionRecord, type SetRecord } from './clone-set.js';
import { MAX_CLONE_NAME_BYTES, MAX_SESSIONS_PER_VOLUME } from './clone-limits.js';
import { CLONE_OPERATIONS, SESSION_STATES, type LiveState, type VolumeRef } from './clone-types.js';

const MAGIC = 0x544d434c; // "TMCL"
export const CLONE_SET_FORMAT_VERSION = 1;
const LIVE_STATES = SESSION_STATES.filter((s): s is LiveState => s !== 'terminated');
const HAS_STARTED = 1;
const HAS_SPLIT = 2;
const enc = new TextEncoder();
const dec = new TextDecoder('utf-8', { fatal: true });

export function encodeCloneSet(set: CloneSet): Uint8Array {
  const record = set.toRecord();
  const wordBytes = Math.ceil(record.trackCount / 32) * 4;
  const stdName = enc.encode(record.std);
  const clones = record.sessions.map((s) => enc.encode(s.clone));
  const total = 4 + 2 + 2 + 4 + 4 + 8 + 8 + 2 + stdName.length +
    clones.reduce((n, c) => n + 4 + 8 + 2 + c.length + 32 + 4 * wordBytes, 0);
  const out = new Uint8Array(total);
  const view = new DataView(out.buffer);
  let at = 0;
  view.setUint32(at, MAGIC); at += 4;
  view.setUint16(at, CLONE_SET_FORMAT_VERSION); at += 2;
  view.setUint16(at, record.sessions.length); at += 2;
  view.setUint32(at, record.trackCount); at += 4;
  view.setUint32(at, record.trackBytes); at += 4;
  view.setFloat64(at, record.sizeBytes); at += 8;
  view.setFloat64(at, record.nextSerial); at += 8;
  view.setUint16(at, stdName.length); at += 2;
  out.set(stdName, at); at += stdName.length;
  record.sessions.forEach((s, i) => {
    const name = clones[i]!;
    view.setUint8(at, s.id); at += 1;
    view.setUint8(at, LIVE_STATES.indexOf(s.state)); at += 1;
    view.setUint8(at, CLONE_OPERATIONS.indexOf(s.operation)); at += 1;
    view.setUint8(at, (s.operationStartedAtMs === null ? 0 : HAS_STARTED) | (s.splitAtMs === null ? 0 : HAS_SPLIT)); at += 1;
    view.setFloat64(at, s.serial); at += 8;
    view.setUint16(at, name.length); at += 2;
    out.set(name, at); at += name.length;
    view.setFloat64(at, s.tracksCopied); at += 8;
    view.setFloat64(at, s.bytesCopied); at += 8;
    view.setFloat64(at, s.operationStartedAtMs ?? 0); at += 8;
    view.setFloat64(at, s.splitAtMs ?? 0); at += 8;
    for (const b of [s.protection, s.cloneChanged, s.toClone, s.toStd]) {
      const bytes = b.toBytes();
      assert(bytes.length === wordBytes, 'bitmap byte length');
      out.set(bytes, at); at += wordBytes;
    }
  });
  assert(at === total, 'clone set encoding length');
  return out;
}

/**
 * Decodes and validates a persisted set for the volume `std`. Any defect — truncation, an unknown
 * state, a geometry that does not match, sessions that contradict each other — is MetadataCorrupt:
 * the caller refuses to start rather than run on a set it cannot trust.
 */
export function decodeCloneSet(bytes: Uint8Array, std: VolumeRef): CloneSet {
  const corrupt = (why: string): TidemarkError =>
    new TidemarkError(ErrorCode.MetadataCorrupt, `clone sessions of ${std.name} do not decode: ${why}`, { std: std.name });
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 0;
  const need = (n: number, what: string): void => {
    if (at + n > bytes.length) throw corrupt(`truncated at ${what}`);
  };
  const count = (what: string): number => {
    need(8, what);
    const v = view.getFloat64(at); at += 8;
    if (!Number.isSafeInteger(v) || v < 0) throw corrupt(`${what} ${v} is not a count`);
    return v;
  };
  const name = (what: string): string => {
    need(2, what);
    const length = view.getUint16(at); at += 2;
    if (length === 0 || length > MAX_CLONE_NAME_BYTES) throw corrupt(`${what} length ${length}`);
    need(length, what);
    try {
      return dec.decode(bytes.subarray(at, at + length));
    } catch {
      throw corrupt(`${what} is not UTF-8`);
    } finally {
      at += length;
    }
  };

  need(32, 'header');
  if (view.getUint32(at) !== MAGIC) throw corrupt('bad magic');
  at += 4;
  const version = view.getUint16(at); at += 2;
  if (version !== CLONE_SET_FORMAT_VERSION) throw corrupt(`unknown format version ${version}`);
  const sessionCount = view.getUint16(at); at += 2;
  if (sessionCount > MAX_SESSIONS_PER_VOLUME) throw corrupt(`${sessionCount} sessions`);
  const trackCount = view.getUint32(at); at += 4;
  const trackBytes = view.getUint32(at); at += 4;
  const sizeBytes = count('volume size');
  const nextSerial = count('next serial');
  const stdName = name('volume name');
  if (trackCount !== std.geometry.trackCount) throw corrupt(`${trackCount} tracks, the volume has ${std.geometry.trackCount}`);
  const wordBytes = Math.ceil(trackCount / 32) * 4;
  const sessions: SessionRecord[] = [];
  for (let i = 0; i < sessionCount; i++) {
    need(4, 'session header');
    const id = view.getUint8(at); at += 1;
    const state = LIVE_STATES[view.getUint8(at)]; at += 1;
    const operation = CLONE_OPERATIONS[view.getUint8(at)]; at += 1;
    const flags = view.getUint8(at); at += 1;
    if (state === undefined) throw corrupt(`session ${id}: unknown state`);
    if (operation === undefined) throw corrupt(`session ${id}: unknown operation`);
    if ((flags & ~(HAS_STARTED | HAS_SPLIT)) !== 0) throw corrupt(`session ${id}: unknown flags ${flags}`);
    const serial = count('serial');
    const clone = name('clone name');
    const tracksCopied = count('tracks copied');
    const bytesCopied = count('bytes copied');
    need(16, 'times');
    const started = view.getFloat64(at); at += 8;
    const split = view.getFloat64(at); at += 8;
    if (!Number.isFinite(started) || !Number.isFinite(split)) throw corrupt(`session ${id}: bad times`);
    const bitmaps: TrackBitmap[] = [];
    for (let b = 0; b < 4; b++) {
      need(wordBytes, 'bitmap');
      bitmaps.push(TrackBitmap.fromBytes(trackCount, bytes.slice(at, at + wordBytes)));
      at += wordBytes;
    }
    sessions.push({
      id, serial, clone, state, operation, tracksCopied, bytesCopied,
      operationStartedAtMs: (flags & HAS_STARTED) !== 0 ? started : null,
      splitAtMs: (flags & HAS_SPLIT) !== 0 ? split : null,
      protection: bitmaps[0]!, cloneChanged: bitmaps[1]!, toClone: bitmaps[2]!, toStd: bitmaps[3]!,
    });
  }
  if (at !== bytes.length) throw corrupt(`${bytes.length - at} trailing bytes`);
  const record: SetRecord = { std: stdName, trackCount, trackBytes, sizeBytes, nextSerial, sessions };
  return CloneSet.fromRecord(std, record);
}
