// The operations arrays ask of each other (the peer protocol), as one table of schemas: for each
// operation the header of its request and the header of its reply. The codec (peer-messages.ts)
// carries a header as JSON beside binary segments; PeerRpc decodes every header through here
// before a handler runs, so handlers take typed, validated input and check only what needs local
// state (a track index below the volume's track count, a pair that exists here).
//
// TypeBox is a schema library, pure like the rest of the core (no I/O, clock or randomness): the
// types below are derived from the schemas, so the wire and the code cannot drift apart.
//
// Versioning: PEER_PROTOCOL_VERSION travels in the link HELLO (core/link/handshake.ts); arrays
// that speak different versions refuse each other at the handshake. Within one version a sender
// may add fields a receiver ignores (objects accept unknown properties); removing or retyping a
// field, or adding an operation a peer must understand, is a new version.
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { TypeCompiler, type TypeCheck } from '@sinclair/typebox/compiler';
import { ErrorCode, TidemarkError } from '../errors.js';
import { LINK_FAILURE_POLICIES, MAX_MIN_AGE_MS, PAIR_INTENTS, PAIR_MODES } from './pair-record.js';
import { JOURNAL_PEER_OPERATIONS } from '../journal/journal-wire.js';
import { MAX_ROUTE_HOPS } from '../routing/route-decision.js';

/**
 * 1: the untyped protocol, before the HELLO carried a version (a HELLO without the field is v1).
 * 2: every operation below, validated at the boundary.
 * 3: journal operations (core/journal/journal-wire.ts) and routed API requests (route.request).
 */
export const PEER_PROTOCOL_VERSION = 3;

// ---- building blocks ----

const Count = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER });
const Positive = Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER });
const Name = Type.String({ minLength: 1, maxLength: 200 });
/** Volume and pair names (core/volume/volume-record.ts NAME_PATTERN). */
const VolumeName = Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$' });
const Nullable = <T extends TSchema>(schema: T) => Type.Union([schema, Type.Null()]);
const OneOf = <T extends string>(values: readonly T[]) => Type.Union(values.map((v) => Type.Literal(v)));
const Empty = Type.Object({});
/** A pair's id as R1 chose it at create. */
const PairId = Name;
/** At most this many tracks per digests / read request (R1 batches bigger lists). */
export const MAX_TRACKS_PER_REQUEST = 1024;
const TrackList = Type.Array(Count, { maxItems: MAX_TRACKS_PER_REQUEST });

const PairRecordWire = Type.Object({
  id: Name,
  name: VolumeName,
  role: OneOf(['R1', 'R2'] as const),
  localVolume: VolumeName,
  peer: Name,
  remoteVolume: VolumeName,
  mode: OneOf(PAIR_MODES),
  intent: OneOf(PAIR_INTENTS),
  onLinkFailure: OneOf(LINK_FAILURE_POLICIES),
  generation: Positive,
  diverged: Type.Boolean(),
  protectWith: Nullable(VolumeName),
  extents: Nullable(Type.Array(Type.Object({ offset: Count, length: Count }))),
  cycleMs: Type.Integer({ minimum: 100, maximum: Number.MAX_SAFE_INTEGER }),
  cycleMemoryBytes: Count,
  spillLimitBytes: Count,
  minAgeMs: Type.Optional(Type.Integer({ minimum: 0, maximum: MAX_MIN_AGE_MS })),
  createdAtMs: Count,
});

const ByteRange = Type.Object({ start: Count, end: Count });

/** R1 → R2 cycle messages (core/replication/cycles/cycle-messages.ts); a records message's data rides in segments. */
const R1CycleMessage = Type.Union([
  Type.Object({
    kind: Type.Literal('records'), cycle: Count,
    records: Type.Array(Type.Object({ record: Count, version: Count, ranges: Type.Array(ByteRange) })),
  }),
  Type.Object({ kind: Type.Literal('seal'), cycle: Count, tag: Count, recordCount: Count, versionSum: Count }),
  Type.Object({ kind: Type.Literal('commit'), cycle: Count, tag: Count }),
]);

/** R2 → R1 cycle messages. */
const R2CycleMessage = Type.Union([
  Type.Object({ kind: Type.Literal('records-ack'), cycle: Count, records: Type.Array(Type.Object({ record: Count, version: Count })) }),
  Type.Object({ kind: Type.Literal('seal-ack'), cycle: Count }),
  Type.Object({ kind: Type.Literal('seal-nack'), cycle: Count, recordCount: Count }),
  Type.Object({ kind: Type.Literal('commit-ack'), cycle: Count }),
]);

const MemberRef = Type.Object({ array: Name, volume: Name, pairId: Name, r2Array: Name, r2Volume: Name });

const MembershipTable = Type.Object({
  group: Name, coordinator: Name, epoch: Count, version: Count, cycleMs: Count, tag: Count, members: Type.Array(MemberRef),
});

/** Coordinator → member (core/group/member.ts MemberCommand). */
const MemberCommand = Type.Union([
  Type.Object({ kind: Type.Literal('query-ready'), tag: Count }),
  Type.Object({ kind: Type.Literal('open-window') }),
  Type.Object({ kind: Type.Literal('switch'), tag: Count }),
  Type.Object({ kind: Type.Literal('close-window') }),
  Type.Object({ kind: Type.Literal('store-table'), table: MembershipTable }),
  Type.Object({ kind: Type.Literal('evict'), reason: Type.String() }),
]);

/** Member → coordinator (core/group/member.ts MemberAnswer). */
const MemberAnswer = Type.Union([
  Type.Object({ kind: Type.Literal('ready'), ready: Type.Boolean(), reason: Type.Optional(Type.String()) }),
  Type.Object({ kind: Type.Literal('window-opened') }),
  Type.Object({ kind: Type.Literal('switched'), tag: Count }),
  Type.Object({ kind: Type.Literal('switch-failed'), tag: Count, reason: Type.String(), windowClosed: Type.Optional(Type.Boolean()) }),
  Type.Object({ kind: Type.Literal('window-closed') }),
  Type.Object({ kind: Type.Literal('table-stored'), version: Count }),
  Type.Object({ kind: Type.Literal('evicted') }),
  Type.Object({ kind: Type.Literal('not-member'), reason: Type.String() }),
  Type.Object({ kind: Type.Literal('superseded'), coordinator: Name, epoch: Count }),
]);

const RecoveryInput = Type.Object({
  member: Name,
  committedTag: Nullable(Count),
  received: Nullable(Type.Object({ tag: Nullable(Count), complete: Type.Boolean() })),
});

/**
 * Group views and member status are the HTTP API's shapes (adapters/http/group-routes.ts, whose
 * schema is their one definition and checks them when they are served): here only "an object".
 */
const ApiView = Type.Record(Type.String(), Type.Unknown());

// ---- the operations ----

const op = <Req extends TSchema, Rep extends TSchema>(request: Req, reply: Rep, summary: string) => ({ request, reply, summary });

/** Every operation: request header (without `op`), reply header, and what it does (for the docs). */
export const PEER_OPERATIONS = {
  // Pairs: R1 → R2 unless said otherwise. `pair` is the pair id; the half must be paired with the sender.
  'pair.create': op(Type.Object({ record: PairRecordWire, sizeBytes: Count, trackBytes: Count }), Empty,
    'R1 → R2: make the named volume the R2 half of a new pair (segments: none)'),
  'pair.apply': op(Type.Object({ pair: PairId, fua: Type.Boolean() }), Empty,
    'write the segments (data or zeroes) to R2, in link order; fua: flush after'),
  'pair.flush': op(Type.Object({ pair: PairId }), Empty, 'make what the half received durable'),
  'pair.digests': op(Type.Object({ pair: PairId, tracks: TrackList }), Empty,
    'R2 answers per track: a zero segment (all zero) or its record digests (resync compares)'),
  'pair.read': op(Type.Object({ pair: PairId, tracks: TrackList }), Empty,
    'segments: R1\'s digests per track; R2 answers with the records that differ (restore pulls)'),
  'pair.status': op(Type.Object({ pair: PairId }), Type.Object({
    exists: Type.Boolean(),
    role: Type.Optional(OneOf(['R1', 'R2'] as const)),
    intent: Type.Optional(OneOf(PAIR_INTENTS)),
    generation: Type.Optional(Positive),
    invalidTracks: Type.Optional(Count),
    appliedCycle: Type.Optional(Nullable(Count)),
    recoverableCycle: Type.Optional(Nullable(Count)),
    /** R1: tracks its background copy still has to ship or has in flight (a resync under way when > 0). */
    tracksOwed: Type.Optional(Count),
  }), 'either half: the other half\'s state (exists: false when it has none)'),
  'pair.set-intent': op(Type.Object({ pair: PairId, intent: OneOf(PAIR_INTENTS), generation: Count, returnOwn: Type.Optional(Type.Boolean()) }),
    Type.Object({ ownTracks: Count }),
    'R2 takes the intent (and the newer generation); returnOwn: its own-changes bitmap comes back as a segment'),
  'pair.cycles-start': op(Type.Object({ pair: PairId, cycle: Positive, groupFrom: Nullable(Count) }), Empty,
    'R2 starts receiving ordered cycles at this cycle (groupFrom: the first cycle carrying group tags)'),
  'pair.cycle': op(Type.Object({ pair: PairId, msg: R1CycleMessage }), Empty,
    'one R1 cycle message (records data in segments); one-way: R2 answers with pair.cycle-r2'),
  'pair.cycle-r2': op(Type.Object({ pair: PairId, msg: R2CycleMessage }), Empty, 'R2 → R1: one cycle acknowledgement'),
  'pair.protect': op(Type.Object({ pair: PairId, whole: Type.Boolean() }),
    Type.Object({ protected: Type.Boolean(), kept: Type.Optional(Type.Boolean()) }),
    'R2 splits its protection clone before a resync (whole: R1 saw R2 whole since the last one)'),
  'pair.clear-own': op(Type.Object({ pair: PairId }), Empty, 'R2 forgets its own changes (R1 took them over)'),
  'pair.set-mode': op(Type.Object({ pair: PairId, mode: OneOf(PAIR_MODES) }), Empty, 'either half: the pair\'s mode changed'),
  'pair.command': op(Type.Object({
    pair: PairId, command: OneOf(['establish', 'resume', 'suspend', 'split', 'failover', 'failback', 'restore', 'swap'] as const),
  }), Empty, 'R2 → R1: a pair command given on R2\'s array, carried out by R1'),
  'pair.swap': op(Type.Object({ pair: PairId, generation: Positive }), Empty,
    'R2 becomes R1 (segment: the old R1\'s outgoing bitmap)'),
  'pair.delete': op(Type.Object({ pair: PairId }), Empty, 'either half: delete the other half'),
  // Consistency groups.
  'group.command': op(Type.Object({ group: Name, volume: Name, command: MemberCommand }), Type.Object({ answer: MemberAnswer }),
    'coordinator → member\'s R1 array: a member command (ready?, window, switch, table, evict)'),
  'group.member-info': op(Type.Object({ volume: Name, group: Name }), Type.Object({ member: MemberRef }),
    'coordinator → R1 array: the member reference of the pair on this volume'),
  'group.member-status': op(Type.Object({ volume: Name }), Type.Object({ status: ApiView }), 'coordinator → R1 array: a member\'s cycles'),
  'group.r2-table': op(Type.Object({ pair: PairId, table: Nullable(MembershipTable), groupFrom: Nullable(Count) }), Empty,
    'R1 → R2: keep this membership table (null: the pair left its group)'),
  'group.r2-state': op(Type.Object({ member: MemberRef, force: Type.Boolean() }), Type.Object({ input: RecoveryInput }),
    'recovery → R2 array: the member\'s cycles (R2 stops taking R1\'s messages until resolved)'),
  'group.r2-resolve': op(Type.Object({ member: MemberRef, action: OneOf(['apply', 'discard', 'none', 'release'] as const) }),
    Type.Object({ appliedCycle: Count, appliedTag: Nullable(Count) }), 'recovery → R2 array: carry the decision out (or release)'),
  'group.show': op(Type.Object({ group: Name }), Type.Object({ view: ApiView }), 'the coordinator\'s view of a group'),
  'group.locate': op(Type.Object({ group: Name }), Type.Object({ coordinates: Type.Boolean() }), 'does this array coordinate the group?'),
  'group.is-member': op(Type.Object({ group: Name, member: Name }), Type.Object({ member: Nullable(Type.Boolean()) }),
    'member → coordinator: does the group still count me? (null: no such group there)'),
  'group.add': op(Type.Object({ group: Name, volume: Name }), Type.Object({ view: ApiView }),
    'member\'s array → coordinator: add the sender\'s pair on this volume'),
  'group.remove': op(Type.Object({ group: Name, volume: Name }), Type.Object({ view: ApiView }),
    'member\'s array → coordinator: remove the sender\'s pair on this volume'),
  // Journals (SPEC §6).
  ...JOURNAL_PEER_OPERATIONS,
  // Routed commands (docs/design/routing-and-relay.md): an API request carried hop by hop.
  'route.request': op(Type.Object({
    method: OneOf(['GET', 'POST', 'PUT', 'DELETE'] as const),
    path: Type.String({ minLength: 1, maxLength: 8192 }),
    hops: Type.Array(Name, { maxItems: MAX_ROUTE_HOPS }),
    trail: Type.Array(Name, { minItems: 1, maxItems: MAX_ROUTE_HOPS }),
    timeoutMs: Type.Integer({ minimum: 1, maximum: 10 * 60_000 }),
  }), Type.Object({
    status: Type.Integer({ minimum: 100, maximum: 599 }),
    contentType: Type.String({ maxLength: 200 }),
    answeredBy: Name,
    trail: Type.Array(Name, { minItems: 1, maxItems: MAX_ROUTE_HOPS + 1 }),
  }), 'any → peer: run an API request here (hops empty) or pass it on; the request body and the answer\'s body ride in one data segment'),
  // Operators' view.
  'peer.ping': op(Empty, Empty, 'answered at once: the asker measures the link\'s round trip (dashboard, status)'),
} as const;

export type PeerOp = keyof typeof PEER_OPERATIONS;
export const PEER_OPS = Object.keys(PEER_OPERATIONS) as PeerOp[];

/** Received values are never changed in place: deep readonly, so call sites may pass readonly data too. */
type DeepReadonly<T> = T extends readonly (infer U)[]
  ? readonly DeepReadonly<U>[]
  : T extends object ? { readonly [K in keyof T]: DeepReadonly<T[K]> } : T;

export type RequestOf<Op extends PeerOp> = { readonly op: Op } & DeepReadonly<Static<(typeof PEER_OPERATIONS)[Op]['request']>>;
export type ReplyOf<Op extends PeerOp> = DeepReadonly<Static<(typeof PEER_OPERATIONS)[Op]['reply']>>;
/** One discriminated union over `op`. */
export type PeerRequest = { [Op in PeerOp]: RequestOf<Op> }[PeerOp];

// ---- decoding ----

const requestChecks = new Map<string, TypeCheck<TSchema>>();
const replyChecks = new Map<string, TypeCheck<TSchema>>();
for (const name of PEER_OPS) {
  requestChecks.set(name, TypeCompiler.Compile(PEER_OPERATIONS[name].request));
  replyChecks.set(name, TypeCompiler.Compile(PEER_OPERATIONS[name].reply));
}

export type Decoded<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly error: TidemarkError };

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

/** "field generation: Expected integer" — the first problem, its path as dotted fields. */
function firstProblem(check: TypeCheck<TSchema>, value: unknown): { field: string; message: string } {
  const first = check.Errors(value).First();
  if (!first) return { field: '', message: 'does not match the schema' };
  const field = first.path.split('/').filter((p) => p !== '').join('.');
  return { field, message: first.message };
}

/** Whether the operation is one this array speaks. */
export function isPeerOp(name: unknown): name is PeerOp {
  return typeof name === 'string' && requestChecks.has(name);
}

/**
 * Validates a request header. An unknown operation is TM_ERR_UNSUPPORTED; a header that does not
 * match its operation's schema is TM_ERR_PROTOCOL naming the operation and the field.
 */
export function decodeRequest(header: unknown): Decoded<PeerRequest> {
  if (!isObject(header)) return { ok: false, error: new TidemarkError(ErrorCode.Protocol, 'peer request header is not an object') };
  const name = header.op;
  if (typeof name !== 'string') return { ok: false, error: new TidemarkError(ErrorCode.Protocol, 'peer request names no operation (op)', { field: 'op' }) };
  const check = requestChecks.get(name);
  if (!check) {
    return { ok: false, error: new TidemarkError(ErrorCode.Unsupported, `unknown peer operation ${JSON.stringify(name.slice(0, 100))}`, { op: name.slice(0, 100) }) };
  }
  if (!check.Check(header)) {
    const { field, message } = firstProblem(check, header);
    return { ok: false, error: new TidemarkError(ErrorCode.Protocol, `bad ${name} request: ${field === '' ? '' : `field ${field}: `}${message}`, { op: name, field }) };
  }
  return { ok: true, value: header as PeerRequest };
}

/** Validates the header of a successful reply to `op` (the envelope — ok, rpc, error — is PeerRpc's). */
export function decodeReply<Op extends PeerOp>(name: Op, header: unknown): Decoded<ReplyOf<Op>> {
  const check = replyChecks.get(name)!;
  if (!isObject(header) || !check.Check(header)) {
    const { field, message } = isObject(header) ? firstProblem(check, header) : { field: '', message: 'not an object' };
    return { ok: false, error: new TidemarkError(ErrorCode.Protocol, `bad ${name} reply: ${field === '' ? '' : `field ${field}: `}${message}`, { op: name, field }) };
  }
  return { ok: true, value: header as ReplyOf<Op> };
}
