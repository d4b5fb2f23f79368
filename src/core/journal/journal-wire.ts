// The journal's operations of the peer protocol (docs/design/peer-protocol.md): schemas of request
// and reply headers, spread into PEER_OPERATIONS. Data entries of a journal message ride as
// segments, one per entry in `entrySequences` order; everything else is in the header.
import { Type, type TSchema } from '@sinclair/typebox';
import { JOURNAL_MESSAGE_TYPES } from './journal-types.js';

const Count = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER });
const Positive = Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER });
const Name = Type.String({ minLength: 1, maxLength: 200 });
const VolumeName = Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$' });
const Empty = Type.Object({});
const OneOf = <T extends string>(values: readonly T[]) => Type.Union(values.map((v) => Type.Literal(v)));
const Nullable = <T extends TSchema>(schema: T) => Type.Union([schema, Type.Null()]);

/** At most this many tokens or entries in one message (the primary splits bigger batches). */
export const MAX_JOURNAL_ENTRIES = 1024;
export const MAX_JOURNAL_TOKENS = 16384;

export const TokenSpecWire = Type.Object({ pair: Name, volume: VolumeName, offset: Count, length: Positive, secondary: Name });
export const TokenWire = Type.Object({
  pair: Name, volume: VolumeName, offset: Count, length: Positive, secondary: Name, sequence: Positive, timeMs: Count,
});

export const JOURNAL_TOKEN_MODES = ['ahead', 'sync'] as const;

export const JournalRecordWire = Type.Object({
  name: VolumeName,
  sequencer: Name,
  intervalMs: Type.Integer({ minimum: 1, maximum: 3_600_000 }),
  batchBytes: Type.Integer({ minimum: 4096, maximum: 4 * 1024 * 1024 }),
  tokens: OneOf(JOURNAL_TOKEN_MODES),
  createdAtMs: Count,
});

const ExtentWire = Type.Object({ offset: Count, length: Positive });

export const JournalPairWire = Type.Object({
  id: Name,
  primaryArray: Name,
  primaryVolume: VolumeName,
  secondaryArray: Name,
  secondaryVolume: VolumeName,
  extents: Nullable(Type.Array(ExtentWire, { maxItems: 256 })),
});

const MessageWire = Type.Object({
  from: Name,
  role: OneOf(['sequencer', 'primary'] as const),
  type: OneOf(JOURNAL_MESSAGE_TYPES),
  continuity: Positive,
  incarnation: Type.Optional(Count),
  tokens: Type.Array(TokenWire, { maxItems: MAX_JOURNAL_TOKENS }),
  /** The tokens of the data entries, one segment each, in this order. */
  entries: Type.Array(TokenWire, { maxItems: MAX_JOURNAL_ENTRIES }),
});

export const QueueStateWire = Type.Object({
  secondary: Name,
  appliedUpTo: Count,
  appliedTimeMs: Nullable(Count),
  tokens: Type.Array(TokenWire),
  dataSequences: Type.Array(Positive),
  primaryTokens: Type.Array(Positive),
  lastMessageMs: Nullable(Count),
});

const op = <Req extends TSchema, Rep extends TSchema>(request: Req, reply: Rep, summary: string) => ({ request, reply, summary });

export const JOURNAL_PEER_OPERATIONS = {
  'journal.create': op(Type.Object({ record: JournalRecordWire }), Empty,
    'keep this journal\'s definition (its sequencer, or a secondary, learns of it)'),
  'journal.join': op(Type.Object({ journal: VolumeName, secondary: Name }), Type.Object({ base: Count, secondaries: Type.Array(Name) }),
    'primary → sequencer: a secondary joins; base: the numbers issued so far (the new queue starts after them)'),
  'journal.members': op(Type.Object({ journal: VolumeName, secondaries: Type.Array(Name, { minItems: 1 }) }), Empty,
    'sequencer → secondaries: every secondary of the journal (they exchange watermarks)'),
  'journal.pair-create': op(Type.Object({ record: JournalRecordWire, pair: JournalPairWire, base: Count, secondaries: Type.Array(Name, { minItems: 1 }) }), Empty,
    'primary → secondary: the secondary half of a journal pair (write-disabled until recovery)'),
  'journal.request': op(Type.Object({ journal: VolumeName, incarnation: Count, requestId: Positive, specs: Type.Array(TokenSpecWire, { minItems: 1, maxItems: MAX_JOURNAL_TOKENS }) }),
    Type.Object({ first: Positive, count: Positive, timeMs: Count }),
    'primary → sequencer: numbers for these pieces, in order'),
  'journal.message': op(Type.Object({ journal: VolumeName, message: MessageWire }), Type.Object({ ackUpTo: Count }),
    'sequencer or primary → secondary: tokens and data entries (segments); reply: durable up to this continuity'),
  'journal.watermark': op(Type.Object({ journal: VolumeName, completeUpTo: Count }), Empty,
    'secondary → secondary: this queue is complete up to here'),
  'journal.queue-state': op(Type.Object({ journal: VolumeName }), Type.Object({ state: QueueStateWire, tokens: OneOf(JOURNAL_TOKEN_MODES) }),
    'recovery → secondary: its pending-write queue'),
  'journal.recover': op(Type.Object({ journal: VolumeName, point: Count }), Type.Object({ appliedUpTo: Count }),
    'recovery → secondary: apply up to the point, take no more messages, make the volumes writable'),
  'journal.delete': op(Type.Object({ journal: VolumeName }), Empty, 'forget the journal and its pairs here'),
} as const;
