// Mirror positions (ARCHITECTURE.md): every place a volume's data must also be — its own storage,
// a change tracker, each clone session's bitmaps, later each remote mirror, cascade session and
// migration target — is a position with a track bitmap. A write marks the positions that track it;
// copy, resync and restore decisions are bitmap arithmetic over them.
import { newlySetRuns, type BitmapDelta, type PositionDelta } from '../bitmap/bitmap-deltas.js';
import { TrackBitmap } from '../bitmap/track-bitmap.js';
import { assert } from '../lib/assert.js';
import { encodeShortString, putShortString, readShortString } from '../lib/short-string.js';

export type PositionKind =
  /** Tracks written since the tracker was last reset (incremental backup, resync basis). */
  | 'change-tracker'
  /** A clone session's protection bits: tracks STD changed since the session last split. */
  | 'clone-protection'
  /** Tracks an attached clone lacks (copy STD → clone). */
  | 'clone-to-clone'
  /** Tracks STD still needs from the clone during a restore (copy clone → STD). */
  | 'clone-to-std'
  /** On a clone volume: tracks its own hosts changed since the split. */
  | 'clone-own'
  /** On a pair's R1: tracks the remote mirror (R2) may lack. */
  | 'remote-out'
  /** On a pair's R2: tracks R2's own hosts changed while it was writable (split, failover). */
  | 'remote-own'
  /** On a migrating volume: tracks its other storage lacks (the copy, later the replay, takes them). */
  | 'migration'
  /** On an importing volume: tracks not yet fetched from the source. */
  | 'import';

/**
 * Which writes mark a position: host writes only, host writes and internal copies, or none.
 * 'recovery': no write marks it (its feature mirrors them), but crash recovery does: a write in a
 * hot extent may have reached one storage and not the other.
 */
export type MarksOn = 'host' | 'all' | 'never' | 'recovery';

export interface MirrorPosition {
  readonly id: string;
  readonly kind: PositionKind;
  marksOn: MarksOn;
  /** The track bitmap (for a clone-own or change tracker: tracks changed; for copy positions: tracks to copy). */
  readonly invalid: TrackBitmap;
  /**
   * The tracks this position covers, when not all (a pair replicating some extents): writes and
   * crash recovery mark nothing outside it. Set by the feature owning the position; not persisted.
   */
  scope?: TrackBitmap;
}

function mark(p: MirrorPosition, first: number, last: number): void {
  if (!p.scope) {
    p.invalid.setRange(first, last);
    return;
  }
  for (let t = p.scope.nextSet(first); t >= 0 && t <= last; t = p.scope.nextSet(t + 1)) p.invalid.set(t);
}

/**
 * Who wrote: the volume's hosts; an internal copy (clone copies: they make a copy equal, they are
 * not news); or a replica write (a remote mirror applying its source's writes, or taking them back
 * in a restore) — new data for this volume, so it marks what host writes mark.
 */
export type WriteSource = 'host' | 'copy' | 'replica';

/** Records a write to tracks first..last on every position that tracks such writes. */
export function applyWrite(
  positions: readonly MirrorPosition[], first: number, last: number, source: WriteSource, skipPosition?: string,
): void {
  for (const p of positions) {
    if (p.id === skipPosition) continue;
    if (p.marksOn === 'all' || (p.marksOn === 'host' && source !== 'copy')) mark(p, first, last);
  }
}

/**
 * Crash recovery from the activity log: every track of the given runs may have been written, so it
 * is marked on every position that writes mark. An R2's own bitmap (`remote-own`) is marked only by
 * its volume's hosts (replica writes skip it), so it is left alone when the volume took no host
 * writes (`hostWrites` false: it was not ready): the extents were hot with its source's writes, and
 * marking them would report them as the R2 hosts' changes (a resume would refuse them as divergence).
 */
export function markRecovered(positions: readonly MirrorPosition[], runs: ReadonlyArray<{ first: number; last: number }>,
  hostWrites = true): void {
  for (const p of positions) {
    if (!recoveryMarks(p, hostWrites)) continue;
    for (const r of runs) mark(p, r.first, r.last);
  }
}

/**
 * Whether crash recovery marks the hot extents on this position: then the bits of an extent must be
 * durable before it leaves the hot set (a bitmap delta or a full persist), and only then.
 */
export function recoveryMarks(p: MirrorPosition, hostWrites: boolean): boolean {
  return p.marksOn !== 'never' && (hostWrites || p.kind !== 'remote-own');
}

/** Recovery from bitmap deltas: ORs each delta's runs into the position it names (one the record lacks is skipped). */
export function applyDeltas(positions: readonly MirrorPosition[], deltas: readonly BitmapDelta[]): void {
  for (const delta of deltas) {
    for (const entry of delta.positions) {
      const p = positions.find((x) => x.id === entry.id);
      for (const run of p ? entry.runs : []) p!.invalid.setRange(run.start, run.end - 1);
    }
  }
}

/**
 * What must become durable before `extents` leave the hot set: for each position crash recovery
 * marks, the runs of their tracks set in memory or in the position's persist overlay and not in its
 * durable image. Empty: all durable already. Undefined when such a position has no durable image
 * (it is newer than the record): only a full persist will do.
 */
export function evictionDelta(
  positions: readonly MirrorPosition[], extents: readonly number[],
  shape: { readonly extentTracks: number; readonly trackCount: number; readonly hostWrites: boolean },
  overlayOf: (id: string) => TrackBitmap | undefined, durableOf: (id: string) => TrackBitmap | undefined,
): PositionDelta[] | undefined {
  const marked = positions.filter((p) => recoveryMarks(p, shape.hostWrites));
  if (marked.some((p) => !durableOf(p.id))) return undefined;
  const ranges = [...extents].sort((a, b) => a - b)
    .map((e) => ({ first: e * shape.extentTracks, last: Math.min(shape.trackCount - 1, (e + 1) * shape.extentTracks - 1) }))
    .filter((r) => r.first <= r.last);
  const entries: PositionDelta[] = [];
  for (const p of marked) {
    const runs = newlySetRuns(ranges, p.invalid, overlayOf(p.id), durableOf(p.id)!);
    if (runs.length > 0) entries.push({ id: p.id, runs });
  }
  return entries;
}

// Record layout: u32 count; per position: u16 id length, id (utf-8), u8 kind, u8 marksOn, u32 size,
// words; then u32 length and a UTF-8 JSON object of extensions (state owned by features that use
// these positions, e.g. clone sessions), so bitmaps and that state are persisted atomically together;
// then the f64 generation of this record, which bitmap deltas name (absent in records from before
// deltas: generation 0).
const KINDS: readonly PositionKind[] = [
  'change-tracker', 'clone-protection', 'clone-to-clone', 'clone-to-std', 'clone-own', 'remote-out', 'remote-own', 'migration', 'import',
];
const MARKS: readonly MarksOn[] = ['host', 'all', 'never', 'recovery'];
const enc = new TextEncoder();
const dec = new TextDecoder('utf-8', { fatal: true });

export interface PositionsRecord {
  readonly positions: MirrorPosition[];
  readonly extensions: Record<string, unknown>;
  /** Which bitmap deltas add to this record (bitmap-deltas.ts). */
  readonly generation: number;
}

const GENERATION_BYTES = 8;

export function encodePositions(positions: readonly MirrorPosition[], extensions: Record<string, unknown> = {}, generation = 0): Uint8Array {
  const parts = positions.map((p) => ({
    id: encodeShortString(p.id), kind: KINDS.indexOf(p.kind), marks: MARKS.indexOf(p.marksOn), bytes: p.invalid.toBytes(), size: p.invalid.size,
  }));
  const json = enc.encode(JSON.stringify(extensions));
  const total = 4 + parts.reduce((n, p) => n + 2 + p.id.length + 2 + 4 + p.bytes.length, 0) + 4 + json.length + GENERATION_BYTES;
  const out = new Uint8Array(total);
  const view = new DataView(out.buffer);
  view.setUint32(0, parts.length);
  let at = 4;
  for (const p of parts) {
    at = putShortString(out, view, at, p.id);
    view.setUint8(at, p.kind); at += 1;
    view.setUint8(at, p.marks); at += 1;
    view.setUint32(at, p.size); at += 4;
    out.set(p.bytes, at); at += p.bytes.length;
  }
  view.setUint32(at, json.length); at += 4;
  out.set(json, at); at += json.length;
  view.setFloat64(at, generation); at += GENERATION_BYTES;
  assert(at === total, 'position encoding length');
  return out;
}

/** Decodes a positions record; undefined when the bytes do not parse (the caller reports corruption). */
export function decodePositions(bytes: Uint8Array, trackCount: number): PositionsRecord | undefined {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const positions: MirrorPosition[] = [];
  let at = 0;
  const need = (n: number): boolean => at + n <= bytes.length;
  if (!need(4)) return undefined;
  const count = view.getUint32(at); at += 4;
  for (let i = 0; i < count; i++) {
    const id = readShortString(bytes, view, at);
    if (!id) return undefined;
    at = id.end;
    if (!need(6)) return undefined;
    const kind = KINDS[view.getUint8(at)]; at += 1;
    const marksOn = MARKS[view.getUint8(at)]; at += 1;
    const size = view.getUint32(at); at += 4;
    const wordBytes = Math.ceil(size / 32) * 4;
    if (kind === undefined || marksOn === undefined || size !== trackCount || !need(wordBytes)) return undefined;
    positions.push({ id: id.value, kind, marksOn, invalid: TrackBitmap.fromBytes(size, bytes.slice(at, at + wordBytes)) });
    at += wordBytes;
  }
  if (!need(4)) return undefined;
  const jsonLength = view.getUint32(at); at += 4;
  const trailer = bytes.length - (at + jsonLength);
  if (trailer !== 0 && trailer !== GENERATION_BYTES) return undefined;
  const generation = trailer === 0 ? 0 : view.getFloat64(at + jsonLength);
  if (!Number.isSafeInteger(generation) || generation < 0) return undefined;
  try {
    const extensions = JSON.parse(dec.decode(bytes.subarray(at, at + jsonLength))) as unknown;
    if (extensions === null || typeof extensions !== 'object' || Array.isArray(extensions)) return undefined;
    return { positions, extensions: extensions as Record<string, unknown>, generation };
  } catch {
    return undefined;
  }
}
