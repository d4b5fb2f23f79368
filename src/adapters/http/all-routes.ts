// Every operation of the HTTP API and the schemas the OpenAPI document names, in one place for
// the server and the document generator.
import type { TSchema } from '@sinclair/typebox';
import { ROUTES, type RouteSpec } from './routes.js';
import { CLONE_ROUTES, CloneStatusSchema } from './clone-routes.js';
import { NAMED_SCHEMAS } from './schemas.js';
import { PairStatusSchema, PeerSchema, REPLICATION_ROUTES } from './replication-routes.js';
import { GROUP_ROUTES, GroupViewSchema } from './group-routes.js';

export const API_ROUTES: readonly RouteSpec[] = [...ROUTES, ...CLONE_ROUTES, ...REPLICATION_ROUTES, ...GROUP_ROUTES];

export const API_SCHEMAS: Readonly<Record<string, TSchema>> = { ...NAMED_SCHEMAS, CloneStatus: CloneStatusSchema, PairStatus: PairStatusSchema, Peer: PeerSchema, Group: GroupViewSchema,
};
