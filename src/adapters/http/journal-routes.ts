// The journal part of the HTTP API (SPEC §6), in the same table form as routes.ts.
import { Type, type Static } from '@sinclair/typebox';
import { errorResponse as error, ok, param, type RouteSpec } from './route-kit.js';
import { Nullable, ShortName } from './schemas.js';

const Extent = Type.Object({ offset: Type.Integer({ minimum: 0 }), length: Type.Integer({ minimum: 1 }) });
const Seq = Nullable(Type.Integer({ minimum: 0 }));

export const JournalSchema = Type.Object({
  name: Type.String(),
  sequencer: Type.String({ description: 'The array that hands out the global sequence numbers.' }),
  intervalMs: Type.Integer(),
  batchBytes: Type.Integer(),
  tokens: Type.Union([Type.Literal('ahead'), Type.Literal('sync')], { description: 'ahead: a write completes once numbered; sync: once its secondary holds its token.' }),
  createdAt: Type.String(),
  roles: Type.Array(Type.Union([Type.Literal('sequencer'), Type.Literal('primary'), Type.Literal('secondary')])),
  sequence: Type.Object({ issued: Seq, taken: Seq, sent: Seq, received: Seq, complete: Seq, applied: Seq }, {
    description: 'Highest numbers: issued by the sequencer, taken by this array\'s writes, sent with data, known, complete and applied here.',
  }),
  lag: Nullable(Type.Object({ entries: Type.Integer({ minimum: 0 }), bytes: Type.Integer({ minimum: 0 }), seconds: Nullable(Type.Number({ minimum: 0 })) })),
  outgoing: Nullable(Type.Object({
    waitingWrites: Type.Integer({ minimum: 0 }), bufferedBytes: Type.Integer({ minimum: 0 }), unackedMessages: Type.Integer({ minimum: 0 }),
    sentMessages: Type.Integer({ minimum: 0 }), sentDataBytes: Type.Integer({ minimum: 0 }),
  })),
  members: Type.Array(Type.String(), { description: 'Every secondary array of the journal (as this array knows them).' }),
  blocked: Nullable(Type.Object({ sequence: Type.Integer({ minimum: 1 }), missing: Type.String() }, {
    description: 'Secondary: the first number this queue lacks beyond what it could apply, and what is missing.',
  })),
  recovered: Type.Boolean(),
  pairs: Type.Array(Type.Object({
    id: Type.String(), role: Type.Union([Type.Literal('primary'), Type.Literal('secondary')]),
    primaryArray: Type.String(), primaryVolume: Type.String(), secondaryArray: Type.String(), secondaryVolume: Type.String(),
    extents: Nullable(Type.Array(Extent)),
  })),
});
export type JournalBody = Static<typeof JournalSchema>;

const LossEntry = Type.Object({
  volume: Type.String({ description: 'The primary volume\'s name.' }), offset: Type.Integer(), length: Type.Integer(), sequence: Type.Integer(),
  pair: Type.String(), secondary: Type.String(), timeMs: Type.Integer(),
});

export const JournalRecoverySchema = Type.Object({
  journal: Type.String(),
  carriedOut: Type.Boolean({ description: 'False for a dry run: nothing changed.' }),
  tokens: Type.Union([Type.Literal('ahead'), Type.Literal('sync')]),
  consistentSequence: Type.Integer({ minimum: 0, description: 'Every secondary image holds exactly the writes numbered up to here.' }),
  consistentTime: Nullable(Type.Integer({ description: 'The sequencer\'s time (ms since the epoch) of that write.' })),
  lost: Type.Array(LossEntry, { description: 'Writes beyond the point whose data never reached their secondary.' }),
  stranded: Type.Array(LossEntry, { description: 'Complete writes behind the gap, not applied (applying them would break the write order).' }),
  unacknowledged: Type.Array(LossEntry, { description: 'tokens sync: numbered writes no host saw acknowledged (their secondary never got the token from the primary).' }),
  highestKnown: Type.Integer({ minimum: 0 }),
  unknownSequences: Type.Integer({ minimum: 0, description: 'Numbers up to highestKnown that no secondary knows.' }),
  lastMessageAt: Nullable(Type.Integer({ description: 'When a primary\'s last message reached a secondary (tokens ahead: writes after it may be unknown).' })),
  secondaries: Type.Array(Type.Object({ secondary: Type.String(), appliedBefore: Type.Integer(), entriesToApply: Type.Integer() })),
});
export type JournalRecoveryBody = Static<typeof JournalRecoverySchema>;

export interface JournalBackend {
  create(name: string, o: { sequencer?: string; intervalMs?: number; batchBytes?: number; tokens?: 'ahead' | 'sync' }): Promise<JournalBody>;
  list(): JournalBody[];
  show(name: string): JournalBody;
  delete(name: string): Promise<void>;
  createPair(journal: string, o: { volume: string; peer: string; remoteVolume: string; extents?: Array<{ offset: number; length: number }> }): Promise<JournalBody>;
  recover(name: string, dryRun: boolean): Promise<JournalRecoveryBody>;
}

const CreateBody = Type.Object({
  name: ShortName,
  sequencer: Type.Optional(Type.String({ minLength: 1, maxLength: 63, description: 'A peer to be the sequencer (default: this array).' })),
  intervalMs: Type.Optional(Type.Integer({ minimum: 1, maximum: 3_600_000, description: 'A message leaves at the latest this long after its oldest entry (default 100).' })),
  batchBytes: Type.Optional(Type.Integer({ minimum: 4096, maximum: 4 * 1024 * 1024, description: 'A message leaves when this much data is buffered (default 1 MiB).' })),
  tokens: Type.Optional(Type.Union([Type.Literal('ahead'), Type.Literal('sync')])),
}, { additionalProperties: false });
const PairBody = Type.Object({
  volume: ShortName,
  peer: ShortName,
  remoteVolume: ShortName,
  extents: Type.Optional(Type.Array(Extent, { maxItems: 256 })),
}, { additionalProperties: false });
const RecoverBody = Type.Object({ dryRun: Type.Optional(Type.Boolean({ description: 'Compute and report only.' })) }, { additionalProperties: false });
const NameParams = Type.Object({ name: ShortName });

const errors = {
  404: error('No such journal, volume or peer (TM_ERR_NOT_FOUND).'),
  409: error('Not allowed now (TM_ERR_INVALID_STATE, TM_ERR_ALREADY_EXISTS, TM_ERR_PAIR_CONFLICT, TM_ERR_VOLUME_BUSY).'),
  503: error('A sequencer or secondary cannot be reached (TM_ERR_LINK_DOWN, TM_ERR_UNAVAILABLE).'),
};

export const JOURNAL_ROUTES: readonly RouteSpec<JournalBackend>[] = [
  {
    method: 'POST', url: '/v1/journals', operationId: 'createJournal', tag: 'journals',
    summary: 'Creates a journal (a global write sequence across volumes and arrays).',
    body: CreateBody,
    responses: { 201: { description: 'The journal.', schema: JournalSchema }, 400: error('Bad name or setting (TM_ERR_INVALID_ARGUMENT).'), ...errors },
    handler: async (request, journals) => {
      const { name, ...o } = request.body as Static<typeof CreateBody>;
      return ok(await journals.create(name, o), 201);
    },
  },
  {
    method: 'GET', url: '/v1/journals', operationId: 'listJournals', tag: 'journals', summary: 'Journals this array takes part in.',
    responses: { 200: { description: 'The journals.', schema: Type.Object({ journals: Type.Array(JournalSchema) }) } },
    handler: async (_request, journals) => ok({ journals: journals.list() }),
  },
  {
    method: 'GET', url: '/v1/journals/:name', operationId: 'showJournal', tag: 'journals', summary: 'A journal\'s sequence, lag, queues and pairs on this array.',
    params: NameParams,
    responses: { 200: { description: 'The journal.', schema: JournalSchema }, 404: errors[404] },
    handler: async (request, journals) => ok(journals.show(param(request, 'name'))),
  },
  {
    method: 'DELETE', url: '/v1/journals/:name', operationId: 'deleteJournal', tag: 'journals',
    summary: 'Deletes the journal here, with its pairs (their secondaries forget them too).',
    params: NameParams,
    responses: { 204: { description: 'Deleted.' }, 404: errors[404] },
    handler: async (request, journals) => {
      await journals.delete(param(request, 'name'));
      return { status: 204, body: undefined };
    },
  },
  {
    method: 'POST', url: '/v1/journals/:name/pairs', operationId: 'createJournalPair', tag: 'journals',
    summary: 'Journals a volume (or extents of it) of this array to a volume on a peer (the secondary).',
    params: NameParams, body: PairBody,
    responses: { 201: { description: 'The journal.', schema: JournalSchema }, 400: error('Bad volume name or extents (TM_ERR_INVALID_ARGUMENT).'), ...errors },
    handler: async (request, journals) => ok(await journals.createPair(param(request, 'name'), request.body as Static<typeof PairBody>), 201),
  },
  {
    method: 'POST', url: '/v1/journals/:name/recover', operationId: 'recoverJournal', tag: 'journals',
    summary: 'On a secondary array: brings every secondary to the first incomplete entry and reports what was lost.',
    params: NameParams, body: RecoverBody,
    responses: { 200: { description: 'The loss report.', schema: JournalRecoverySchema }, ...errors },
    handler: async (request, journals) => ok(await journals.recover(param(request, 'name'), (request.body as Static<typeof RecoverBody>).dryRun ?? false)),
  },
];
