// Routed commands: the decision each hop takes (core/routing/route-decision.ts), and the router
// that performs it over PeerRpc, on in-process links between arrays east — west — north.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  checkForwarded, checkRoutedPath, checkRoutedPolicy, decideRoute, HOP_MARGIN_MS, MAX_ROUTE_HOPS, parseVia, type RouteState,
} from '../../src/core/routing/route-decision.js';
import { ErrorCode, TidemarkError, isTidemarkError } from '../../src/core/errors.js';
import { inProcessLinks } from '../../src/sim/sim-links.js';
import { PeerRpc } from '../../src/app/replication/peer-rpc.js';
import { CommandRouter, type LocalRequest } from '../../src/app/routing/command-router.js';

const peersOf = (...names: string[]) => (name: string): boolean => names.includes(name);
const state = (hops: string[], trail: string[] = [], timeoutMs = 55_000): RouteState => ({ hops, trail, timeoutMs });
const refusal = (d: ReturnType<typeof decideRoute>): TidemarkError => {
  assert.equal(d.kind, 'refuse');
  return (d as { error: TidemarkError }).error;
};

test('parseVia: names in order; empty names, bad names and too many hops refused', () => {
  assert.deepEqual(parseVia('west'), ['west']);
  assert.deepEqual(parseVia('west, north'), ['west', 'north']);
  for (const bad of ['', ',', 'west,', ',west', 'we st', 'west,,north', '-x']) {
    assert.throws(() => parseVia(bad), (e: unknown) => isTidemarkError(e, ErrorCode.InvalidArgument), bad);
  }
  const nine = Array.from({ length: MAX_ROUTE_HOPS + 1 }, (_, i) => `a${i}`).join(',');
  assert.throws(() => parseVia(nine), (e: unknown) => isTidemarkError(e, ErrorCode.RouteRefused) && /at most 8 hops/.test(e.message));
});

test('decideRoute: the last hop executes, the others forward with the trail grown and less time', () => {
  assert.deepEqual(decideRoute('north', state([], ['east', 'west']), peersOf()), { kind: 'execute' });
  const d = decideRoute('east', state(['west', 'north']), peersOf('west'));
  assert.deepEqual(d, { kind: 'forward', next: 'west', state: { hops: ['north'], trail: ['east'], timeoutMs: 55_000 - HOP_MARGIN_MS } });
  const d2 = decideRoute('west', state(['north'], ['east'], 54_000), peersOf('east', 'north'));
  assert.deepEqual(d2, { kind: 'forward', next: 'north', state: { hops: [], trail: ['east', 'west'], timeoutMs: 53_000 } });
});

test('decideRoute: a next hop that is not a peer is refused naming both arrays', () => {
  const e = refusal(decideRoute('east', state(['north']), peersOf('west')));
  assert.equal(e.code, ErrorCode.RouteRefused);
  assert.match(e.message, /east has no peer named north/);
  assert.deepEqual(e.details, { at: 'east', hop: 'north' });
  // Only the next hop is checked here: the hops after it are the next array's peers, not ours.
  assert.equal(decideRoute('east', state(['west', 'south']), peersOf('west')).kind, 'forward');
});

test('decideRoute: loops are refused wherever they show, before anything is forwarded', () => {
  const loops: Array<[string, RouteState]> = [
    ['east', state(['east'])], // to itself
    ['east', state(['west', 'east'])], // back to the origin
    ['east', state(['west', 'north', 'west'])], // twice in what is left
    ['north', state(['west'], ['east', 'west'])], // back to an array the request passed
    ['west', state([], ['east', 'west'])], // a trail that already holds the executing array
  ];
  for (const [self, s] of loops) {
    const e = refusal(decideRoute(self, s, peersOf('east', 'west', 'north')));
    assert.equal(e.code, ErrorCode.RouteRefused, JSON.stringify(s));
    assert.match(e.message, /routing loop/);
  }
});

test('decideRoute: bounded hops and time', () => {
  const long = Array.from({ length: MAX_ROUTE_HOPS + 1 }, (_, i) => `a${i}`);
  assert.match(refusal(decideRoute('east', state(long), () => true)).message, /at most 8 hops/);
  assert.match(refusal(decideRoute('east', state(['west'], [], 1500), peersOf('west'))).message, /no time left/);
});

test('checkForwarded: the sender must be the last array of the trail it sends; nested routes are refused', () => {
  assert.equal(checkForwarded('west', state([], ['east', 'west'])), undefined);
  assert.match(checkForwarded('west', state([], ['east']))!.message, /names east as its sender/);
  assert.equal(checkForwarded('west', state([], ['east']))!.code, ErrorCode.Protocol);
  assert.equal(checkRoutedPath('/v1/volumes?x=1'), undefined);
  assert.equal(checkRoutedPath('/v1/via/north/v1/volumes')!.code, ErrorCode.RouteRefused);
  assert.equal(checkRoutedPath('v1/volumes')!.code, ErrorCode.InvalidArgument);
});

test('checkRoutedPolicy: allow lets everything through, read-only GETs only, refuse nothing; each refusal names the array', () => {
  for (const method of ['GET', 'POST', 'PUT', 'DELETE']) assert.equal(checkRoutedPolicy('allow', 'north', method, ['east']), undefined);
  assert.equal(checkRoutedPolicy('read-only', 'north', 'GET', ['east']), undefined);
  const post = checkRoutedPolicy('read-only', 'north', 'POST', ['east'])!;
  assert.equal(post.code, ErrorCode.Forbidden);
  assert.match(post.message, /north accepts only reading routed commands \(GET\), not POST/);
  assert.match(checkRoutedPolicy('refuse', 'north', 'GET', ['east'])!.message, /north refuses routed commands/);
});

// ---- the router over in-process links ----

const SECRET = new Uint8Array(16);

function network(links: Array<[string, string]>, names: string[]) {
  const hub = inProcessLinks();
  const executed: Array<{ array: string; request: LocalRequest }> = [];
  const routers = new Map<string, CommandRouter>();
  const rpcs = new Map<string, PeerRpc>();
  for (const name of names) {
    const endpoint = hub.endpoint(name);
    const peers = links.filter((l) => l.includes(name)).map((l) => (l[0] === name ? l[1] : l[0]));
    for (const peer of peers) endpoint.addPeer({ name: peer, address: '-', secret: SECRET });
    const rpc = new PeerRpc(endpoint, () => undefined, undefined, `${name}-rpc`);
    rpcs.set(name, rpc);
    routers.set(name, new CommandRouter({
      selfName: name, rpc, isPeer: (n) => peers.includes(n),
      execute: async (request) => {
        executed.push({ array: name, request });
        const body = new TextEncoder().encode(JSON.stringify({ at: name, path: request.path, got: request.body ? new TextDecoder().decode(request.body) : null }));
        return { status: request.path === '/missing' ? 404 : 200, contentType: 'application/json', body };
      },
      log: () => undefined,
    }));
  }
  return { routers, rpcs, executed };
}

test('CommandRouter: two hops there and back, the body both ways, the far status kept, nothing run on the way', async () => {
  const { routers, executed } = network([['east', 'west'], ['west', 'north']], ['east', 'west', 'north']);
  const body = new TextEncoder().encode('{"name":"v"}');
  const answer = await routers.get('east')!.route(['west', 'north'], { method: 'POST', path: '/v1/volumes?x=1', body });
  assert.equal(answer.status, 200);
  assert.equal(answer.answeredBy, 'north');
  assert.deepEqual(answer.trail, ['east', 'west', 'north']);
  assert.deepEqual(JSON.parse(new TextDecoder().decode(answer.body)), { at: 'north', path: '/v1/volumes?x=1', got: '{"name":"v"}' });
  assert.deepEqual(executed.map((e) => e.array), ['north']);
  const missing = await routers.get('east')!.route(['west', 'north'], { method: 'GET', path: '/missing', body: undefined });
  assert.equal(missing.status, 404, 'an answer with an error status is an answer, not a routing failure');
});

test('CommandRouter: refusals from a far hop come back with their code; a forged trail is refused', async () => {
  const { routers, rpcs, executed } = network([['east', 'west'], ['west', 'north']], ['east', 'west', 'north']);
  await assert.rejects(routers.get('east')!.route(['west', 'south'], { method: 'GET', path: '/v1/volumes', body: undefined }),
    (e: unknown) => isTidemarkError(e, ErrorCode.RouteRefused) && /west: west has no peer named south/.test(e.message));
  await assert.rejects(routers.get('east')!.route(['west', 'east'], { method: 'GET', path: '/v1/volumes', body: undefined }),
    (e: unknown) => isTidemarkError(e, ErrorCode.RouteRefused) && /routing loop/.test(e.message));
  // West claims the request comes from north through it: north would believe a route that never was.
  await assert.rejects(rpcs.get('west')!.request('north', { op: 'route.request', method: 'GET', path: '/v1/volumes', hops: [], trail: ['east'], timeoutMs: 10_000 }),
    (e: unknown) => isTidemarkError(e, ErrorCode.Protocol) && /names east as its sender/.test(e.message));
  assert.deepEqual(executed, [], 'nothing ran anywhere');
});
