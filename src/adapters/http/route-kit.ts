// The form every part of the HTTP API's route table takes, and the helpers its handlers share.
// It depends on no route module and no backend, so the feature tables (routes.ts, clone-routes.ts,
// replication-routes.ts, group-routes.ts) import it and nothing imports them back but all-routes.ts.
import type { TSchema } from '@sinclair/typebox';
import { ErrorSchema } from './schemas.js';

export interface ResponseSpec {
  readonly description: string;
  /** JSON body schema; absent for non-JSON bodies. */
  readonly schema?: TSchema;
  readonly contentType?: string;
}

export interface RouteRequest {
  readonly params: unknown;
  readonly query: unknown;
  readonly body: unknown;
  /** The request's method and URL as received (path and query string), for routes that pass a request on. */
  readonly method?: string;
  readonly url?: string;
}

export interface RouteReply {
  readonly status: number;
  readonly body: unknown;
  readonly contentType?: string;
  /** Extra response headers (a routed answer says which array answered). */
  readonly headers?: Readonly<Record<string, string>>;
}

/** One operation; `B` is the part of the array its handler needs (see `scoped`). */
export interface RouteSpec<B> {
  readonly method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  /** Fastify syntax: `/v1/volumes/:name`. */
  readonly url: string;
  readonly operationId: string;
  readonly summary: string;
  readonly tag: string;
  /**
   * Served without a token (only `/metrics`, which Prometheus scrapes). Every other route needs the
   * bearer token: the server checks it before routing, so a new route is protected by default.
   */
  readonly public?: true;
  readonly params?: TSchema;
  readonly querystring?: TSchema;
  readonly body?: TSchema;
  readonly responses: Readonly<Record<number, ResponseSpec>>;
  readonly handler: (request: RouteRequest, backend: B) => Promise<RouteReply>;
}

/**
 * A documented error response: every error has ErrorSchema's shape. The status it is listed under
 * must be what `httpStatusOf` gives the codes the description names (a test checks it): the
 * server maps errors with that one function, never per route.
 */
export const errorResponse = (description: string): ResponseSpec => ({ description, schema: ErrorSchema });

/** Longest a long-polling GET may hold its answer: a client that wants to wait longer asks again. */
export const MAX_LONG_POLL_MS = 30_000;

export const ok = (body: unknown, status = 200): RouteReply => ({ status, body });

/** A path parameter (validated by the route's params schema before the handler runs). */
export const param = (request: RouteRequest, key: string): string => (request.params as Record<string, string>)[key]!;

/** Routes written against one part of the backend, as routes of the whole. */
export function scoped<B, P>(routes: readonly RouteSpec<P>[], part: (backend: B) => P): RouteSpec<B>[] {
  return routes.map((route) => ({ ...route, handler: (request, backend) => route.handler(request, part(backend)) }));
}
