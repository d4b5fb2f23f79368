// The cascade part of the HTTP API (SPEC §7; docs/design/cascade.md), in the same table form as routes.ts.
import { Type, type Static } from '@sinclair/typebox';
import { errorResponse as error, ok, param, type RouteSpec } from './route-kit.js';
import { literals } from './schemas.js';
import { CASCADE_PHASES } from '../../core/cascade/cascade-record.js';

const Name = Type.String({ minLength: 1, maxLength: 255 });
const Time = Type.Union([Type.String({ format: 'date-time' }), Type.Null()]);
const Count = Type.Integer({ minimum: 0 });

export const CascadeCreateBodySchema = Type.Object({
  name: Name,
  volume: Type.String({ minLength: 1, maxLength: 255, description: 'R2VOL: the volume to cascade (usually the R2 of a sync pair).' }),
  clone: Type.String({ minLength: 1, maxLength: 255, description: "CVOL: a volume of R2VOL's size on this array; the cascade's clone of R2VOL." }),
  peer: Type.String({ minLength: 1, maxLength: 255, description: 'The far array (a peer of this one).' }),
  remoteVolume: Type.String({ minLength: 1, maxLength: 255, description: 'CRVOL on the far array (same size).' }),
  remoteClone: Type.String({ minLength: 1, maxLength: 255, description: 'On the far array: a clone session CRVOL→CPROT that keeps the last complete image.' }),
  everyMs: Type.Optional(Type.Union([Type.Integer({ minimum: 100 }), Type.Null()], { description: 'Start a cycle this often; null or absent: only on command.' })),
}, { additionalProperties: false });
export type CascadeCreateBody = Static<typeof CascadeCreateBodySchema>;

export const CascadeViewSchema = Type.Object({
  name: Type.String(),
  volume: Type.String(), clone: Type.String(), peer: Type.String(), remoteVolume: Type.String(), remoteClone: Type.String(),
  everyMs: Type.Union([Type.Integer({ minimum: 100 }), Type.Null()]),
  phase: literals(CASCADE_PHASES, { description: 'synchronizing → splitting → shipping → refreshing → complete.' }),
  cycles: Type.Integer({ minimum: 0, description: 'Completed cycles.' }),
  cycleStartedAt: Time,
  splitAt: { ...Time, description: 'The R2VOL image the cycle under way ships (once split).' },
  consistentAt: { ...Time, description: 'The time of the R2VOL image the far site holds whole (null before the first cycle completes).' },
  nextDueAt: { ...Time, description: 'When the next cycle starts (null: on command only, or a cycle is under way).' },
  tracksShipping: Count, bytesShippingCycle: Count,
  tracksShippedLast: Count, bytesShippedLast: Count,
  bytesShipped: Type.Integer({ minimum: 0, description: 'Bytes shipped to the far site over the session (counted by this array).' }),
  sourceSettled: Type.Boolean({ description: "R2VOL's source pair confirmed it is not resyncing R2VOL (no split before)." }),
  requested: Type.Boolean(), closing: Type.Boolean(),
  busy: Type.Union([Type.String(), Type.Null()], { description: 'The action under way.' }),
  waitingFor: Type.Union([Type.String(), Type.Null()]),
  lastError: Type.Union([Type.String(), Type.Null()]),
  createdAt: Type.String({ format: 'date-time' }),
});
/** A cascade session as the API gives it: the one definition, used by the array and the CLI alike. */
export type CascadeView = Static<typeof CascadeViewSchema>;

const CloseResultSchema = Type.Object({
  name: Type.String(),
  closed: Type.Boolean({ description: 'false: a cycle is still shipping; the session closes when it completes (poll GET until 404).' }),
  consistentAt: Time, cycles: Count,
});

/** What the API needs from the array's cascade sessions. */
export interface CascadeBackend {
  create(body: CascadeCreateBody): Promise<CascadeView>;
  cycle(name: string): CascadeView;
  close(name: string): Promise<Static<typeof CloseResultSchema>>;
  list(): CascadeView[];
  show(name: string): CascadeView;
}

const NameParams = Type.Object({ name: Name });
const notFound = error('No such cascade or volume (TM_ERR_NOT_FOUND).');
const conflict = error('A name in use, a volume busy elsewhere, or a closing cascade (TM_ERR_ALREADY_EXISTS, TM_ERR_VOLUME_BUSY, TM_ERR_INVALID_STATE).');

export const CASCADE_ROUTES: readonly RouteSpec<CascadeBackend>[] = [
  {
    method: 'POST', url: '/v1/cascades', operationId: 'createCascade', tag: 'cascades',
    summary: 'Creates a cascade session: a clone of VOLUME alternately reattached and differentially split, its pair shipping each image to the far array.',
    body: CascadeCreateBodySchema,
    responses: {
      201: { description: 'The new session.', schema: CascadeViewSchema },
      400: error('Bad names, sizes that differ, a source pair not sync/semisync, --every too short (TM_ERR_INVALID_ARGUMENT).'),
      404: notFound, 409: conflict,
    },
    handler: async (request, cascades) => ok(await cascades.create(request.body as CascadeCreateBody), 201),
  },
  {
    method: 'GET', url: '/v1/cascades', operationId: 'listCascades', tag: 'cascades',
    summary: 'Every cascade session of this array.',
    responses: { 200: { description: 'The sessions.', schema: Type.Object({ cascades: Type.Array(CascadeViewSchema) }) } },
    handler: async (_request, cascades) => ok({ cascades: cascades.list() }),
  },
  {
    method: 'GET', url: '/v1/cascades/:name', operationId: 'getCascade', tag: 'cascades',
    summary: 'One session: phase, cycles, what the far site holds and what was shipped.',
    params: NameParams,
    responses: { 200: { description: 'The session.', schema: CascadeViewSchema }, 404: notFound },
    handler: async (request, cascades) => ok(cascades.show(param(request, 'name'))),
  },
  {
    method: 'POST', url: '/v1/cascades/:name/cycle', operationId: 'cycleCascade', tag: 'cascades',
    summary: 'Runs a cycle now, or right after the one under way (cycles never overlap).',
    params: NameParams,
    responses: { 200: { description: 'The session.', schema: CascadeViewSchema }, 404: notFound, 409: conflict },
    handler: async (request, cascades) => ok(cascades.cycle(param(request, 'name'))),
  },
  {
    method: 'DELETE', url: '/v1/cascades/:name', operationId: 'closeCascade', tag: 'cascades',
    summary: 'Closes the session once the far array holds a whole image (at once between cycles): the pair is deleted, CRVOL keeps that image.',
    params: NameParams,
    responses: { 200: { description: 'Closed, or closing after the cycle under way (closed: false).', schema: CloseResultSchema }, 404: notFound },
    handler: async (request, cascades) => ok(await cascades.close(param(request, 'name'))),
  },
];
