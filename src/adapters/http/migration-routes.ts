// The online-migration part of the HTTP API (SPEC §8; docs/migration.md), in the route-table form.
import { Type, type Static } from '@sinclair/typebox';
import { errorResponse as error, ok, param, type RouteSpec } from './route-kit.js';
import { literals } from './schemas.js';
import { MIGRATION_STATES } from '../../core/migration/migration-machine.js';

/** What the API needs from the array's migrations. */
export interface MigrationBackend {
  start(volume: string, target: string, manualCutover: boolean): Promise<MigrationStatus>;
  cutover(volume: string): Promise<MigrationStatus>;
  detach(volume: string): Promise<MigrationStatus>;
  reattach(volume: string): Promise<MigrationStatus>;
  finish(volume: string): Promise<MigrationStatus>;
  show(volume: string): MigrationStatus;
  list(): MigrationStatus[];
}

const Name = Type.String({ minLength: 1, maxLength: 255 });
const Instant = Type.Union([Type.String({ format: 'date-time' }), Type.Null()]);

export const MigrationStatusSchema = Type.Object({
  volume: Type.String({ description: 'The migrating volume (VOL): its export stays the same throughout.' }),
  target: Type.String({ description: 'The volume whose storage VOL moves to; after the cutover it holds VOL\'s old storage.' }),
  state: literals(MIGRATION_STATES),
  manualCutover: Type.Boolean({ description: 'The cutover waits for `migration cutover` once the copy is complete.' }),
  servedFrom: literals(['old', 'new'] as const, { description: 'Which storage serves VOL\'s hosts.' }),
  tracksLeft: Type.Integer({ minimum: 0, description: 'Tracks the other storage still lacks (copy, replay, or recorded while detached).' }),
  trackCount: Type.Integer({ minimum: 0 }),
  tracksCopied: Type.Integer({ minimum: 0, description: 'Tracks the current copy or replay has copied.' }),
  bytesCopied: Type.Integer({ minimum: 0 }),
  percent: Type.Number({ minimum: 0, maximum: 100 }),
  bytesPerSecond: Type.Number({ minimum: 0, description: 'Average rate of the current copy or replay.' }),
  etaSeconds: Type.Union([Type.Integer({ minimum: 0 }), Type.Null()]),
  tracksReplayed: Type.Integer({ minimum: 0, description: 'Tracks the last reattach replayed (those written while detached).' }),
  startedAt: Instant,
  cutOverAt: Instant,
  detachedAt: Instant,
});
/** A migration's status as the API gives it: the one definition, used by the array and the CLI alike. */
export type MigrationStatus = Static<typeof MigrationStatusSchema>;

const VolumeParams = Type.Object({ volume: Name });
const StartBody = Type.Object({
  volume: Name, target: Name, manualCutover: Type.Optional(Type.Boolean()),
}, { additionalProperties: false });

const stateErrors = {
  404: error('No such volume, or it is not migrating (TM_ERR_NOT_FOUND).'),
  409: error('Not allowed in the migration\'s state, or a volume is in use (TM_ERR_INVALID_STATE, TM_ERR_VOLUME_BUSY).'),
};

const step = (verb: 'cutover' | 'detach' | 'reattach' | 'finish', summary: string): RouteSpec<MigrationBackend> => ({
  method: 'POST', url: `/v1/migrations/:volume/${verb}`, operationId: `${verb}Migration`, tag: 'migrations', summary,
  params: VolumeParams,
  responses: { 200: { description: 'The migration.', schema: MigrationStatusSchema }, ...stateErrors },
  handler: async (request, migrations) => ok(await migrations[verb](param(request, 'volume'))),
});

export const MIGRATION_ROUTES: readonly RouteSpec<MigrationBackend>[] = [
  {
    method: 'POST', url: '/v1/migrations', operationId: 'startMigration', tag: 'migrations',
    summary: 'Starts moving a volume onto another volume\'s storage while its hosts keep writing.',
    body: StartBody,
    responses: {
      201: { description: 'The new migration.', schema: MigrationStatusSchema },
      400: error('Sizes differ or names are bad (TM_ERR_INVALID_ARGUMENT).'),
      ...stateErrors,
    },
    handler: async (request, migrations) => {
      const body = request.body as Static<typeof StartBody>;
      return ok(await migrations.start(body.volume, body.target, body.manualCutover ?? false), 201);
    },
  },
  {
    method: 'GET', url: '/v1/migrations', operationId: 'listMigrations', tag: 'migrations',
    summary: 'Every migration of the array, active or finished.',
    responses: { 200: { description: 'The migrations.', schema: Type.Object({ migrations: Type.Array(MigrationStatusSchema) }) } },
    handler: async (_request, migrations) => ok({ migrations: migrations.list() }),
  },
  {
    method: 'GET', url: '/v1/migrations/:volume', operationId: 'getMigration', tag: 'migrations',
    summary: 'One migration: state, tracks left, rate and ETA, tracks replayed.',
    params: VolumeParams,
    responses: { 200: { description: 'The migration.', schema: MigrationStatusSchema }, 404: stateErrors[404] },
    handler: async (request, migrations) => ok(migrations.show(param(request, 'volume'))),
  },
  step('cutover', 'Cuts over a completely copied migration started with manual cutover: the volume is served from the new storage.'),
  step('detach', 'Stops writing the old storage after the cutover; the tracks written meanwhile are recorded.'),
  step('reattach', 'Writes the old storage again, replaying exactly the tracks written while detached.'),
  step('finish', 'Drops the old storage (the target volume holding it is deleted); the volume keeps its new storage.'),
];
