// The clone-session part of the HTTP API (SPEC §3), in the same table form as routes.ts.
import { Type, type Static } from '@sinclair/typebox';
import { errorResponse as error, MAX_LONG_POLL_MS, ok, type RouteRequest, type RouteSpec } from './route-kit.js';
import { literals } from './schemas.js';
import { CLONE_STATES } from '../../core/clone/clone-session.js';

/** What the API needs from the array's clone sessions. */
export interface CloneBackend {
  establish(std: string, clone: string): Promise<CloneStatus>;
  split(std: string, clone: string, differential: boolean): Promise<SplitResult>;
  reestablish(std: string, clone: string): Promise<CloneStatus>;
  restore(std: string, clone: string, incremental: boolean): Promise<CloneStatus>;
  terminate(std: string, clone: string): Promise<void>;
  list(std?: string): CloneStatus[];
  show(std: string, clone: string): CloneStatus;
  /** The session once it is in `state`, or after `waitMs` as it is then. */
  showWhen(std: string, clone: string, state: CloneStatus['state'], waitMs: number): Promise<CloneStatus>;
}

const Name = Type.String({ minLength: 1, maxLength: 255 });

export const CloneStatusSchema = Type.Object({
  id: Type.Integer({ minimum: 0, maximum: 15, description: 'Session number on the standard volume.' }),
  std: Type.String({ description: 'The standard volume.' }),
  clone: Type.String(),
  state: literals(CLONE_STATES),
  operation: Type.String({ description: 'The copy operation in progress or last run: establish, reestablish, restore, restore-incremental, none.' }),
  splitAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()], { description: 'The instant the clone image was taken.' }),
  tracksToCopy: Type.Integer({ minimum: 0, description: 'Tracks the current operation still has to copy.' }),
  tracksCopied: Type.Integer({ minimum: 0 }),
  bytesCopied: Type.Integer({ minimum: 0 }),
  percent: Type.Number({ minimum: 0, maximum: 100 }),
  bytesPerSecond: Type.Number({ minimum: 0, description: 'Average copy rate of the current operation.' }),
  etaSeconds: Type.Union([Type.Integer({ minimum: 0 }), Type.Null()]),
  protectedTracks: Type.Integer({ minimum: 0, description: 'Tracks the standard changed since the last split.' }),
  cloneChangedTracks: Type.Integer({ minimum: 0, description: "Tracks the clone's own hosts changed since the split." }),
});
/** A clone session's status as the API gives it: the one definition, used by the array and the CLI alike. */
export type CloneStatus = Static<typeof CloneStatusSchema>;

const SplitResultSchema = Type.Intersect([CloneStatusSchema, Type.Object({
  differentialTracks: Type.Integer({ minimum: 0, description: "Tracks marked invalid on the clone's own mirrors (--differential)." }),
})]);
export type SplitResult = Static<typeof SplitResultSchema>;

const PairParams = Type.Object({ std: Name, clone: Name });
const EstablishBody = Type.Object({ std: Name, clone: Name }, { additionalProperties: false });
const SplitBody = Type.Object({ differential: Type.Optional(Type.Boolean()) }, { additionalProperties: false });
const RestoreBody = Type.Object({ incremental: Type.Optional(Type.Boolean()) }, { additionalProperties: false });
const ListQuery = Type.Object({ std: Type.Optional(Name) }, { additionalProperties: false });
const ShowQuery = Type.Object({
  until: Type.Optional(literals(CLONE_STATES, { description: 'Answer once the session is in this state (a long poll)…' })),
  waitMs: Type.Optional(Type.Integer({ minimum: 0, maximum: MAX_LONG_POLL_MS, description: '…or after this many milliseconds, whichever comes first (default 0).' })),
}, { additionalProperties: false });

const pair = (request: RouteRequest): { std: string; clone: string } => request.params as Static<typeof PairParams>;
const stateErrors = {
  404: error('No such volume or session (TM_ERR_NOT_FOUND).'),
  409: error('Not allowed in the current state, or the clone is exported (TM_ERR_INVALID_STATE, TM_ERR_VOLUME_BUSY).'),
};

export const CLONE_ROUTES: readonly RouteSpec<CloneBackend>[] = [
  {
    method: 'POST', url: '/v1/clones', operationId: 'establishClone', tag: 'clones',
    summary: 'Establishes a clone session: the clone becomes not ready and every track is copied from the standard volume.',
    body: EstablishBody,
    responses: {
      201: { description: 'The new session.', schema: CloneStatusSchema },
      400: error('Sizes differ or names are bad (TM_ERR_INVALID_ARGUMENT).'),
      422: error('The standard volume already has 16 sessions (TM_ERR_LIMIT_EXCEEDED).'),
      ...stateErrors,
    },
    handler: async (request, clones) => {
      const body = request.body as Static<typeof EstablishBody>;
      return ok(await clones.establish(body.std, body.clone), 201);
    },
  },
  {
    method: 'GET', url: '/v1/clones', operationId: 'listClones', tag: 'clones',
    summary: 'Every clone session, or those of one standard volume.',
    querystring: ListQuery,
    responses: { 200: { description: 'The sessions.', schema: Type.Object({ sessions: Type.Array(CloneStatusSchema) }) } },
    handler: async (request, clones) => ok({ sessions: clones.list((request.query as Static<typeof ListQuery>).std) }),
  },
  {
    method: 'GET', url: '/v1/clones/:std/:clone', operationId: 'getClone', tag: 'clones',
    summary: 'One session: state and copy progress; with `until`, answered as soon as the session reaches that state (or after `waitMs`).',
    params: PairParams,
    querystring: ShowQuery,
    responses: { 200: { description: 'The session.', schema: CloneStatusSchema }, 404: stateErrors[404] },
    handler: async (request, clones) => {
      const { std, clone } = pair(request);
      const { until, waitMs } = request.query as Static<typeof ShowQuery>;
      return ok(until === undefined ? clones.show(std, clone) : await clones.showWhen(std, clone, until, waitMs ?? 0));
    },
  },
  {
    method: 'POST', url: '/v1/clones/:std/:clone/split', operationId: 'splitClone', tag: 'clones',
    summary: 'Splits a synchronized session: the clone holds the standard image of this instant and becomes ready.',
    params: PairParams,
    body: SplitBody,
    responses: { 200: { description: 'The split session.', schema: SplitResultSchema }, ...stateErrors },
    handler: async (request, clones) => {
      const { std, clone } = pair(request);
      return ok(await clones.split(std, clone, (request.body as Static<typeof SplitBody> | undefined)?.differential ?? false));
    },
  },
  {
    method: 'POST', url: '/v1/clones/:std/:clone/reestablish', operationId: 'reestablishClone', tag: 'clones',
    summary: 'Reattaches a split clone, copying only tracks changed on either side since the split.',
    params: PairParams,
    responses: { 200: { description: 'The session.', schema: CloneStatusSchema }, ...stateErrors },
    handler: async (request, clones) => ok(await clones.reestablish(pair(request).std, pair(request).clone)),
  },
  {
    method: 'POST', url: '/v1/clones/:std/:clone/restore', operationId: 'restoreClone', tag: 'clones',
    summary: 'Restores the standard volume from the clone, instantly for its hosts; incremental copies only changed tracks.',
    params: PairParams,
    body: RestoreBody,
    responses: { 200: { description: 'The session.', schema: CloneStatusSchema }, ...stateErrors },
    handler: async (request, clones) => {
      const { std, clone } = pair(request);
      return ok(await clones.restore(std, clone, (request.body as Static<typeof RestoreBody> | undefined)?.incremental ?? false));
    },
  },
  {
    method: 'DELETE', url: '/v1/clones/:std/:clone', operationId: 'terminateClone', tag: 'clones',
    summary: 'Ends a session (refused while restoring). The clone becomes ready with the data it holds.',
    params: PairParams,
    responses: { 200: { description: 'Terminated.', schema: Type.Object({ std: Type.String(), clone: Type.String(), terminated: Type.Literal(true) }) }, ...stateErrors },
    handler: async (request, clones) => {
      const { std, clone } = pair(request);
      await clones.terminate(std, clone);
      return ok({ std, clone, terminated: true });
    },
  },
];
