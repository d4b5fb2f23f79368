// Byte builders and parsers for driving the core NBD machine in unit tests: client frames in,
// server frames out, written independently of the code under test.
import type { NbdAction, NbdConnection } from '../../src/core/nbd/connection.js';

export const text = (s: string): Uint8Array => new TextEncoder().encode(s);
export const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString('hex');

export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export function u16(n: number): Uint8Array {
  const out = new Uint8Array(2);
  new DataView(out.buffer).setUint16(0, n);
  return out;
}

export function u32(n: number): Uint8Array {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, n);
  return out;
}

export const clientFlags = (flags = 3): Uint8Array => u32(flags);

/** An option header (+ data); `declaredLength` lies about the length when given. */
export function option(opt: number, data: Uint8Array = new Uint8Array(0), declaredLength?: number): Uint8Array {
  return concat(text('IHAVEOPT'), u32(opt), u32(declaredLength ?? data.length), data);
}

/** INFO/GO payload. */
export function infoData(name: string, infoTypes: number[] = []): Uint8Array {
  const n = text(name);
  return concat(u32(n.length), n, u16(infoTypes.length), ...infoTypes.map(u16));
}

/** LIST/SET_META_CONTEXT payload. */
export function metaData(name: string, queries: string[]): Uint8Array {
  const n = text(name);
  return concat(u32(n.length), n, u32(queries.length), ...queries.flatMap((q) => [u32(text(q).length), text(q)]));
}

export function request(type: number, cookie: bigint, offset: bigint | number, length: number, flags = 0): Uint8Array {
  const out = new Uint8Array(28);
  const v = new DataView(out.buffer);
  v.setUint32(0, 0x25609513);
  v.setUint16(4, flags);
  v.setUint16(6, type);
  v.setBigUint64(8, cookie);
  v.setBigUint64(16, BigInt(offset));
  v.setUint32(24, length);
  return out;
}

/** Every action available now. */
export function drain(conn: NbdConnection): NbdAction[] {
  const out: NbdAction[] = [];
  for (let a = conn.poll(); a; a = conn.poll()) out.push(a);
  return out;
}

/** Feeds `bytes` in pieces of the given sizes (the rest in one piece), draining after each. */
export function feed(conn: NbdConnection, bytes: Uint8Array, pieces: number[] = []): NbdAction[] {
  const out: NbdAction[] = [];
  let at = 0;
  for (const size of pieces) {
    if (at >= bytes.length) break;
    conn.receive(bytes.subarray(at, at + size));
    at += size;
    out.push(...drain(conn));
  }
  if (at < bytes.length) conn.receive(bytes.subarray(at));
  out.push(...drain(conn));
  return out;
}

export interface OptionReply {
  readonly magic: bigint;
  readonly option: number;
  readonly type: number;
  readonly data: Uint8Array;
}

/** Splits the concatenated 'send' bytes of handshake actions into option replies. */
export function optionReplies(actions: NbdAction[]): OptionReply[] {
  const bytes = concat(...actions.flatMap((a) => (a.kind === 'send' ? [a.bytes] : [])));
  const out: OptionReply[] = [];
  let at = 0;
  while (at < bytes.length) {
    const v = new DataView(bytes.buffer, bytes.byteOffset + at);
    const length = v.getUint32(16);
    out.push({ magic: v.getBigUint64(0), option: v.getUint32(8), type: v.getUint32(12), data: bytes.subarray(at + 20, at + 20 + length) });
    at += 20 + length;
  }
  return out;
}

/** A compact description of actions, for comparing runs. */
export function summary(actions: NbdAction[]): string[] {
  return actions.map((a) => {
    switch (a.kind) {
      case 'send': return `send:${hex(a.bytes)}`;
      case 'command': {
        const c = a.command;
        const cookie = hex(c.cookie);
        switch (c.type) {
          case 'write': return `write:${cookie}:${c.offset}:${hex(c.data)}:${c.fua}${c.piece ? `:piece${c.piece.stream}${c.piece.last ? ':last' : ''}` : ''}`;
          case 'invalid': return `invalid:${cookie}:${c.errno}`;
          case 'flush': return `flush:${cookie}`;
          default: return `${c.type}:${cookie}:${c.offset}:${c.length}`;
        }
      }
      case 'transmission': return `transmission:${a.export.name}:${a.structured}:${a.flags}`;
      case 'starttls': return 'starttls';
      case 'access-denied': return `access-denied:${a.export}`;
      case 'disconnect': return 'disconnect';
      case 'close': return 'close';
    }
  });
}
