// The operator's view over time (SPEC §9): the event timeline and the last hour of lag, I/O and
// link throughput, in the same table form as routes.ts. The dashboard and `tidemark events` use these.
import { Type, type Static } from '@sinclair/typebox';
import { errorResponse as error, ok, type RouteSpec } from './route-kit.js';
import { Nullable, literals } from './schemas.js';

const EVENT_KINDS = ['array', 'link', 'pair', 'group', 'clone'] as const;
/** The longest a reader may wait for the next event in one request (well under the request timeout). */
export const MAX_EVENT_WAIT_MS = 30_000;

export const EventSchema = Type.Object({
  seq: Type.Integer({ minimum: 1, description: 'Grows by one per event since the array started.' }),
  at: Type.String({ format: 'date-time' }),
  kind: literals(EVENT_KINDS),
  subject: Nullable(Type.String({ description: 'The pair, peer, group or clone session (STD/CLONE) the event is about.' })),
  message: Type.String(),
  fields: Type.Record(Type.String(), Type.Union([Type.String(), Type.Number(), Type.Boolean(), Type.Null()])),
});
export type EventView = Static<typeof EventSchema>;

const EventPageSchema = Type.Object({
  events: Type.Array(EventSchema),
  next: Type.Integer({ minimum: 0, description: 'Pass as `since` for the events that follow.' }),
  missed: Type.Integer({ minimum: 0, description: 'Events after `since` the timeline no longer holds (it keeps the last 1,000).' }),
});
export type EventPageView = Static<typeof EventPageSchema>;

const EventsQuery = Type.Object({
  since: Type.Optional(Type.Integer({ minimum: 0, description: 'Only events with a larger seq (default 0: all the timeline holds). A cursor from before the array restarted starts over.' })),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, description: 'Most events to return (default 1000).' })),
  waitMs: Type.Optional(Type.Integer({ minimum: 0, maximum: MAX_EVENT_WAIT_MS, description: 'When there is no newer event, wait up to this long for one (long poll; default 0).' })),
}, { additionalProperties: false });

const Column = Type.Array(Type.Number());
const PairSeries = Type.Object({ t: Column, lagSeconds: Column, tracksOwed: Column, bytesOwed: Column });
const VolumeSeries = Type.Object({ t: Column, readOpsPerSecond: Column, writeOpsPerSecond: Column, readBytesPerSecond: Column, writeBytesPerSecond: Column });
const PeerSeries = Type.Object({
  t: Column, sentBytesPerSecond: Column, receivedBytesPerSecond: Column,
  rttMs: Type.Array(Nullable(Type.Number()), { description: 'The link\'s round trip (a peer.ping request and its answer); null: down or not answering.' }),
});

export const HistorySchema = Type.Object({
  sampleMs: Type.Integer({ minimum: 1, description: 'Time between samples.' }),
  now: Type.Number({ description: 'The array\'s clock (epoch ms) when it answered.' }),
  pairs: Type.Record(Type.String(), PairSeries),
  volumes: Type.Record(Type.String(), VolumeSeries),
  peers: Type.Record(Type.String(), PeerSeries),
}, { description: 'Per object, columns of samples oldest first; `t` is epoch milliseconds. Lag is the worst seen in each interval.' });
export type HistoryView = Static<typeof HistorySchema>;

const HistoryQuery = Type.Object({
  sinceMs: Type.Optional(Type.Number({ minimum: 0, description: 'Only samples taken after this time (epoch ms; default: the whole hour).' })),
}, { additionalProperties: false });

/** What the API needs from the array's timeline and history. */
export interface ObserveBackend {
  events(since: number, limit: number, waitMs: number): Promise<EventPageView>;
  history(sinceMs: number): HistoryView;
}

export const OBSERVE_ROUTES: readonly RouteSpec<ObserveBackend>[] = [
  {
    method: 'GET', url: '/v1/events', operationId: 'listEvents', tag: 'operations',
    summary: 'The event timeline: link down/up, pair state changes and commands, failovers, group evictions and stalls, clone state changes (the last 1,000).',
    querystring: EventsQuery,
    responses: { 200: { description: 'The events after `since`, oldest first.', schema: EventPageSchema }, 400: error('Bad cursor, limit or wait (TM_ERR_INVALID_ARGUMENT).') },
    handler: async (request, observe) => {
      const q = request.query as Static<typeof EventsQuery>;
      return ok(await observe.events(q.since ?? 0, q.limit ?? 1000, q.waitMs ?? 0));
    },
  },
  {
    method: 'GET', url: '/v1/history', operationId: 'getHistory', tag: 'operations',
    summary: 'The last hour, sampled every few seconds: lag and owed tracks per pair, IOPS and throughput per volume, link throughput per peer.',
    querystring: HistoryQuery,
    responses: { 200: { description: 'The samples.', schema: HistorySchema }, 400: error('Bad time (TM_ERR_INVALID_ARGUMENT).') },
    handler: async (request, observe) => ok(observe.history((request.query as Static<typeof HistoryQuery>).sinceMs ?? 0)),
  },
];
