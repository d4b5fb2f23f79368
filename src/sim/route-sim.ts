// Routed commands in simulated time: 3–6 arrays with a random peer graph, each running the
// product's CommandRouter over PeerRpc on simulated links, while links are cut and healed. Routes
// are random: valid ones, loops, hops that are not peers. An oracle outside the system checks
// every outcome against the route and the graph:
// - an answer comes only for a valid route, from its last hop, with the trail the route names and
//   the request's own body, and that hop ran the request exactly once;
// - a loop is always refused (TM_ERR_ROUTE_REFUSED); a hop that is not a peer is refused, unless a
//   link before it was cut while the request travelled (TM_ERR_LINK_DOWN); neither ever runs
//   anything anywhere; a valid route fails only with TM_ERR_LINK_DOWN, and only when one of its
//   links was cut while the request travelled;
// - no request runs twice, or anywhere but at its last hop (a request whose answer was lost to a
//   cut may still run once, later: "not known executed", as for any request over a link);
// - after every link heals, every valid route is answered (liveness).
import { ErrorCode, isTidemarkError } from '../core/errors.js';
import { Prng } from '../core/lib/prng.js';
import { PeerRpc } from '../app/replication/peer-rpc.js';
import { CommandRouter } from '../app/routing/command-router.js';
import type { Timers } from '../ports/timers.js';
import { Scheduler } from './scheduler.js';
import { SimLinks } from './sim-links.js';

export interface RouteSeedResult {
  readonly seed: number;
  readonly ok: boolean;
  readonly failure?: string;
  readonly arrays: number;
  readonly routes: number;
  readonly answered: number;
  readonly refused: number;
  readonly linkDown: number;
  /** Requests that ran after their origin had given up on them (their answer was lost to a cut). */
  readonly ranLate: number;
  readonly cuts: number;
}

type Shape = { kind: 'valid' } | { kind: 'loop' } | { kind: 'not-peer'; at: number };

const SAFETY_MS = 6000;
const enc = new TextEncoder();
const dec = new TextDecoder();

function timersOf(scheduler: Scheduler): Timers {
  return {
    after(ms, fire) {
      let cancelled = false;
      scheduler.at(ms, () => { if (!cancelled) fire(); });
      return () => { cancelled = true; };
    },
    every(ms, fire) {
      let cancelled = false;
      const tick = (): void => {
        if (cancelled) return;
        fire();
        scheduler.at(ms, tick);
      };
      scheduler.at(ms, tick);
      return () => { cancelled = true; };
    },
  };
}

export async function runRouteSeed(seed: number): Promise<RouteSeedResult> {
  const prng = new Prng(seed);
  const scheduler = new Scheduler();
  const links = new SimLinks(scheduler, prng.fork(), 5);
  const names = Array.from({ length: prng.int(3, 6) }, (_, i) => `a${i}`);
  const peers = new Map(names.map((n) => [n, new Set<string>()]));
  const edges: Array<[string, string]> = [];
  // A chain, so long valid routes exist, and random extra edges.
  for (let i = 0; i + 1 < names.length; i++) edges.push([names[i]!, names[i + 1]!]);
  for (let i = 0; i < names.length; i++) {
    for (let j = i + 2; j < names.length; j++) if (prng.chance(0.3)) edges.push([names[i]!, names[j]!]);
  }
  for (const [a, b] of edges) {
    peers.get(a)!.add(b);
    peers.get(b)!.add(a);
  }
  /** Request id → where it ran. */
  const ran = new Map<number, string[]>();
  const routers = new Map<string, CommandRouter>();
  const problems: string[] = [];
  const timers = timersOf(scheduler);
  for (const name of names) {
    const endpoint = links.endpoint(name);
    const rpc = new PeerRpc(endpoint, () => undefined, timers, `${name}-sim`);
    routers.set(name, new CommandRouter({
      selfName: name, rpc, isPeer: (n) => peers.get(name)!.has(n),
      execute: async (request) => {
        const id = Number(request.path.slice('/r/'.length));
        ran.set(id, [...(ran.get(id) ?? []), name]);
        // Work takes time: cuts may happen while a request runs.
        await scheduler.sleep(prng.int(0, 20));
        return { status: 200, contentType: 'application/json', body: request.body ?? new Uint8Array(0) };
      },
      log: () => undefined,
    }));
    for (const p of peers.get(name)!) endpoint.addPeer({ name: p, address: '-', secret: new Uint8Array(16) });
  }

  const shapeOf = (origin: string, hops: readonly string[]): Shape => {
    if (new Set([origin, ...hops]).size !== hops.length + 1) return { kind: 'loop' };
    let at = origin;
    for (const [k, hop] of hops.entries()) {
      if (!peers.get(at)!.has(hop)) return { kind: 'not-peer', at: k };
      at = hop;
    }
    return { kind: 'valid' };
  };

  /** Every cut: the edge, and the virtual times it was cut and healed. */
  const cutLog: Array<{ a: string; b: string; from: number; to: number }> = [];
  const cutDuring = (path: readonly string[], from: number, to: number): boolean => cutLog.some((c) => c.from <= to && c.to >= from &&
    path.some((x, i) => i + 1 < path.length && ((x === c.a && path[i + 1] === c.b) || (x === c.b && path[i + 1] === c.a))));

  let nextId = 1;
  const counts = { routes: 0, answered: 0, refused: 0, linkDown: 0, cuts: 0 };
  const gaveUp = new Set<number>();
  const pending: Promise<void>[] = [];
  const issue = (origin: string, hops: string[], mustAnswer: boolean): void => {
    const id = nextId++;
    const shape = shapeOf(origin, hops);
    const route = `${[origin, ...hops].join('→')} (request ${id}, ${shape.kind})`;
    counts.routes++;
    const body = enc.encode(JSON.stringify({ id }));
    const startedMs = scheduler.nowMs;
    // The links the request must cross before it can be answered or refused.
    const crossed = [origin, ...hops].slice(0, shape.kind === 'not-peer' ? shape.at + 1 : hops.length + 1);
    pending.push(routers.get(origin)!.route(hops, { method: 'POST', path: `/r/${id}`, body }).then((answer) => {
      counts.answered++;
      const last = hops[hops.length - 1]!;
      if (shape.kind !== 'valid') problems.push(`${route}: answered although ${shape.kind}`);
      if (answer.answeredBy !== last || answer.trail.join(',') !== [origin, ...hops].join(',')) {
        problems.push(`${route}: answered by ${answer.answeredBy} via ${answer.trail.join(',')}`);
      }
      if (dec.decode(answer.body) !== JSON.stringify({ id })) problems.push(`${route}: answer carries another body`);
      const where = ran.get(id) ?? [];
      if (where.length !== 1 || where[0] !== last) problems.push(`${route}: answered, but ran at [${where.join(',')}]`);
    }, (error: unknown) => {
      gaveUp.add(id);
      if (isTidemarkError(error, ErrorCode.RouteRefused)) {
        counts.refused++;
        if (shape.kind === 'valid') problems.push(`${route}: refused: ${error.message}`);
      } else if (isTidemarkError(error, ErrorCode.LinkDown)) {
        counts.linkDown++;
        if (shape.kind === 'loop') problems.push(`${route}: a loop must be refused before any link is used: ${error.message}`);
        else if (!cutDuring(crossed, startedMs, scheduler.nowMs)) problems.push(`${route}: link down, but no link on its way was cut: ${error.message}`);
      } else {
        problems.push(`${route}: unexpected ${String(error)}`);
      }
      if (mustAnswer) problems.push(`${route}: not answered after every link healed: ${String(error)}`);
    }));
  };

  const randomHops = (origin: string): string[] => {
    const hops: string[] = [];
    let at = origin;
    for (let k = prng.int(1, 4); k > 0; k--) {
      // Mostly a neighbour (valid routes), sometimes any array (loops, non-peers).
      const next = prng.chance(0.8) ? prng.pick([...peers.get(at)!]) : prng.pick(names);
      hops.push(next);
      at = next;
    }
    return hops;
  };

  const issued: Array<[string, string[]]> = [];
  for (let i = 0; i < 25; i++) {
    const origin = prng.pick(names);
    const hops = randomHops(origin);
    issued.push([origin, hops]);
    scheduler.at(prng.int(0, SAFETY_MS - 1000), () => issue(origin, hops, false));
  }
  for (let i = 0; i < 6; i++) {
    const [a, b] = prng.pick(edges);
    const at = prng.int(0, SAFETY_MS - 1000);
    const healAt = at + prng.int(10, 1500);
    scheduler.at(at, () => {
      counts.cuts++;
      cutLog.push({ a, b, from: at, to: healAt });
      links.partition(a, b);
    });
    scheduler.at(healAt, () => links.heal(a, b));
  }
  scheduler.at(SAFETY_MS, () => { for (const [a, b] of edges) links.heal(a, b); });
  // Liveness: with every link healed, every valid route is answered.
  scheduler.at(SAFETY_MS + 100, () => {
    for (const [origin, hops] of issued) if (shapeOf(origin, hops).kind === 'valid') issue(origin, hops, true);
  });
  await scheduler.run(() => false, 2_000_000);
  await Promise.all(pending);

  let ranLate = 0;
  for (const [id, where] of ran) {
    if (where.length > 1) problems.push(`request ${id} ran ${where.length} times (${where.join(',')})`);
    if (gaveUp.has(id)) ranLate++;
  }
  const failure = problems.length > 0 ? `seed ${seed}: ${problems.slice(0, 5).join('; ')}` : undefined;
  return { seed, ok: failure === undefined, ...(failure ? { failure } : {}), arrays: names.length, ...counts, ranLate };
}
