// Routed commands (SPEC §7): a request an operator gives at one array for another array, carried
// hop by hop over the replication links. This module decides, for the array a routed request has
// reached, what to do with it — execute it here, forward it to the next hop, or refuse it — so the
// daemon and the simulator share one rule set, and every refusal has one wording.
//
// Names in a route are peer names as each hop knows them; the link handshake proves a peer's name
// is the array's own name, so the last hop of a route is the array that answers.
import { ErrorCode, TidemarkError } from '../errors.js';
import { isValidArrayName } from '../link/handshake.js';

/**
 * Hops a route may list. Every hop holds a request open on its link and adds a round trip; beyond
 * a handful the route is a mistake (or a loop that slipped past the checks), not a topology.
 */
export const MAX_ROUTE_HOPS = 8;

/** The time a hop keeps for itself when it forwards: the next hop must answer before this hop times out. */
export const HOP_MARGIN_MS = 1000;
/** Below this, a request would time out on the next hop before it could answer: refused at once. */
export const MIN_HOP_TIMEOUT_MS = 1000;

/** URL prefix of the HTTP API's routed requests: `/v1/via/B,C/v1/volumes`. */
export const VIA_PREFIX = '/v1/via/';

export interface RouteState {
  /** Arrays still to go through, the next one first; empty: this array answers. */
  readonly hops: readonly string[];
  /** Arrays the request passed so far, the origin first and the sender last (empty at the origin). */
  readonly trail: readonly string[];
  /** What is left of the origin's time budget. */
  readonly timeoutMs: number;
}

export type RouteDecision =
  | { readonly kind: 'execute' }
  | { readonly kind: 'forward'; readonly next: string; readonly state: RouteState }
  | { readonly kind: 'refuse'; readonly error: TidemarkError };

const refused = (message: string, details: Record<string, unknown>): RouteDecision =>
  ({ kind: 'refuse', error: new TidemarkError(ErrorCode.RouteRefused, message, details) });

/** Parses `B,C` (the CLI's --via, the API's path segment): names, in order, checked. */
export function parseVia(text: string): string[] {
  const hops = text.split(',').map((h) => h.trim());
  if (text.trim() === '' || hops.some((h) => h === '')) {
    throw new TidemarkError(ErrorCode.InvalidArgument, `--via ${JSON.stringify(text)}: give peer names separated by commas, e.g. B or B,C`);
  }
  for (const hop of hops) {
    if (!isValidArrayName(hop)) throw new TidemarkError(ErrorCode.InvalidArgument, `--via: ${JSON.stringify(hop.slice(0, 80))} is not an array name`);
  }
  if (hops.length > MAX_ROUTE_HOPS) {
    throw new TidemarkError(ErrorCode.RouteRefused, `a route may have at most ${MAX_ROUTE_HOPS} hops (got ${hops.length})`, { hops: hops.length });
  }
  return hops;
}

/**
 * What `self` does with a routed request in `state`. `isPeer(name)` says whether `self` has a
 * configured peer of that name (its link may still be down: the forward then fails with
 * TM_ERR_LINK_DOWN, which says more than a refusal would).
 */
export function decideRoute(self: string, state: RouteState, isPeer: (name: string) => boolean): RouteDecision {
  const { hops, trail } = state;
  // The sum is the route's length at every hop: the trail grows by one as the hops shrink by one.
  if (hops.length + trail.length > MAX_ROUTE_HOPS) {
    return refused(`a route may have at most ${MAX_ROUTE_HOPS} hops`, { at: self, hops: [...hops], trail: [...trail] });
  }
  // A loop is refused wherever it shows, before anything runs: an array that saw the request
  // already, or that appears twice in what is left, would execute it or pass it on twice.
  if (trail.includes(self) || new Set(trail).size !== trail.length) {
    return refused(`routing loop: the request came back to ${self} (route ${[...trail, self].join(' → ')})`,
      { at: self, trail: [...trail], hops: [...hops] });
  }
  const seen = new Set([...trail, self]);
  for (const hop of hops) {
    if (seen.has(hop)) {
      return refused(`routing loop: ${hop} appears twice in the route ${[...trail, self, ...hops].join(' → ')}`,
        { at: self, hop, trail: [...trail], hops: [...hops] });
    }
    seen.add(hop);
  }
  const next = hops[0];
  if (next === undefined) return { kind: 'execute' };
  if (!isPeer(next)) {
    return refused(`${self} has no peer named ${next}: a route goes from peer to peer (see \`tidemark${trail.length > 0 ? ` --via ${[...trail.slice(1), self].join(',')}` : ''} peer list\`)`,
      { at: self, hop: next });
  }
  const timeoutMs = state.timeoutMs - HOP_MARGIN_MS;
  if (timeoutMs < MIN_HOP_TIMEOUT_MS) {
    return refused(`no time left to forward to ${next}: the route is too long for its time budget`, { at: self, hop: next });
  }
  return { kind: 'forward', next, state: { hops: hops.slice(1), trail: [...trail, self], timeoutMs } };
}

/**
 * Checks a request a peer forwarded: the sender must be the last array of the trail it reports
 * (the link authenticated the sender, so the route cannot claim to come from elsewhere through it).
 */
export function checkForwarded(sender: string, state: RouteState): TidemarkError | undefined {
  const last = state.trail[state.trail.length - 1];
  if (last !== sender) {
    return new TidemarkError(ErrorCode.Protocol, `routed request from ${sender} names ${last ?? 'nobody'} as its sender`, { peer: sender });
  }
  return undefined;
}

/**
 * The API path a routed request may run: any route of the array's own API except another routed
 * one (nested routes would get a fresh trail and escape the loop and hop checks).
 */
export function checkRoutedPath(path: string): TidemarkError | undefined {
  if (!path.startsWith('/')) return new TidemarkError(ErrorCode.InvalidArgument, `routed path ${JSON.stringify(path.slice(0, 100))} must start with /`);
  if (path.startsWith(VIA_PREFIX) || path.startsWith(VIA_PREFIX.slice(0, -1) + '?')) {
    return new TidemarkError(ErrorCode.RouteRefused, 'a routed request cannot itself be routed: list every hop in one route (B,C)');
  }
  return undefined;
}

/**
 * What an array lets routed commands do when it is the one to run them (`array start
 * --routed-commands`): everything its own admin token could (the default: peers trust each other),
 * reading only, or nothing. Passing requests on to its peers is not affected.
 */
export const ROUTED_COMMAND_POLICIES = ['allow', 'read-only', 'refuse'] as const;
export type RoutedCommandPolicy = (typeof ROUTED_COMMAND_POLICIES)[number];

export function checkRoutedPolicy(policy: RoutedCommandPolicy, self: string, method: string, trail: readonly string[]): TidemarkError | undefined {
  if (policy === 'allow' || (policy === 'read-only' && method === 'GET')) return undefined;
  const what = policy === 'refuse' ? 'refuses routed commands' : `accepts only reading routed commands (GET), not ${method}`;
  return new TidemarkError(ErrorCode.Forbidden, `${self} ${what} (array start --routed-commands ${policy}); run the command on ${self} directly`,
    { at: self, trail: [...trail] });
}
