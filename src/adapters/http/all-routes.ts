// Every operation of the HTTP API and the schemas the OpenAPI document names, in one place for
// the server and the document generator.
import type { TSchema } from '@sinclair/typebox';
import { scoped, type RouteSpec } from './route-kit.js';
import { ROUTES } from './routes.js';
import type { ApiBackend } from './types.js';
import { CLONE_ROUTES, CloneStatusSchema } from './clone-routes.js';
import { NAMED_SCHEMAS } from './schemas.js';
import { PairStatusSchema, PeerSchema, REPLICATION_ROUTES } from './replication-routes.js';
import { GROUP_ROUTES, GroupViewSchema } from './group-routes.js';

export const API_ROUTES: readonly RouteSpec<ApiBackend>[] = [
  ...ROUTES,
  ...scoped(CLONE_ROUTES, (backend: ApiBackend) => backend.clones),
  ...scoped(REPLICATION_ROUTES, (backend: ApiBackend) => backend.replication),
  ...scoped(GROUP_ROUTES, (backend: ApiBackend) => backend.groups),
];

export const API_SCHEMAS: Readonly<Record<string, TSchema>> = { ...NAMED_SCHEMAS, CloneStatus: CloneStatusSchema, PairStatus: PairStatusSchema, Peer: PeerSchema, Group: GroupViewSchema,
};
