// Decoders for the option payloads that carry structure (INFO/GO, LIST/SET_META_CONTEXT). Each
// returns a typed value or a reason the payload is malformed (answered with NBD_REP_ERR_INVALID).
import { MAX_STRING_BYTES } from './constants.js';

const decoder = new TextDecoder('utf-8', { fatal: true });

/** A protocol string: valid UTF-8, no NUL, at most 4096 bytes; undefined otherwise. */
export function decodeString(bytes: Uint8Array): string | undefined {
  if (bytes.length > MAX_STRING_BYTES || bytes.includes(0)) return undefined;
  try {
    return decoder.decode(bytes);
  } catch {
    return undefined;
  }
}

export type Parsed<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly reason: string };

const bad = (reason: string): { ok: false; reason: string } => ({ ok: false, reason });
const viewOf = (bytes: Uint8Array): DataView => new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);

export interface InfoRequest {
  readonly name: string;
  /** NBD_INFO_* types the client asked for (unknown ones included; the caller ignores them). */
  readonly requested: ReadonlySet<number>;
}

/** `namelen:u32 | name | nreq:u16 | nreq × type:u16`, exactly. */
export function parseInfoRequest(data: Uint8Array): Parsed<InfoRequest> {
  const view = viewOf(data);
  if (data.length < 6) return bad('INFO/GO payload is shorter than 6 bytes');
  const nameLength = view.getUint32(0);
  if (nameLength > data.length - 6) return bad('INFO/GO export name runs past the payload');
  const count = view.getUint16(4 + nameLength);
  if (data.length !== 4 + nameLength + 2 + 2 * count) return bad('INFO/GO payload length does not match its contents');
  const name = decodeString(data.subarray(4, 4 + nameLength));
  if (name === undefined) return bad('export name is not a valid NBD string');
  const requested = new Set<number>();
  for (let i = 0; i < count; i++) requested.add(view.getUint16(4 + nameLength + 2 + 2 * i));
  return { ok: true, value: { name, requested } };
}

export interface MetaContextRequest {
  readonly exportName: string;
  readonly queries: readonly string[];
}

/** `namelen:u32 | name | nqueries:u32 | nqueries × (len:u32 | query)`, exactly. */
export function parseMetaContextRequest(data: Uint8Array): Parsed<MetaContextRequest> {
  const view = viewOf(data);
  if (data.length < 8) return bad('meta context payload is shorter than 8 bytes');
  const nameLength = view.getUint32(0);
  if (nameLength > data.length - 8) return bad('meta context export name runs past the payload');
  const exportName = decodeString(data.subarray(4, 4 + nameLength));
  if (exportName === undefined) return bad('export name is not a valid NBD string');
  let at = 4 + nameLength;
  const count = view.getUint32(at);
  at += 4;
  // Each query needs at least its 4-byte length: reject absurd counts before looping.
  if (count > (data.length - at) / 4) return bad('meta context query count runs past the payload');
  const queries: string[] = [];
  for (let i = 0; i < count; i++) {
    if (at + 4 > data.length) return bad('meta context query runs past the payload');
    const length = view.getUint32(at);
    at += 4;
    if (length > data.length - at) return bad('meta context query runs past the payload');
    const query = decodeString(data.subarray(at, at + length));
    if (query === undefined) return bad('meta context query is not a valid NBD string');
    queries.push(query);
    at += length;
  }
  if (at !== data.length) return bad('meta context payload has trailing bytes');
  return { ok: true, value: { exportName, queries } };
}
