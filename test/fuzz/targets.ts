// The fuzz targets: for each decoder that takes bytes or JSON from outside (an NBD client, a link
// peer, an API caller), an input generator and a property that throws on any violation. The same
// table drives the short seeded run inside `npm test` (test/unit/fuzz.test.ts) and the long run
// (`npm run fuzz`, test/fuzz/run.ts). Why fast-check rather than jazzer.js: docs/design/fuzzing.md.
//
// Properties checked everywhere: nothing but a TidemarkError with a stable code escapes (or a typed
// error result comes back), work per input is bounded, and valid values survive encode → decode.
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ErrorCode, TidemarkError } from '../../src/core/errors.js';
import {
  Cmd, CmdFlag, IHAVEOPT, MAX_OPTION_BYTES, MAX_PAYLOAD_BYTES, NBDMAGIC, Opt, OPTION_REPLY_MAGIC, REQUEST_MAGIC, Rep,
} from '../../src/core/nbd/constants.js';
import { NbdConnection, type ExportDirectory, type ExportInfo, type NbdAction } from '../../src/core/nbd/connection.js';
import { parseInfoRequest, parseMetaContextRequest } from '../../src/core/nbd/option-parsing.js';
import { decodeRequest as decodeNbdRequest, REQUEST_HEADER_BYTES, type TransmissionContext } from '../../src/core/nbd/request-decoding.js';
import {
  DataFlag, encodeFrame, FRAME_HEADER_BYTES, FrameDecoder, FrameType, frameToBytes, MAX_SEQ, type Frame,
} from '../../src/core/link/frame.js';
import {
  decodeError, decodeHello, encodeError, encodeHello, INCARNATION_BYTES, isValidArrayName, LinkErrorCode,
  MAX_ERROR_MESSAGE_BYTES, MIN_WINDOW_BYTES, NONCE_BYTES, type Hello,
} from '../../src/core/link/handshake.js';
import {
  decodeMessage, encodeMessage, MAX_SEGMENTS, peekRequestId, type PeerMessage, type Segment,
} from '../../src/core/replication/peer-messages.js';
import { decodeReply, decodeRequest as decodePeerRequest, PEER_OPS } from '../../src/core/replication/peer-protocol.js';
import { API_ROUTES } from '../../src/adapters/http/all-routes.js';
import { checkAccess, type ApiAccessPolicy } from '../../src/adapters/http/api-access.js';
import { compileValidator, type RequestPart, type Validator } from '../../src/adapters/http/validation.js';
import { startApiServer, type ApiServer } from '../../src/adapters/http/api-server.js';
import type { ApiBackend } from '../../src/adapters/http/types.js';
import { request as httpRequest, Agent } from 'node:http';

export interface FuzzTarget {
  readonly name: string;
  /** What the target feeds and what it checks, for the run's output and the docs. */
  readonly what: string;
  readonly property: fc.IRawProperty<unknown[]>;
  /** Releases what the property set up on first use (a server); the runner calls it after the target. */
  readonly dispose?: () => Promise<void>;
}

const target = <T>(name: string, what: string, arbitrary: fc.Arbitrary<T>, check: (input: T) => void): FuzzTarget =>
  ({ name, what, property: fc.property(arbitrary, check) as unknown as fc.IRawProperty<unknown[]> });

const STABLE_CODES = new Set<string>(Object.values(ErrorCode));

/** Runs `fn`; anything thrown must be a TidemarkError with one of the stable codes in `codes` (all when omitted). */
function onlyTypedErrors<T>(fn: () => T, codes?: readonly string[]): T | TidemarkError {
  try {
    return fn();
  } catch (error) {
    if (!(error instanceof TidemarkError)) throw new Error(`untyped error escaped: ${String(error)}`, { cause: error });
    assert.ok(STABLE_CODES.has(error.code), `unstable code ${error.code}`);
    if (codes) assert.ok(codes.includes(error.code), `unexpected code ${error.code}: ${error.message}`);
    return error;
  }
}

// ---- shared generators ----

const u32 = fc.integer({ min: 0, max: 0xffffffff });
const u16 = fc.integer({ min: 0, max: 0xffff });
const be32 = (n: number): Uint8Array => { const b = new Uint8Array(4); new DataView(b.buffer).setUint32(0, n >>> 0); return b; };
const be16 = (n: number): Uint8Array => { const b = new Uint8Array(2); new DataView(b.buffer).setUint16(0, n); return b; };
const be64 = (n: bigint): Uint8Array => { const b = new Uint8Array(8); new DataView(b.buffer).setBigUint64(0, n); return b; };
const concat = (parts: readonly Uint8Array[]): Uint8Array => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
};
const utf8 = (s: string): Uint8Array => new TextEncoder().encode(s);

/** Byte-level damage applied after a structured input is encoded: overwritten bytes and a truncation. */
const damage = fc.record({
  writes: fc.array(fc.record({ at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }), { maxLength: 3 }),
  truncateAt: fc.option(fc.nat(), { freq: 5 }),
});
interface Damage { readonly writes: ReadonlyArray<{ at: number; value: number }>; readonly truncateAt: number | null }
function applyDamage(bytes: Uint8Array, d: Damage): Uint8Array {
  const out = Uint8Array.from(bytes);
  for (const w of d.writes) if (out.length > 0) out[w.at % out.length] = w.value;
  return d.truncateAt === null ? out : out.subarray(0, d.truncateAt % (out.length + 1));
}

/** Arbitrary cut points: the same bytes as the peer's socket might deliver them. */
const cuts = fc.array(fc.nat(), { maxLength: 8 });
function chunked(bytes: Uint8Array, at: readonly number[]): Uint8Array[] {
  const points = [...new Set(at.map((n) => n % (bytes.length + 1)))].sort((a, b) => a - b);
  const out: Uint8Array[] = [];
  let from = 0;
  for (const p of points) { out.push(bytes.subarray(from, p)); from = p; }
  out.push(bytes.subarray(from));
  return out;
}

// ---- NBD: option payload parsers ----

const nbdString = fc.oneof(fc.constantFrom('', 'vol', 'ro', 'busy', 'base:allocation', 'base:'), fc.string({ maxLength: 20 }));

const infoPayload = fc.record({
  name: fc.oneof(nbdString.map(utf8), fc.uint8Array({ maxLength: 12 })),
  requested: fc.array(fc.oneof(fc.integer({ min: 0, max: 4 }), u16), { maxLength: 5 }),
}).map(({ name, requested }) => concat([be32(name.length), name, be16(requested.length), ...requested.map(be16)]));

const metaPayload = fc.record({
  name: fc.oneof(nbdString.map(utf8), fc.uint8Array({ maxLength: 12 })),
  queries: fc.array(fc.oneof(nbdString.map(utf8), fc.uint8Array({ maxLength: 8 })), { maxLength: 4 }),
}).map(({ name, queries }) => concat([be32(name.length), name, be32(queries.length), ...queries.flatMap((q) => [be32(q.length), q])]));

const optionPayloadTarget = target(
  'nbd-option-payloads',
  'INFO/GO and LIST/SET_META_CONTEXT payload parsers on damaged structured and random payloads',
  fc.tuple(fc.oneof(infoPayload, metaPayload, fc.uint8Array({ maxLength: 64 })), damage),
  ([payload, d]) => {
    const data = applyDamage(payload, d);
    const info = parseInfoRequest(data);
    if (info.ok) {
      // Accepted means exactly the documented layout: re-encoding gives the same bytes' length.
      const name = utf8(info.value.name);
      assert.ok(data.length >= 6 + name.length && data.length === 4 + name.length + 2 + 2 * new DataView(data.buffer, data.byteOffset + 4 + name.length, 2).getUint16(0));
      assert.ok(!info.value.name.includes('\0') && name.length <= 4096);
    } else assert.equal(typeof info.reason, 'string');
    const meta = parseMetaContextRequest(data);
    if (meta.ok) {
      const again = concat([be32(utf8(meta.value.exportName).length), utf8(meta.value.exportName), be32(meta.value.queries.length),
        ...meta.value.queries.flatMap((q) => [be32(utf8(q).length), utf8(q)])]);
      assert.deepEqual(again, Uint8Array.from(data), 'a parsed meta context request re-encodes to its bytes');
    } else assert.equal(typeof meta.reason, 'string');
  },
);

// ---- NBD: request header decoder ----

const SIZE = 1 << 20;
const offsets = fc.oneof(
  fc.integer({ min: 0, max: SIZE }).map(BigInt),
  fc.constantFrom(0n, BigInt(SIZE - 1), BigInt(SIZE), 2n ** 53n, 2n ** 64n - 1n, 2n ** 64n - 512n),
  fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
);
const lengths = fc.oneof(
  fc.integer({ min: 0, max: 4096 }),
  fc.constantFrom(0, 1, SIZE, MAX_PAYLOAD_BYTES, MAX_PAYLOAD_BYTES + 1, 0xffffffff),
  u32,
);
const requestFields = fc.record({
  magic: fc.oneof({ weight: 10, arbitrary: fc.constant(REQUEST_MAGIC) }, { weight: 1, arbitrary: u32 }),
  flags: fc.oneof(fc.constantFrom(0, CmdFlag.Fua, CmdFlag.NoHole, CmdFlag.Df, CmdFlag.ReqOne, CmdFlag.FastZero, 0x1f), u16),
  type: fc.oneof({ weight: 8, arbitrary: fc.integer({ min: 0, max: 7 }) }, { weight: 1, arbitrary: u16 }),
  cookie: fc.uint8Array({ minLength: 8, maxLength: 8 }),
  offset: offsets,
  length: lengths,
});
const requestHeader = (r: { magic: number; flags: number; type: number; cookie: Uint8Array; offset: bigint; length: number }): Uint8Array =>
  concat([be32(r.magic), be16(r.flags), be16(r.type), r.cookie, be64(r.offset), be32(r.length)]);

const requestTarget = target(
  'nbd-request-header',
  'transmission request header decoder under every negotiated context',
  fc.tuple(requestFields, fc.record({
    sizeBytes: fc.oneof(fc.constantFrom(0, 512, SIZE, 2 ** 53 - 1), fc.integer({ min: 0, max: 2 ** 40 })),
    readOnly: fc.boolean(), structured: fc.boolean(), canFastZero: fc.boolean(),
    allocationContextId: fc.option(fc.constant(1), { nil: undefined }),
    blockSizeNegotiated: fc.boolean(),
  })),
  ([r, drawn]) => {
    // A client that negotiated block sizes gets MAX_PAYLOAD_BYTES; one that did not, the export's size.
    const { blockSizeNegotiated, ...rest } = drawn;
    const ctx: TransmissionContext = { ...rest, maxPayloadBytes: blockSizeNegotiated ? MAX_PAYLOAD_BYTES : drawn.sizeBytes };
    const decoded = decodeNbdRequest(requestHeader(r), ctx);
    const inside = r.offset + BigInt(r.length) <= BigInt(ctx.sizeBytes);
    if (r.magic !== REQUEST_MAGIC) { assert.equal(decoded.kind, 'fatal'); return; }
    switch (decoded.kind) {
      case 'fatal':
        assert.ok(r.type === Cmd.Write && r.length > Math.max(ctx.sizeBytes, MAX_PAYLOAD_BYTES), 'only writes longer than the export and any payload are fatal');
        return;
      case 'disconnect': assert.equal(r.type, Cmd.Disc); return;
      case 'write':
        assert.ok(r.type === Cmd.Write && inside && !ctx.readOnly && r.length <= ctx.maxPayloadBytes);
        assert.equal(decoded.offset, Number(r.offset)); assert.deepEqual(decoded.cookie, r.cookie);
        return;
      case 'refused-write':
        assert.ok(r.type === Cmd.Write && decoded.length === r.length); assert.deepEqual(decoded.cookie, r.cookie);
        return;
      case 'command': {
        const c = decoded.command;
        assert.deepEqual(c.cookie, r.cookie, 'the reply echoes the cookie');
        if (c.type === 'invalid') return;
        const types: Record<string, number> = { read: Cmd.Read, flush: Cmd.Flush, trim: Cmd.Trim, cache: Cmd.Cache, 'write-zeroes': Cmd.WriteZeroes, 'block-status': Cmd.BlockStatus };
        assert.equal(types[c.type], r.type);
        if (c.type !== 'flush' && c.type !== 'write') {
          assert.ok(inside && Number.isSafeInteger(c.offset) && c.offset + c.length <= ctx.sizeBytes, 'accepted ranges lie inside the export');
        }
        if (c.type === 'read') assert.ok(c.length <= ctx.maxPayloadBytes);
        if (c.type === 'trim' || c.type === 'write-zeroes') assert.ok(!ctx.readOnly, 'nothing changes a read-only export');
        if (c.type === 'block-status') assert.ok(ctx.structured && ctx.allocationContextId !== undefined && c.length > 0);
        return;
      }
    }
  },
);

// ---- NBD: the whole connection machine, against an independent model of the client's stream ----

const EXPORTS: Record<string, ExportInfo> = {
  vol: { name: 'vol', sizeBytes: SIZE, readOnly: false, canFastZero: true, description: 'fuzz volume' },
  ro: { name: 'ro', sizeBytes: 65536, readOnly: true, canFastZero: false, description: '' },
};
const directory: ExportDirectory = {
  list: () => Object.values(EXPORTS),
  lookup: (name) => {
    const info = EXPORTS[name === '' ? 'vol' : name];
    if (name === 'busy') return { kind: 'refused', message: 'not ready' };
    return info && Object.hasOwn(EXPORTS, name === '' ? 'vol' : name) ? { kind: 'found', info } : { kind: 'unknown' };
  },
};

const optionArb = fc.oneof(
  { weight: 3, arbitrary: fc.record({ code: fc.constant<number>(Opt.Go), data: infoPayload }) },
  { weight: 2, arbitrary: fc.record({ code: fc.constantFrom<number>(Opt.Info, Opt.Go), data: infoPayload }) },
  { weight: 2, arbitrary: fc.record({ code: fc.constantFrom<number>(Opt.ListMetaContext, Opt.SetMetaContext), data: metaPayload }) },
  { weight: 2, arbitrary: fc.record({ code: fc.constant<number>(Opt.StructuredReply), data: fc.constant(new Uint8Array(0)) }) },
  { weight: 1, arbitrary: fc.record({ code: fc.constant<number>(Opt.ExportName), data: nbdString.map(utf8) }) },
  {
    weight: 1, arbitrary: fc.record({
      code: fc.oneof(fc.constantFrom<number>(Opt.Abort, Opt.List, Opt.StartTls, Opt.ExtendedHeaders), u32),
      data: fc.uint8Array({ maxLength: 16 }),
    }),
  },
);
const writePayload = (length: number): fc.Arbitrary<Uint8Array> =>
  fc.integer({ min: 0, max: 255 }).map((fill) => new Uint8Array(Math.min(length, 8192)).fill(fill));
const nbdRequest = requestFields.chain((r) =>
  (r.type === Cmd.Write && r.length <= 8192 ? writePayload(r.length) : fc.constant(new Uint8Array(0))).map((payload) => concat([requestHeader(r), payload])));
/** Mostly an option that enters transmission, so requests are reached; sometimes none. */
const finalOption = fc.oneof(
  { weight: 6, arbitrary: fc.record({ code: fc.constant<number>(Opt.Go), data: fc.tuple(fc.constantFrom('vol', 'ro', ''), fc.array(fc.integer({ min: 0, max: 3 }), { maxLength: 3 }))
    .map(([name, requested]) => concat([be32(utf8(name).length), utf8(name), be16(requested.length), ...requested.map(be16)])) }) },
  { weight: 2, arbitrary: fc.record({ code: fc.constant<number>(Opt.ExportName), data: fc.constantFrom('vol', 'ro', '').map(utf8) }) },
  { weight: 2, arbitrary: optionArb },
);
/** A well-formed request more often than not: small ranges inside the export, valid flags. */
const plausibleRequest = fc.record({
  magic: fc.constant(REQUEST_MAGIC),
  flags: fc.constantFrom(0, 0, 0, CmdFlag.Fua, CmdFlag.NoHole, CmdFlag.Df, CmdFlag.ReqOne, CmdFlag.FastZero),
  type: fc.integer({ min: 0, max: 7 }).filter((t) => t !== Cmd.Disc),
  cookie: fc.uint8Array({ minLength: 8, maxLength: 8 }),
  offset: fc.integer({ min: 0, max: 70_000 }).map(BigInt),
  length: fc.integer({ min: 0, max: 4096 }),
}).chain((r) => (r.type === Cmd.Write ? writePayload(r.length) : fc.constant(new Uint8Array(0))).map((payload) => concat([requestHeader(r), payload])));
export const sessionBytes = fc.record({
  flags: fc.oneof({ weight: 6, arbitrary: fc.constantFrom(1, 3) }, { weight: 1, arbitrary: u32 }),
  // What qemu sends first: structured replies, then base:allocation for the export (block status needs both).
  prelude: fc.constantFrom([], [{ code: Opt.StructuredReply as number, data: new Uint8Array(0) }, {
    code: Opt.SetMetaContext as number, data: concat([be32(3), utf8('vol'), be32(1), be32(15), utf8('base:allocation')]),
  }]),
  options: fc.array(optionArb, { maxLength: 4 }),
  last: finalOption,
  requests: fc.array(fc.oneof({ weight: 3, arbitrary: plausibleRequest }, { weight: 1, arbitrary: nbdRequest }), { maxLength: 8 }),
}).map(({ flags, prelude, options, last, requests }) => concat([
  be32(flags),
  ...[...prelude, ...options, last].flatMap((o) => [be64(IHAVEOPT), be32(o.code), be32(o.data.length), o.data]),
  ...requests,
]));

interface Cursor { pos: number }
const view = (b: Uint8Array): DataView => new DataView(b.buffer, b.byteOffset, b.byteLength);

/**
 * Walks the client's bytes with a parser written apart from the machine, consuming the machine's
 * actions as it goes. Returns the bytes the machine should still hold undecoded (undefined once ended).
 */
function modelWalk(bytes: Uint8Array, actions: readonly NbdAction[]): number | undefined {
  let i = 0;
  const next = (what: string): NbdAction => {
    const a = actions[i++];
    assert.ok(a, `expected ${what}, got no action`);
    return a;
  };
  const expectEnd = (kind: 'close' | 'disconnect'): undefined => {
    assert.equal(next(kind).kind, kind);
    assert.equal(i, actions.length, 'nothing after the connection ended');
    return undefined;
  };
  const done = (held: number): number => {
    assert.equal(i, actions.length, `unexpected actions: ${actions.slice(i).map((a) => a.kind).join(',')}`);
    return held;
  };
  const greet = next('greeting');
  assert.ok(greet.kind === 'send' && view(greet.bytes).getBigUint64(0) === NBDMAGIC);
  const c: Cursor = { pos: 0 };
  const left = (): number => bytes.length - c.pos;
  if (left() < 4) return done(left());
  const clientFlags = view(bytes).getUint32(0); c.pos = 4;
  if ((clientFlags & ~3) !== 0) return expectEnd('close');
  const fixed = (clientFlags & 1) !== 0;
  const noZeroes = (clientFlags & 2) !== 0;
  let session: { info: ExportInfo; structured: boolean } | undefined;
  while (session === undefined) {
    if (left() < 16) return done(left());
    const h = view(bytes.subarray(c.pos, c.pos + 16));
    c.pos += 16;
    const code = h.getUint32(8);
    const length = h.getUint32(12);
    if (h.getBigUint64(0) !== IHAVEOPT || length > MAX_OPTION_BYTES || (!fixed && code !== Opt.ExportName)) return expectEnd('close');
    if (left() < length) return done(left());
    c.pos += length;
    if (code === Opt.ExportName) {
      const a = next('EXPORT_NAME answer');
      if (a.kind === 'close') {
        assert.equal(i, actions.length, 'nothing after the connection closed');
        return undefined;
      }
      assert.ok(a.kind === 'send' && a.bytes.length === (noZeroes ? 10 : 134), 'EXPORT_NAME reply is size, flags and maybe zeroes');
      const t = next('transmission');
      assert.equal(t.kind, 'transmission');
      if (t.kind === 'transmission') session = { info: t.export, structured: t.structured };
      continue;
    }
    if (code === Opt.Abort) {
      const a = next('ABORT ack');
      assert.ok(a.kind === 'send' && view(a.bytes).getUint32(8) === Opt.Abort);
      return expectEnd('disconnect');
    }
    // Every other option: zero or more informational replies, then exactly one final reply, all naming this option.
    for (;;) {
      const a = next(`reply to option ${code}`);
      assert.equal(a.kind, 'send', `option ${code} answered with ${a.kind}`);
      if (a.kind !== 'send') return undefined;
      const r = view(a.bytes);
      assert.equal(r.getBigUint64(0), OPTION_REPLY_MAGIC);
      assert.equal(r.getUint32(8), code, 'the reply names the option it answers');
      assert.equal(r.getUint32(16), a.bytes.length - 20, 'reply length field matches its payload');
      const type = r.getUint32(12);
      const known = ([Opt.List, Opt.Info, Opt.Go, Opt.StructuredReply, Opt.ListMetaContext, Opt.SetMetaContext] as number[]).includes(code);
      // STARTTLS on a server without TLS (the machine's default): malformed (with data) or unsupported.
      if (code === Opt.StartTls) assert.equal(type, length === 0 ? Rep.ErrUnsup : Rep.ErrInvalid, 'STARTTLS without TLS configured');
      else if (!known) assert.equal(type, Rep.ErrUnsup, `unknown option ${code} must be refused as unsupported`);
      if (type === Rep.Ack || type >= 0x80000000) {
        if (code === Opt.Go && type === Rep.Ack) {
          const t = next('transmission after GO');
          assert.equal(t.kind, 'transmission');
          if (t.kind === 'transmission') session = { info: t.export, structured: t.structured };
        }
        break;
      }
      assert.ok(([Rep.Server, Rep.Info, Rep.MetaContext] as number[]).includes(type), `informational reply type ${type}`);
    }
  }
  // Transmission: one action per request, in order, with the request's cookie.
  const { info } = session;
  for (;;) {
    if (left() < REQUEST_HEADER_BYTES) return done(left());
    const h = view(bytes.subarray(c.pos, c.pos + REQUEST_HEADER_BYTES));
    const cookie = bytes.slice(c.pos + 8, c.pos + 16);
    c.pos += REQUEST_HEADER_BYTES;
    const flags = h.getUint16(4);
    const type = h.getUint16(6);
    const offset = h.getBigUint64(16);
    const length = h.getUint32(24);
    const inside = offset + BigInt(length) <= BigInt(info.sizeBytes);
    if (h.getUint32(0) !== REQUEST_MAGIC) return expectEnd('close');
    if (type === Cmd.Disc) return expectEnd('disconnect');
    if (type === Cmd.Write) {
      if (length > MAX_PAYLOAD_BYTES) return expectEnd('close');
      // Payload bytes are consumed as they arrive (copied or dropped): nothing stays buffered.
      if (left() < length) return done(0);
      const payload = bytes.subarray(c.pos, c.pos + length);
      c.pos += length;
      const a = next('write answer');
      assert.equal(a.kind, 'command');
      if (a.kind !== 'command') return undefined;
      assert.deepEqual(a.command.cookie, cookie);
      const acceptable = (flags & ~CmdFlag.Fua) === 0 && !info.readOnly && inside;
      if (acceptable) {
        assert.ok(a.command.type === 'write' && a.command.offset === Number(offset));
        if (a.command.type === 'write') assert.deepEqual(Uint8Array.from(a.command.data), Uint8Array.from(payload), 'written data is the payload');
      } else assert.equal(a.command.type, 'invalid', 'a write that must be refused never reaches the volume');
      continue;
    }
    const a = next(`answer to command ${type}`);
    assert.equal(a.kind, 'command');
    if (a.kind !== 'command') return undefined;
    assert.deepEqual(a.command.cookie, cookie, 'every answer carries its request\'s cookie');
    const cmd = a.command;
    if (cmd.type === 'invalid') continue;
    assert.notEqual(cmd.type, 'write');
    if (cmd.type !== 'flush') assert.ok(inside, `${cmd.type} accepted outside the export`);
    if (cmd.type === 'read') assert.ok(length <= MAX_PAYLOAD_BYTES, 'reads never exceed the advertised maximum');
    if (cmd.type === 'trim' || cmd.type === 'write-zeroes') assert.ok(!info.readOnly, 'nothing changes a read-only export');
    if (cmd.type === 'block-status') assert.ok(session.structured, 'block status only with structured replies');
  }
}

function runConnection(chunks: readonly Uint8Array[], total: number): { actions: NbdAction[]; conn: NbdConnection } {
  const conn = new NbdConnection(directory);
  const actions: NbdAction[] = [];
  // Each action consumes at least one received byte (the greeting aside): more polls than that is a hang.
  const bound = total + 2;
  const drain = (): void => {
    for (let a = conn.poll(); a !== undefined; a = conn.poll()) {
      actions.push(a);
      if (actions.length > bound) throw new Error(`connection produced more than ${bound} actions for ${total} bytes`);
    }
  };
  drain();
  for (const chunk of chunks) {
    conn.receive(chunk);
    drain();
    // Bounded buffering: at most one option (header + data) or one request header waits undecoded.
    if (!conn.ended) assert.ok(conn.bufferedBytes <= 16 + MAX_OPTION_BYTES, `holds ${conn.bufferedBytes} undecoded bytes`);
  }
  return { actions, conn };
}

const sameActions = (a: readonly NbdAction[], b: readonly NbdAction[]): void =>
  assert.deepEqual(a.map(normalise), b.map(normalise), 'how the bytes were chunked changed what the connection did');
function normalise(a: NbdAction): unknown {
  if (a.kind === 'send') return { kind: 'send', bytes: Array.from(a.bytes) };
  if (a.kind === 'command' && a.command.type === 'write') return { ...a.command, data: Array.from(a.command.data), cookie: Array.from(a.command.cookie) };
  if (a.kind === 'command') return { ...a.command, cookie: Array.from(a.command.cookie) };
  return a;
}

const connectionTarget = target(
  'nbd-connection',
  'handshake + transmission machine fed structured sessions with damage, in arbitrary chunkings, checked against a model',
  fc.tuple(fc.oneof({ weight: 4, arbitrary: sessionBytes }, { weight: 1, arbitrary: fc.uint8Array({ maxLength: 200 }) }), damage, cuts),
  ([session, d, at]) => {
    const bytes = applyDamage(session, d);
    const whole = runConnection([bytes], bytes.length);
    const pieces = runConnection(chunked(bytes, at), bytes.length);
    sameActions(whole.actions, pieces.actions);
    const held = modelWalk(bytes, whole.actions);
    if (held !== undefined) {
      assert.equal(whole.conn.bufferedBytes, held, 'the machine decodes everything it can and holds only the incomplete unit');
      assert.equal(pieces.conn.bufferedBytes, held);
    } else assert.ok(whole.conn.ended);
  },
);

// ---- link: frame decoder ----

const frameArb: fc.Arbitrary<Frame> = fc.oneof(
  fc.record({
    type: fc.constant<FrameType>(FrameType.Data), flags: fc.integer({ min: 0, max: DataFlag.First | DataFlag.Last }),
    seq: fc.oneof(fc.nat(), fc.constant(MAX_SEQ)), payload: fc.uint8Array({ maxLength: 300 }),
  }),
  fc.record({
    type: fc.constantFrom<FrameType>(FrameType.Hello, FrameType.Auth, FrameType.Error, FrameType.Resume, FrameType.Ack, FrameType.Heartbeat),
    flags: fc.constant(0), seq: fc.oneof(fc.nat(), fc.constant(MAX_SEQ)), payload: fc.uint8Array({ maxLength: 100 }),
  }),
);

function decodeAll(chunks: readonly Uint8Array[], maxPayload: number): { frames: Frame[]; end: string; buffered: number } {
  const decoder = new FrameDecoder(maxPayload);
  const frames: Frame[] = [];
  let end = 'need-more';
  let total = 0;
  for (const chunk of chunks) {
    decoder.push(chunk);
    total += chunk.length;
    for (let steps = 0; ; steps++) {
      assert.ok(steps <= total / FRAME_HEADER_BYTES + 2, 'decoder yields more frames than the bytes can hold');
      const r = decoder.next();
      if (r.kind === 'frame') { frames.push(r.frame); continue; }
      end = r.kind;
      if (r.kind !== 'need-more') {
        assert.deepEqual(decoder.next(), r, 'a failed decoder stays failed');
        assert.equal(decoder.bufferedBytes, 0, 'a failed decoder holds nothing');
      }
      break;
    }
    if (end !== 'need-more') break;
    assert.ok(decoder.bufferedBytes < FRAME_HEADER_BYTES + maxPayload, `decoder holds ${decoder.bufferedBytes} bytes`);
  }
  return { frames, end, buffered: decoder.bufferedBytes };
}
const plainFrame = (f: Frame): unknown => ({ ...f, payload: Array.from(f.payload) });

const frameTarget = target(
  'link-frame-decoder',
  'incremental frame decoder: valid streams round-trip in any chunking; damaged and random streams never yield an altered frame',
  fc.tuple(fc.array(frameArb, { maxLength: 6 }), damage, cuts, fc.uint8Array({ maxLength: 80 }), fc.constantFrom(64, 256, 1024 * 1024)),
  ([frames, d, at, noise, maxPayload]) => {
    const fits = frames.filter((f) => f.payload.length <= maxPayload);
    const stream = concat(fits.map((f) => frameToBytes(encodeFrame(f.type, f.flags, f.seq, f.payload))));
    const clean = decodeAll(chunked(stream, at), maxPayload);
    assert.equal(clean.end, 'need-more');
    assert.deepEqual(clean.frames.map(plainFrame), fits.map(plainFrame), 'decode(encode(frames)) == frames');
    assert.equal(clean.buffered, 0);
    // Damaged: whatever comes out is a prefix of what was sent (CRC32C catches the change), then an error or a wait.
    const bad = applyDamage(stream, d);
    const damaged = decodeAll(chunked(bad, at), maxPayload);
    const prefix = fits.slice(0, damaged.frames.length).map(plainFrame);
    let changedAt = bad.findIndex((b, k) => b !== stream[k]);
    if (changedAt < 0) changedAt = Infinity;
    // A frame lying wholly before the first damaged byte must come out unchanged; later ones may not come out at all.
    let end = 0;
    for (let k = 0; k < damaged.frames.length; k++) {
      end += FRAME_HEADER_BYTES + fits[k]!.payload.length;
      if (end <= changedAt) assert.deepEqual(plainFrame(damaged.frames[k]!), prefix[k]);
      else assert.fail(`a frame containing a damaged byte was accepted (frame ${k})`);
    }
    // Pure noise, possibly after valid frames.
    decodeAll(chunked(concat([stream, noise]), at), maxPayload);
  },
);

// ---- link: handshake payloads ----

const arrayName = fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/);
const helloArb: fc.Arbitrary<Hello> = fc.record({
  windowBytes: fc.integer({ min: MIN_WINDOW_BYTES, max: 0xffffffff }),
  nonce: fc.uint8Array({ minLength: NONCE_BYTES, maxLength: NONCE_BYTES }),
  incarnation: fc.uint8Array({ minLength: INCARNATION_BYTES, maxLength: INCARNATION_BYTES }),
  name: arrayName,
  protocolVersion: u16,
});

const handshakeTarget = target(
  'link-handshake',
  'HELLO and ERROR payload decoders: round trips, damaged and random payloads',
  fc.tuple(helloArb, damage, fc.uint8Array({ maxLength: 120 }), fc.string({ maxLength: 600 }), fc.integer({ min: 1, max: 5 })),
  ([hello, d, noise, message, code]) => {
    const decoded = decodeHello(encodeHello(hello));
    assert.ok(decoded.ok, 'a valid HELLO decodes');
    if (decoded.ok) assert.deepEqual({ ...decoded.value }, { ...hello }, 'decodeHello(encodeHello(h)) == h');
    for (const bytes of [applyDamage(encodeHello(hello), d), noise]) {
      const r = decodeHello(bytes);
      if (r.ok) {
        assert.ok(isValidArrayName(r.value.name) && r.value.windowBytes >= MIN_WINDOW_BYTES);
        assert.ok(r.value.nonce.length === NONCE_BYTES && r.value.incarnation.length === INCARNATION_BYTES);
      } else assert.equal(typeof r.reason, 'string');
      const e = decodeError(bytes);
      assert.ok(/^[\x20-\x7e]*$/.test(e.message), 'error text from a peer is printable ASCII when logged');
      assert.ok(Number.isInteger(e.code) && e.code >= 0 && e.code <= 0xffff);
    }
    const err = decodeError(encodeError(code as LinkErrorCode, message));
    assert.equal(err.code, code);
    if (/^[\x20-\x7e]*$/.test(message)) assert.equal(err.message, message.slice(0, MAX_ERROR_MESSAGE_BYTES));
  },
);

// ---- replication: peer message codec ----

const segmentArb: fc.Arbitrary<Segment> = fc.oneof(
  fc.record({ kind: fc.constant<'data'>('data'), offset: fc.oneof(fc.nat(), fc.constant(Number.MAX_SAFE_INTEGER)), data: fc.uint8Array({ maxLength: 64 }) }),
  fc.record({ kind: fc.constant<'zero'>('zero'), offset: fc.oneof(fc.nat(), fc.constant(Number.MAX_SAFE_INTEGER)), length: u32 }),
);
const jsonObject = fc.dictionary(fc.string({ maxLength: 8 }), fc.jsonValue({ maxDepth: 3 }), { maxKeys: 5 });
const messageArb: fc.Arbitrary<PeerMessage> = fc.record({
  type: fc.constantFrom<'request' | 'response'>('request', 'response'),
  id: u32,
  header: jsonObject,
  segments: fc.array(segmentArb, { maxLength: 5 }),
});
const plainMessage = (m: PeerMessage): unknown => ({
  ...m, header: JSON.parse(JSON.stringify(m.header)) as unknown,
  segments: m.segments.map((s) => (s.kind === 'data' ? { ...s, data: Array.from(s.data) } : { ...s })),
});

const peerMessageTarget = target(
  'peer-message-codec',
  'replication message decoder: round trips; damaged and random messages give TM_ERR_PROTOCOL or a valid message',
  fc.tuple(messageArb, damage, fc.uint8Array({ maxLength: 120 })),
  ([message, d, noise]) => {
    const bytes = encodeMessage(message);
    assert.deepEqual(plainMessage(decodeMessage(bytes)), plainMessage(message), 'decodeMessage(encodeMessage(m)) == m');
    for (const input of [applyDamage(bytes, d), noise]) {
      const r = onlyTypedErrors(() => decodeMessage(input), [ErrorCode.Protocol]);
      peekRequestId(input);
      if (r instanceof TidemarkError) continue;
      assert.ok(r.segments.length <= MAX_SEGMENTS);
      // What decodes can be sent on (answered, forwarded) and decodes to the same message again.
      assert.deepEqual(plainMessage(decodeMessage(encodeMessage(r))), plainMessage(r), 'a decoded message survives re-encoding');
      assert.equal(r.segments.reduce((n, s) => n + 13 + (s.kind === 'data' ? s.data.length : 0), 0),
        input.length - 13 - new DataView(input.buffer, input.byteOffset + 5, 4).getUint32(0), 'every segment byte is accounted for');
    }
  },
);

// ---- replication: peer protocol schemas ----

const FIELD_VALUES = fc.oneof(
  fc.jsonValue({ maxDepth: 2 }),
  fc.constantFrom('east.db.1a2b', 'db', 'R1', 'R2', 'async', 'sync', 'semisync', 'replicating', 'records', 'seal', 'commit', 'query-ready'),
  fc.integer({ min: -1, max: 2 ** 53 }), fc.constant(null), fc.boolean(),
);
const FIELD_NAMES = fc.constantFrom('pair', 'fua', 'tracks', 'record', 'sizeBytes', 'trackBytes', 'intent', 'generation', 'returnOwn',
  'cycle', 'groupFrom', 'msg', 'whole', 'mode', 'command', 'group', 'volume', 'member', 'force', 'action', 'table', 'kind', '__proto__', 'constructor');
const headerArb = fc.oneof(
  fc.record({ op: fc.oneof(fc.constantFrom(...PEER_OPS), fc.string({ maxLength: 12 })), fields: fc.dictionary(FIELD_NAMES, FIELD_VALUES, { maxKeys: 6 }) })
    .map(({ op, fields }) => ({ ...fields, op })),
  fc.jsonValue({ maxDepth: 4 }),
);
/** A header nested `depth` deep, as a peer can send it (built in the property: fast-check cannot print it). */
const deepHeader = (depth: number, op: string): string => `{"op":${JSON.stringify(op)},"group":"g","pair":"p","x":${'['.repeat(depth)}${']'.repeat(depth)}}`;

const peerProtocolTarget = target(
  'peer-protocol-schemas',
  'peer request/reply header validation on arbitrary JSON: typed result, stable across the wire',
  fc.tuple(headerArb, fc.constantFrom(...PEER_OPS), fc.option(fc.integer({ min: 1, max: 20_000 }), { freq: 8 })),
  ([generated, replyOp, depth]) => {
    let header: unknown = generated;
    if (depth !== null) {
      // Deep nesting, through the codec as it arrives: either refused there, or usable like any header.
      const text = utf8(deepHeader(depth, replyOp));
      const raw = concat([Uint8Array.of(0), be32(1), be32(text.length), text, be32(0)]);
      const m = onlyTypedErrors(() => decodeMessage(raw), [ErrorCode.Protocol]);
      if (m instanceof TidemarkError) return;
      header = m.header;
    }
    const r = onlyTypedErrors(() => decodePeerRequest(header));
    assert.ok(!(r instanceof TidemarkError), 'decodeRequest returns its errors, it does not throw them');
    if (r.ok) {
      // What a receiver accepts, it still accepts after the codec carried it (JSON on the wire).
      const again = decodeMessage(encodeMessage({ type: 'request', id: 1, header: r.value as Record<string, unknown>, segments: [] }));
      assert.ok(decodePeerRequest(again.header).ok, 'a valid request stays valid across the wire');
    } else assert.ok(r.error.code === ErrorCode.Protocol || r.error.code === ErrorCode.Unsupported, r.error.code);
    const reply = onlyTypedErrors(() => decodeReply(replyOp, header));
    assert.ok(!(reply instanceof TidemarkError));
    if (!reply.ok) assert.equal(reply.error.code, ErrorCode.Protocol);
  },
);

// ---- HTTP API: request schemas and the access check ----

interface PartValidator { route: string; part: RequestPart; validate: Validator }
const VALIDATORS: PartValidator[] = API_ROUTES.flatMap((route) => (['params', 'querystring', 'body'] as const)
  .filter((part) => route[part === 'querystring' ? 'querystring' : part] !== undefined)
  .map((part) => ({ route: `${route.method} ${route.url}`, part, validate: compileValidator(route[part]!, part) })));

/** What fastify hands the validators: parsed JSON for bodies, strings (or string arrays) for params and query strings. */
const bodyValue = fc.oneof(
  fc.jsonValue({ maxDepth: 3 }),
  fc.dictionary(fc.constantFrom('name', 'sizeBytes', 'std', 'clone', 'differential', 'incremental', 'peer', 'volume', 'mode', 'remoteVolume',
    'group', 'force', 'intent', 'readOnly', 'description', 'url', 'secret', 'secretFile', 'cycleMs', '__proto__'), FIELD_VALUES, { maxKeys: 5 }),
  fc.constantFrom(undefined, null),
);
const textValue = fc.oneof(fc.string({ maxLength: 20 }), fc.constantFrom('', '0', '-1', '1e3', 'true', 'NaN', '9007199254740993', 'a'.repeat(300)));
const queryValue = fc.oneof(
  fc.dictionary(fc.oneof(fc.constantFrom('std', 'name', 'volume', 'peer', 'group', 'limit', '__proto__', 'constructor'), fc.string({ maxLength: 6 })),
    fc.oneof(textValue, fc.array(textValue, { maxLength: 3 })), { maxKeys: 4 }),
  fc.constantFrom(undefined, null, {}),
);

const httpSchemaTarget = target(
  'http-schemas',
  'every API route\'s TypeBox params/query/body validator on arbitrary values: accepted values match, refusals are TM_ERR_INVALID_ARGUMENT',
  fc.tuple(fc.nat(), bodyValue, queryValue),
  ([which, body, query]) => {
    const v = VALIDATORS[which % VALIDATORS.length]!;
    const input = v.part === 'body' ? body : query;
    const result = onlyTypedErrors(() => v.validate(input));
    assert.ok(!(result instanceof TidemarkError), `${v.route} ${v.part}: the validator threw`);
    if ('error' in result) {
      assert.equal(result.error.code, ErrorCode.InvalidArgument);
      assert.ok(result.error.message.length < 10_000, 'the refusal stays short');
    } else {
      // Accepted once is accepted again: the handler's view of the value is a fixed point.
      const again = v.validate(result.value);
      assert.ok('value' in again, `${v.route} ${v.part}: an accepted value is refused when validated again`);
    }
  },
);

const policy: ApiAccessPolicy = { tokens: [{ token: 'admin-token', scope: 'admin' }, { token: 'read-token', scope: 'read' }], hosts: new Set(['east.example']) };
const headerText = fc.oneof(fc.string({ maxLength: 40 }), fc.constantFrom(undefined, '', 'Bearer admin-token', 'bearer  read-token ',
  'Bearer admin-token x', 'application/json', 'application/json; charset=utf-8', 'text/plain', 'localhost:7480', '[::1]:7480', 'east.example.',
  'evil.example', '127.0.0.1', 'a.localhost', 'x:y:z', '['));
const accessTarget = target(
  'http-access',
  'API access check on arbitrary Host, Authorization and Content-Type headers: refusals are typed; no token, no entry',
  fc.record({
    method: fc.oneof(fc.constantFrom('GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'), fc.string({ maxLength: 8 })),
    host: headerText, authorization: headerText, contentType: headerText, isPublic: fc.boolean(),
  }),
  (request) => {
    const refusal = checkAccess(request, policy);
    if (refusal !== undefined) {
      assert.ok(refusal instanceof TidemarkError);
      assert.ok(([ErrorCode.Forbidden, ErrorCode.Unauthorized, ErrorCode.UnsupportedMediaType] as string[]).includes(refusal.code));
      return;
    }
    if (!request.isPublic) {
      const token = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(request.authorization ?? '')?.[1];
      assert.ok(token === 'admin-token' || (token === 'read-token' && ['GET', 'HEAD'].includes(request.method)), 'served without a valid token');
    }
  },
);

// ---- HTTP API: the running server (fastify's parsing, the access hook, validation, the error handler) ----

const TOKEN = 'fuzz-token-0123456789';
const BACKEND_MARK = 'fuzz backend reached';
/** Every backend call fails the same typed way: a request that reaches it passed everything before. */
function refusingBackend(): ApiBackend {
  const refuse = (): never => { throw new TidemarkError(ErrorCode.NotFound, BACKEND_MARK); };
  const part = new Proxy({}, { get: () => refuse });
  const parts = new Set(['clones', 'replication', 'groups', 'cascades']);
  return new Proxy({}, { get: (_t, key) => (parts.has(String(key)) ? part : refuse) }) as ApiBackend;
}
let server: Promise<ApiServer> | undefined;
// A fresh connection per request: a reused one the server has just closed would fail the next input, not this one.
const agent = new Agent({ keepAlive: false });
function send(port: number, method: string, path: string, headers: Record<string, string>, body: string | undefined):
Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, method, path, headers, agent, timeout: 10_000 }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => { text += d; });
      res.on('end', () => resolve({ status: res.statusCode!, text }));
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${path} did not answer within 10 s`)));
    req.on('error', reject);
    req.end(body);
  });
}
const pathSegment = fc.oneof(fc.constantFrom('keep', 'a', '..', '%00', '%ZZ', 'x'.repeat(300), '%2F', 'é'), fc.string({ maxLength: 12 }))
  .map((seg) => (/^[A-Za-z0-9._%-]*$/.test(seg) && seg !== '' ? seg : encodeURIComponent(seg) || 'e'));
const bodyText = fc.oneof(
  bodyValue.map((v) => (v === undefined ? undefined : JSON.stringify(v))),
  fc.string({ maxLength: 40 }),
  fc.constantFrom('', '{', '{"name":', '[]', 'null', '"x"', '{"__proto__":{"x":1}}', '{"constructor":{"prototype":{}}}', `{"a":${'['.repeat(2000)}${']'.repeat(2000)}}`),
);

const httpServerTarget: FuzzTarget = {
  name: 'http-server',
  what: 'the in-process API server (token given) with arbitrary paths, query strings, content types and bodies on every route: never a 5xx, always the error shape, the backend only sees validated input',
  property: fc.asyncProperty(fc.nat(), fc.array(pathSegment, { minLength: 3, maxLength: 3 }), fc.string({ maxLength: 20 }), bodyText,
    fc.constantFrom('application/json', 'application/json; charset=utf-8', 'application/JSON', 'text/plain', 'application/json;;'),
    async (which, segments, query, body, contentType) => {
      server ??= startApiServer({
        backend: refusingBackend(), logger: { info() {}, warn() {}, debug() {}, error() {} }, host: '127.0.0.1', port: 0, version: 'fuzz',
        access: { tokens: [{ token: TOKEN, scope: 'admin' }], hosts: new Set() },
      });
      const { port } = (await server).address;
      const route = API_ROUTES[which % API_ROUTES.length]!;
      let k = 0;
      const path = route.url.replace(/:[A-Za-z]+/g, () => segments[k++ % segments.length]!) + (query === '' ? '' : `?${encodeURIComponent(query).replace(/%3D/g, '=').replace(/%26/g, '&')}`);
      const headers: Record<string, string> = { authorization: `Bearer ${TOKEN}`, 'content-type': contentType };
      // Said explicitly: node sends a DELETE's body without a length, which the server reads as a second, garbled request.
      if (route.method !== 'GET' && body !== undefined) headers['content-length'] = String(Buffer.byteLength(body));
      const res = await send(port, route.method, path, headers, route.method === 'GET' ? undefined : body);
      assert.ok(res.status < 500, `${route.method} ${path} ${JSON.stringify(body)?.slice(0, 200)} → ${res.status} ${res.text.slice(0, 300)}`);
      if (res.status >= 400) {
        const parsed = JSON.parse(res.text) as { error?: { code?: unknown; message?: unknown } };
        assert.ok(typeof parsed.error?.code === 'string' && STABLE_CODES.has(parsed.error.code), `${route.method} ${path}: error shape ${res.text.slice(0, 200)}`);
        // Reached the backend: then the body passed the route's schema (nothing unvalidated gets through).
        if (parsed.error.message === BACKEND_MARK && route.body && body !== undefined && body !== '') {
          const v = compileValidator(route.body, 'body')(JSON.parse(body) as unknown);
          assert.ok('value' in v, `${route.method} ${route.url}: the backend saw a body its schema refuses`);
        }
      }
    }) as unknown as fc.IRawProperty<unknown[]>,
  dispose: async () => {
    if (server) await (await server).close();
    server = undefined;
    agent.destroy();
  },
};

export const FUZZ_TARGETS: readonly FuzzTarget[] = [
  optionPayloadTarget, requestTarget, connectionTarget, frameTarget, handshakeTarget, peerMessageTarget, peerProtocolTarget,
  httpSchemaTarget, accessTarget, httpServerTarget,
];
