// Bytes of the primary-side journal log (primary-log.ts): frames appended one after another, each
// [magic u32][payload length u32][CRC-32C of payload u32][payload], payload = [head length u32]
// [JSON head][piece bytes…]. A kill -9 keeps whatever write(2) returned; a power loss may leave a
// torn or missing tail — reading stops at the first frame that does not check out, and what
// follows it is ignored (it was never made durable by a host FLUSH, see docs/design/journal.md).
import { crc32c } from '../lib/crc32c.js';
import type { TokenSpec } from './journal-types.js';
import type { JournalLogRecord, LoggedPiece } from './primary-log.js';

const MAGIC = 0x544d4a4c; // "TMJL"
const FRAME_HEADER = 12;
const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

type Head =
  | { readonly kind: 'request'; readonly incarnation: number; readonly requestId: number; readonly pieces: ReadonlyArray<{ readonly spec: TokenSpec; readonly bytes: number }> }
  | Extract<JournalLogRecord, { kind: 'grant' | 'issued' | 'closed' }>;

export function encodePrimaryLogRecord(r: JournalLogRecord): Uint8Array {
  const head: Head = r.kind !== 'request' ? r : {
    kind: 'request', incarnation: r.incarnation, requestId: r.requestId,
    pieces: r.pieces.map((p) => ({ spec: p.spec, bytes: p.data === null ? -1 : p.data.length })),
  };
  const headBytes = encoder.encode(JSON.stringify(head));
  let payloadLength = 4 + headBytes.length;
  if (r.kind === 'request') for (const p of r.pieces) payloadLength += p.data?.length ?? 0;
  const out = new Uint8Array(FRAME_HEADER + payloadLength);
  const view = new DataView(out.buffer);
  view.setUint32(FRAME_HEADER, headBytes.length);
  out.set(headBytes, FRAME_HEADER + 4);
  let at = FRAME_HEADER + 4 + headBytes.length;
  if (r.kind === 'request') for (const p of r.pieces) if (p.data) { out.set(p.data, at); at += p.data.length; }
  view.setUint32(0, MAGIC);
  view.setUint32(4, payloadLength);
  view.setUint32(8, crc32c(out.subarray(FRAME_HEADER)));
  return out;
}

/** The records of one segment, up to the first frame that is torn or fails its check. */
export function decodePrimaryLogSegment(bytes: Uint8Array): { records: JournalLogRecord[]; validBytes: number } {
  const records: JournalLogRecord[] = [];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 0;
  while (at + FRAME_HEADER <= bytes.length) {
    if (view.getUint32(at) !== MAGIC) break;
    const length = view.getUint32(at + 4);
    if (length < 4 || at + FRAME_HEADER + length > bytes.length) break;
    const payload = bytes.subarray(at + FRAME_HEADER, at + FRAME_HEADER + length);
    if (crc32c(payload) !== view.getUint32(at + 8)) break;
    const record = decodePayload(payload);
    if (!record) break;
    records.push(record);
    at += FRAME_HEADER + length;
  }
  return { records, validBytes: at };
}

function decodePayload(payload: Uint8Array): JournalLogRecord | undefined {
  const headLength = new DataView(payload.buffer, payload.byteOffset, payload.byteLength).getUint32(0);
  if (4 + headLength > payload.length) return undefined;
  let head: Head;
  try {
    head = JSON.parse(decoder.decode(payload.subarray(4, 4 + headLength))) as Head;
  } catch {
    return undefined;
  }
  if (head.kind === 'closed') return { kind: 'closed' };
  if (head.kind === 'issued') {
    if (!Array.isArray(head.specs)) return undefined;
    return { kind: 'issued', from: head.from, incarnation: head.incarnation, requestId: head.requestId, first: head.first, timeMs: head.timeMs, specs: head.specs };
  }
  if (head.kind === 'grant') return { kind: 'grant', incarnation: head.incarnation, requestId: head.requestId, first: head.first, timeMs: head.timeMs };
  if (head.kind !== 'request' || !Array.isArray(head.pieces)) return undefined;
  let at = 4 + headLength;
  const pieces: LoggedPiece[] = [];
  for (const p of head.pieces) {
    if (p.bytes < 0) { pieces.push({ spec: p.spec, data: null }); continue; }
    if (at + p.bytes > payload.length) return undefined;
    pieces.push({ spec: p.spec, data: payload.slice(at, at + p.bytes) });
    at += p.bytes;
  }
  return { kind: 'request', incarnation: head.incarnation, requestId: head.requestId, pieces };
}
