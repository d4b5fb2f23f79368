// Routed commands: API requests for another array, carried hop by hop over the replication links
// as `route.request` peer operations (docs/design/routing-and-relay.md). The decision at each hop
// (run here, pass on, refuse) is core/routing/route-decision.ts; this module performs it: it
// forwards over PeerRpc, or runs the request through this array's own HTTP API in-process, so a
// routed command is validated, executed and answered exactly like a direct one.
//
// A routed request is only ever accepted from a peer over its authenticated link (PeerRpc serves
// nothing else); the API's routes for it (`/v1/via/…`) sit behind the API's token check.
import { ErrorCode, TidemarkError } from '../../core/errors.js';
import type { Segment } from '../../core/replication/peer-messages.js';
import type { RequestOf } from '../../core/replication/peer-protocol.js';
import {
  checkForwarded, checkRoutedPath, checkRoutedPolicy, decideRoute, type RoutedCommandPolicy, type RouteState,
} from '../../core/routing/route-decision.js';
import type { RoutedAnswer, RoutedMethod, RoutingBackend } from '../../adapters/http/routing-routes.js';
import type { PeerRpc } from '../replication/peer-rpc.js';

/** The origin's time budget: under the API's and the CLI's 60 s request timeouts, so the route's own error arrives first. */
export const ROUTE_TIMEOUT_MS = 55_000;
/**
 * The most an answer may carry back: the link's message limit is 4 MiB and the answer shares it
 * with its header. The API's answers are lists and views, far below.
 */
export const MAX_ROUTED_BODY_BYTES = 3 * 1024 * 1024;

export interface LocalRequest {
  readonly method: RoutedMethod;
  readonly path: string;
  readonly body: Uint8Array | undefined;
}

export interface LocalAnswer {
  readonly status: number;
  readonly contentType: string;
  readonly body: Uint8Array;
}

export interface CommandRouterDeps {
  readonly selfName: string;
  readonly rpc: PeerRpc;
  /** A configured peer of this array (its link may be down). */
  isPeer(name: string): boolean;
  /** What routed commands may do here (default: what this array's admin token may). */
  readonly policy?: RoutedCommandPolicy;
  /** Runs a request against this array's own API (bound once the API server is up). */
  execute(request: LocalRequest): Promise<LocalAnswer>;
  log(level: 'info' | 'warn', message: string, fields: Record<string, unknown>): void;
}

export class CommandRouter implements RoutingBackend {
  constructor(private readonly deps: CommandRouterDeps) {
    deps.rpc.handle('route.request', async (peer, request, segments) => {
      const answer = await this.fromPeer(peer, request, segments);
      return {
        header: { status: answer.status, contentType: answer.contentType, answeredBy: answer.answeredBy, trail: [...answer.trail] },
        segments: answer.body.length > 0 ? [{ kind: 'data', offset: 0, data: answer.body }] : [],
      };
    });
  }

  /** A request given to this array's API for the arrays `hops` lead to. */
  route(hops: readonly string[], request: LocalRequest): Promise<RoutedAnswer> {
    return this.step({ hops, trail: [], timeoutMs: ROUTE_TIMEOUT_MS }, request);
  }

  private async fromPeer(peer: string, request: RequestOf<'route.request'>, segments: readonly Segment[]): Promise<RoutedAnswer> {
    const state: RouteState = { hops: request.hops, trail: request.trail, timeoutMs: request.timeoutMs };
    const forged = checkForwarded(peer, state);
    if (forged) throw forged;
    if (segments.length > 1 || (segments[0] !== undefined && (segments[0].kind !== 'data' || segments[0].offset !== 0))) {
      throw new TidemarkError(ErrorCode.Protocol, 'a routed request carries its body in at most one data segment at offset 0', { peer });
    }
    const body = segments[0]?.kind === 'data' ? segments[0].data : undefined;
    return this.step(state, { method: request.method, path: request.path, body });
  }

  private async step(state: RouteState, request: LocalRequest): Promise<RoutedAnswer> {
    const { selfName } = this.deps;
    const badPath = checkRoutedPath(request.path);
    if (badPath) throw badPath;
    const decision = decideRoute(selfName, state, (name) => this.deps.isPeer(name));
    switch (decision.kind) {
      case 'refuse':
        this.deps.log('warn', 'routed request refused', { trail: state.trail, hops: state.hops, method: request.method, path: pathOnly(request.path), code: decision.error.code });
        throw decision.error;
      case 'execute': {
        const refused = checkRoutedPolicy(this.deps.policy ?? 'allow', selfName, request.method, state.trail);
        if (refused) {
          this.deps.log('warn', 'routed request refused', { trail: state.trail, method: request.method, path: pathOnly(request.path), code: refused.code });
          throw refused;
        }
        const answer = await this.deps.execute(request);
        // The origin's operator acted here through their own array: the audit trail names the way.
        this.deps.log('info', 'routed request executed', { trail: state.trail, method: request.method, path: pathOnly(request.path), status: answer.status });
        if (answer.body.length > MAX_ROUTED_BODY_BYTES) {
          throw new TidemarkError(ErrorCode.LimitExceeded, `the answer of ${answer.body.length} bytes is too large to route (at most ${MAX_ROUTED_BODY_BYTES})`);
        }
        return { ...answer, answeredBy: selfName, trail: [...state.trail, selfName] };
      }
      case 'forward': {
        const { next, state: onward } = decision;
        const header: RequestOf<'route.request'> = {
          op: 'route.request', method: request.method, path: request.path, hops: [...onward.hops], trail: [...onward.trail], timeoutMs: onward.timeoutMs,
        };
        const segments: Segment[] = request.body !== undefined && request.body.length > 0 ? [{ kind: 'data', offset: 0, data: request.body }] : [];
        const reply = await this.deps.rpc.request(next, header, segments, onward.timeoutMs);
        const data = reply.segments[0];
        const body = data?.kind === 'data' ? data.data : new Uint8Array(0);
        const trail = [...reply.header.trail];
        // The answer must come from the route's end, back along the way it went.
        const expected = [...onward.trail, next, ...onward.hops];
        if (trail.join(',') !== expected.join(',') || reply.header.answeredBy !== trail[trail.length - 1]) {
          throw new TidemarkError(ErrorCode.Protocol, `${next} answered a routed request with route ${trail.join(',')}, expected ${expected.join(',')}`, { peer: next });
        }
        return { status: reply.header.status, contentType: reply.header.contentType, body, answeredBy: reply.header.answeredBy, trail };
      }
    }
  }
}

/** Logs name the route, never a query string's values. */
const pathOnly = (path: string): string => path.split('?')[0]!.slice(0, 200);
