// Every operation of the HTTP API and the schemas the OpenAPI document names, in one place for
// the server and the document generator.
import type { TSchema } from '@sinclair/typebox';
import { errorResponse, scoped, type ResponseSpec, type RouteSpec } from './route-kit.js';
import { ROUTES } from './routes.js';
import type { ApiBackend } from './types.js';
import { CLONE_ROUTES, CloneStatusSchema } from './clone-routes.js';
import { NAMED_SCHEMAS } from './schemas.js';
import { PairStatusSchema, PeerSchema, REPLICATION_ROUTES } from './replication-routes.js';
import { GROUP_ROUTES, GroupViewSchema } from './group-routes.js';
import { MIGRATION_ROUTES, MigrationStatusSchema } from './migration-routes.js';
import { IMPORT_ROUTES, ImportStatusSchema } from './import-routes.js';
import { JOURNAL_ROUTES, JournalRecoverySchema, JournalSchema } from './journal-routes.js';
import { CASCADE_ROUTES, CascadeViewSchema } from './cascade-routes.js';
import { ROUTING_ROUTES } from './routing-routes.js';
import { EventSchema, HistorySchema, OBSERVE_ROUTES } from './observe-routes.js';

/** The refusals the server's access check (api-access.ts) can answer any route with, documented on each. */
function withAccessResponses<B>(route: RouteSpec<B>): RouteSpec<B> {
  const mutating = route.method !== 'GET';
  const responses: Record<number, ResponseSpec> = { ...route.responses };
  if (!route.public) responses[401] = errorResponse('No bearer token, or not this array\'s token (TM_ERR_UNAUTHORIZED).');
  responses[403] = errorResponse(mutating && !route.public
    ? 'The Host header names a host this array does not serve, or the token is read-only (TM_ERR_FORBIDDEN).'
    : 'The Host header names a host this array does not serve (TM_ERR_FORBIDDEN).');
  if (mutating) responses[415] = errorResponse('Content-Type is not application/json (TM_ERR_UNSUPPORTED_MEDIA_TYPE).');
  return { ...route, responses };
}

export const API_ROUTES: readonly RouteSpec<ApiBackend>[] = [
  ...ROUTES,
  ...scoped(CLONE_ROUTES, (backend: ApiBackend) => backend.clones),
  ...scoped(REPLICATION_ROUTES, (backend: ApiBackend) => backend.replication),
  ...scoped(GROUP_ROUTES, (backend: ApiBackend) => backend.groups),
  ...scoped(MIGRATION_ROUTES, (backend: ApiBackend) => backend.migrations),
  ...scoped(IMPORT_ROUTES, (backend: ApiBackend) => backend.imports),
  ...scoped(JOURNAL_ROUTES, (backend: ApiBackend) => backend.journals),
  ...scoped(CASCADE_ROUTES, (backend: ApiBackend) => backend.cascades),
  ...scoped(ROUTING_ROUTES, (backend: ApiBackend) => backend.routing),
  ...scoped(OBSERVE_ROUTES, (backend: ApiBackend) => backend.observe),
].map(withAccessResponses);

export const API_SCHEMAS: Readonly<Record<string, TSchema>> = { ...NAMED_SCHEMAS, CloneStatus: CloneStatusSchema, PairStatus: PairStatusSchema, Peer: PeerSchema, Group: GroupViewSchema,
  Migration: MigrationStatusSchema,
  Import: ImportStatusSchema,
  Journal: JournalSchema, JournalRecovery: JournalRecoverySchema,
  Cascade: CascadeViewSchema,
  Event: EventSchema, History: HistorySchema,
};
