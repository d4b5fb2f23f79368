// Routed requests in the HTTP API: `/v1/via/B,C/<any API path>` runs that request on array C,
// reached from this array through its peer B and B's peer C over the replication links
// (docs/design/routing-and-relay.md). One route per method covers every route there is and every
// route to come: the far array runs the inner request through its own API.
import { Type } from '@sinclair/typebox';
import { ErrorCode, TidemarkError } from '../../core/errors.js';
import { parseVia, VIA_PREFIX } from '../../core/routing/route-decision.js';
import { errorResponse as error, type RouteRequest, type RouteSpec } from './route-kit.js';

export type RoutedMethod = 'GET' | 'POST' | 'PUT' | 'DELETE';

export interface RoutedAnswer {
  readonly status: number;
  readonly contentType: string;
  readonly body: Uint8Array;
  /** The array that ran the request (the route's last hop). */
  readonly answeredBy: string;
  /** Every array the request went through, this one first and `answeredBy` last. */
  readonly trail: readonly string[];
}

export interface RoutingBackend {
  route(hops: readonly string[], request: { method: RoutedMethod; path: string; body: Uint8Array | undefined }): Promise<RoutedAnswer>;
}

/** Response headers of a routed answer. */
export const ANSWERED_BY_HEADER = 'tidemark-answered-by';
export const ROUTE_HEADER = 'tidemark-route';

const Params = Type.Object({
  hops: Type.String({ minLength: 1, maxLength: 600, description: 'Peer names, comma-separated, hop by hop: `B` or `B,C` (at most 8).' }),
  '*': Type.String({ description: 'The request to run on the last hop: any path of this API after its leading slash, e.g. `v1/volumes`, with its query string.' }),
});

const METHODS: readonly RoutedMethod[] = ['GET', 'POST', 'PUT', 'DELETE'];

/** The inner request: everything after `/v1/via/HOPS`, query string included. */
function innerPath(request: RouteRequest): string {
  const url = request.url ?? '';
  const afterPrefix = url.slice(VIA_PREFIX.length);
  const slash = afterPrefix.indexOf('/');
  if (!url.startsWith(VIA_PREFIX) || slash < 0) throw new TidemarkError(ErrorCode.InvalidArgument, 'a routed request is /v1/via/HOPS/PATH');
  return afterPrefix.slice(slash);
}

export const ROUTING_ROUTES: readonly RouteSpec<RoutingBackend>[] = METHODS.map((method): RouteSpec<RoutingBackend> => ({
  method,
  url: '/v1/via/:hops/*',
  operationId: `routed${method[0]}${method.slice(1).toLowerCase()}`,
  tag: 'routing',
  summary: `Runs \`${method} /PATH\` on another array, through this array's peer HOPS[0], its peer HOPS[1], … over the ` +
    'authenticated replication links; the last hop answers exactly as it would directly (same status and body). ' +
    `The answer names the array that ran it (header \`${ANSWERED_BY_HEADER}\`) and the way it went (\`${ROUTE_HEADER}\`: A,B,C). ` +
    'This array checks the token: whoever may run the request here may run it on the arrays its peers lead to.',
  params: Params,
  ...(method === 'GET' ? {} : { body: Type.Unknown({ description: 'The inner request\'s JSON body, passed on unchanged.' }) }),
  responses: {
    200: { description: 'The far array\'s answer: any status and body its route gives (errors included, with their TM_ERR_* codes).', contentType: 'application/json' },
    400: error('A bad route: not peer names, too many hops, a loop, or a hop that is not a peer of the array before it (TM_ERR_ROUTE_REFUSED, TM_ERR_INVALID_ARGUMENT).'),
    503: error('A link on the route is down, or a hop did not answer in time (TM_ERR_LINK_DOWN).'),
  },
  handler: async (request, routing) => {
    const hops = parseVia((request.params as { hops: string }).hops);
    const body = request.body === undefined ? undefined : new TextEncoder().encode(JSON.stringify(request.body));
    const answer = await routing.route(hops, { method, path: innerPath(request), body });
    return {
      status: answer.status,
      body: Buffer.from(answer.body.buffer, answer.body.byteOffset, answer.body.byteLength),
      ...(answer.contentType !== '' ? { contentType: answer.contentType } : {}),
      headers: { [ANSWERED_BY_HEADER]: answer.answeredBy, [ROUTE_HEADER]: answer.trail.join(',') },
    };
  },
}));
