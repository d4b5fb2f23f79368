// Mirror positions (ARCHITECTURE.md): every place a volume's data must also be — its own storage,
// a change tracker, and later each clone, remote mirror, cascade session and migration target —
// is a position with an invalid-track bitmap. A host write becomes one decision per position.
import { TrackBitmap } from '../bitmap/track-bitmap.js';
import { assert } from '../lib/assert.js';

export type PositionKind =
  /** Records tracks written since the tracker was last reset (incremental backup, resync basis). */
  | 'change-tracker';

export interface MirrorPosition {
  readonly id: string;
  readonly kind: PositionKind;
  /** Tracks this position does not yet hold (for a change tracker: tracks changed since reset). */
  readonly invalid: TrackBitmap;
}

export type WriteDecision = { readonly position: string; readonly action: 'mark-invalid' };

/** Decides, per position, what a host write to tracks first..last requires, and records bitmap effects. */
export function applyHostWrite(positions: readonly MirrorPosition[], first: number, last: number): WriteDecision[] {
  const decisions: WriteDecision[] = [];
  for (const p of positions) {
    switch (p.kind) {
      case 'change-tracker':
        p.invalid.setRange(first, last);
        decisions.push({ position: p.id, action: 'mark-invalid' });
        break;
    }
  }
  return decisions;
}

/** Marks every track of the given runs invalid on every position: crash recovery from the activity log. */
export function markRecovered(positions: readonly MirrorPosition[], runs: ReadonlyArray<{ first: number; last: number }>): void {
  for (const p of positions) for (const r of runs) p.invalid.setRange(r.first, r.last);
}

// Bitmaps record: u32 count, then per position: u16 id length, id (utf-8), u8 kind, u32 size, words.
const KINDS: readonly PositionKind[] = ['change-tracker'];
const enc = new TextEncoder();
const dec = new TextDecoder();

export function encodePositions(positions: readonly MirrorPosition[]): Uint8Array {
  const parts = positions.map((p) => ({ id: enc.encode(p.id), kind: KINDS.indexOf(p.kind), bytes: p.invalid.toBytes(), size: p.invalid.size }));
  const total = 4 + parts.reduce((n, p) => n + 2 + p.id.length + 1 + 4 + p.bytes.length, 0);
  const out = new Uint8Array(total);
  const view = new DataView(out.buffer);
  view.setUint32(0, parts.length);
  let at = 4;
  for (const p of parts) {
    view.setUint16(at, p.id.length); at += 2;
    out.set(p.id, at); at += p.id.length;
    view.setUint8(at, p.kind); at += 1;
    view.setUint32(at, p.size); at += 4;
    out.set(p.bytes, at); at += p.bytes.length;
  }
  assert(at === total, 'position encoding length');
  return out;
}

/** Decodes positions; returns undefined when the bytes do not parse (the caller reports corruption). */
export function decodePositions(bytes: Uint8Array, trackCount: number): MirrorPosition[] | undefined {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: MirrorPosition[] = [];
  let at = 0;
  const need = (n: number): boolean => at + n <= bytes.length;
  if (!need(4)) return undefined;
  const count = view.getUint32(at); at += 4;
  for (let i = 0; i < count; i++) {
    if (!need(2)) return undefined;
    const idLength = view.getUint16(at); at += 2;
    if (!need(idLength + 5)) return undefined;
    const id = dec.decode(bytes.subarray(at, at + idLength)); at += idLength;
    const kind = KINDS[view.getUint8(at)]; at += 1;
    const size = view.getUint32(at); at += 4;
    const wordBytes = Math.ceil(size / 32) * 4;
    if (kind === undefined || size !== trackCount || !need(wordBytes)) return undefined;
    out.push({ id, kind, invalid: TrackBitmap.fromBytes(size, bytes.slice(at, at + wordBytes)) });
    at += wordBytes;
  }
  return at === bytes.length ? out : undefined;
}
